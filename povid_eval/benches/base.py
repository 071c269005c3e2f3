"""The Bench protocol: what a benchmark folder (benches/<name>/) provides, and the small types it shares.

A bench is one object (``BENCH`` in its folder's ``__init__``) registered in benches/registry.py. The pipeline
asks it, and nothing else, for everything bench-specific:

    items(card)                   the prompts, in protocol order (Item: key, image, prompt, LLaVA-layout ids)
    limit(items, n)               the first n (MME: n image pairs, kept whole)
    score(card, samples, ...)     the reference scorer on (line, sample) pairs: {bench, variant, n, metrics}
                                  plus ``units`` = (unit matrix, from_sums) with ``with_units``: every metric
                                  is a function of summed per-unit rows, which makes the bootstrap, the paired
                                  bootstrap and Holm generic (core/stats.py)
    correctness(card, samples)    per-question right/wrong of yes/no benches, for McNemar rows ({} otherwise)
    data_checks(card)             `povid-eval doctor`'s checks of the data files; image_fix(card): how to get
                                  the images
    add_score_arguments(parser),  `povid-eval score <name>`: the release formats people already have
    score_files(args)
    metrics, columns, panels      headline metrics (Metric: direction, column title, panel) in compare's
                                  order; the leaderboard's columns and the metric bars' panels (keys, in order)
    plots(models, data, out_dir, frontier_model, frontier)   the bench's own figures for `compare`
    tradeoff                      the metric traded against output length (CHAIR_i vs recall): what
                                  `povid-eval frontier` traces and `compare` matches; None for most benches
    reliance(card, clean, noised) per item, how much the answer moves when the image is noised (default: the
    noise_sources(...)            answer changes); the bench's errors split by whether they survive the noise
    Options, option_rules         the bench's own card keys (typed), e.g. CHAIR's image list, MMHal's judge
    run_options                   its own `povid-eval run` flags (RunOption)

Defaults here make a new bench small: a toy bench needs items, score, metrics and its files/variants.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from povid_eval.core.checks import Check, file_check
from povid_eval.core.paths import project

__all__ = ["Bench", "Check", "Item", "Metric", "Options", "RunOption", "Tradeoff", "file_check"]


@dataclass(frozen=True)
class Item:
    """One prompt of a bench: ``key`` is unique in the bench; ``record`` holds the LLaVA-layout ids."""

    key: str
    image: Path
    prompt: str
    record: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A headline metric: ``key`` as in metrics.json ("CHAIRi", "random.f1"); ``title`` its leaderboard
    column; ``higher_is_better`` (None: neither, e.g. caption length); ``panel`` = (title, y label) of its
    panel in the metric bars, if it has one."""

    key: str
    title: str
    higher_is_better: bool | None
    panel: tuple[str, str] | None = None


@dataclass(frozen=True)
class Tradeoff:
    """A metric that a model can improve by saying less: ``metric`` (lower is better) against ``recall``
    (higher is better) and ``length`` (words per answer). `povid-eval frontier` traces it under stop biases;
    `compare` reads B's ``metric`` against A's frontier at B's ``recall``."""

    metric: str
    recall: str
    length: str


@dataclass(frozen=True)
class RunOption:
    """A `povid-eval run` flag of one bench. ``override``: it replaces the card option ``dest`` (a path,
    resolved; recorded in metrics.json's overrides, part of the protocol); else it is passed to score()."""

    flag: str
    dest: str
    help: str
    metavar: str = "FILE"
    override: bool = False


@dataclass(frozen=True)
class Options:
    """A bench's own card keys (subclass per bench; fields with defaults). ``protocol()`` is what they add
    to the protocol hash: fields listed in LATER count only when not at their default (so hashes of cards
    written before the field existed stay valid), FILE fields count by their file's content; ``judge``
    is always there (it was a key of every card)."""

    LATER: ClassVar[tuple[str, ...]] = ()
    FILES: ClassVar[tuple[str, ...]] = ()

    def protocol(self) -> dict:

        d: dict[str, Any] = {"judge": ""}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.LATER and value == f.default:
                continue
            if f.name in self.FILES and value:
                path = project(value)
                value = {
                    "file": Path(value).name,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None,
                }
            d[f.name] = value
        return d


class Bench:
    """Defaults of the protocol (see the module docstring); each bench folder subclasses it."""

    name: str = ""
    title: str = ""
    variants: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # [files] keys a card must have
    optional_files: tuple[str, ...] = ()
    Options: type = Options
    option_rules: dict[str, Callable[[Any], str | None]] = {}
    metrics: tuple[Metric, ...] = ()  # compare's rows, in order
    columns: tuple[str, ...] | None = None  # the leaderboard's columns (default: every metric)
    panels: tuple[str, ...] | None = None  # the metric bars' panels (default: metrics with a panel)
    tradeoff: Tradeoff | None = None
    run_options: tuple[RunOption, ...] = ()
    decimals: int = 4  # digits of `povid-eval score`'s table
    details_file: str | None = None  # per-sample details a run writes beside samples.jsonl
    score_help: str = ""

    def column_metrics(self) -> list[Metric]:
        return self._pick(self.columns, [m.key for m in self.metrics])

    def panel_metrics(self) -> list[Metric]:
        return self._pick(self.panels, [m.key for m in self.metrics if m.panel])

    def _pick(self, keys, default) -> list[Metric]:
        by_key = {m.key: m for m in self.metrics}
        return [by_key[k] for k in (default if keys is None else keys)]

    # ---- the protocol
    def check_card(self, path: Path, card) -> None:
        """Checks of a loaded card beyond the types and ranges of its options (InputError naming ``path``)."""

    def items(self, card) -> list[Item]:
        raise NotImplementedError

    def limit(self, items: list[Item], n: int) -> list[Item]:
        return items[:n]

    def prepare(self, card, **options) -> dict:
        """Work done before a run starts, from the bench's run options (e.g. MMHal builds its judge, so a bad
        setting fails before any generation); returns extra keyword arguments for score()."""
        return {}

    def score(self, card, samples, *, with_units: bool = False, details: Path | None = None, **options) -> dict:
        raise NotImplementedError

    def correctness(self, card, samples) -> dict[str, list[bool]]:
        return {}

    def data_checks(self, card, **options) -> list[Check]:
        """The data the items are built from, a file or a folder per [files] key (images are checked after
        them, by the doctor)."""
        return [
            Check(f"data ({key})", path.exists(), f"{path}" + ("" if path.exists() else " not found"))
            for key in self.files
            for path in [card.data_path(key)]
        ]

    def setting_checks(self, card, **options) -> list[Check]:
        """Settings beyond the data, e.g. MMHal's judge: model, key, endpoint, prompt."""
        return []

    def image_fix(self, card) -> str:
        return f"put the bench's images under {card.data_path()}"

    def extras(self, card, details: Path | None) -> dict:
        """Extra entries for metrics.json (e.g. where CHAIR's hallucinations come from on the world)."""
        return {}

    def add_score_arguments(self, parser) -> None:
        """`povid-eval score <name>`'s arguments (argparse); --json is added by the CLI."""

    def score_files(self, args) -> dict:
        raise NotImplementedError(f"`povid-eval score {self.name}` is not available")

    def plots(
        self,
        models: Sequence[str],
        data: dict,
        out_dir: Path,
        *,
        frontier_model: str | None = None,
        frontier: dict | None = None,
    ) -> list[Path]:
        """The bench's own figures for `compare` (``data``: model -> its loaded metrics.json)."""
        return []

    reliance_measure: str = "share of answers that change"

    def reliance(self, card, clean: Sequence, noised: Sequence) -> list[float]:
        """Per item, how much the answer changes when the image is noised (the image-reliance diagnostic,
        report/reliance.py): ``clean`` and ``noised`` are the same items' samples, (line, record) pairs in item
        order. Default: 1 where the answer's text (case and outer spaces aside) differs, else 0."""
        return [float(c["text"].strip().lower() != n["text"].strip().lower()) for (_, c), (_, n) in zip(clean, noised)]

    def noise_sources(self, card, clean: Sequence, noised: Sequence) -> dict | None:
        """Where the bench's errors come from, split by whether they survive the noise (CHAIR: hallucinations
        named with and without the pixels); None where the bench has no such split."""
        return None

    def tradeoff_plot(
        self, models: Sequence[str], data: dict, out_dir: Path, frontier_model: str, frontier: dict
    ) -> Path | None:
        """The trade-off figure (models against ``frontier_model``'s frontier), for compare and the
        leaderboard; None for a bench without a trade-off."""
        return None
