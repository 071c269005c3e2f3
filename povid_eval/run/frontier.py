"""The baseline's length-control frontier on CHAIR: what the base model gets by merely saying less.

Why. CHAIR_i (hallucinated object mentions / all object mentions) and CHAIR_s (captions with a
hallucination) reward short captions: a model that names fewer objects names fewer wrong ones. A tuned model
that "wins" CHAIR may only have learnt to stop earlier. The fair question is: at the recall the tuned model
achieves, how much would the *base* hallucinate if it were simply made to stop earlier too?

What. The base is decoded (the bench card's own protocol, greedy for CHAIR) with a sweep of logit biases
``b`` against continuing. At every decoding step, with ``z`` the next-token logits::

    z'[eos] = z[eos] + b            (end-of-sequence made more likely)
    z'[c]   = z[c]   - b            for every list-continuation token c in C (pieces "," and "and")

so, relative to all other tokens, ending is ``e^b`` times more likely and continuing a list ``e^b`` times
less likely (under sampling the bias comes before temperature and top-p). ``b = 0`` is the ordinary run,
token for token. ``C`` is found generically from the vocabulary (``continuation_token_ids``), so the same
bias works for the tiny word-level tokenizer and for Llama's sentencepiece. Each bias gives one point
(Recall, CHAIR_i), plus CHAIR_s, Len and the mean caption words.

Reading the curve. Plot CHAIR_i (y) against Recall (x). Bias 0 is the rightmost point (the base's own
recall); growing biases move left (shorter captions, fewer objects found) and, usually, down. The curve is
what length control alone buys. A tuned model at (R, C) improves on the base beyond saying less only if C
lies clearly below the curve at R: compare C with ``chair_i_at_recall(points, R)`` (and mind the bootstrap
intervals of both). A tuned model whose recall is below the curve's leftmost point is out of range
(``None``): extend the sweep with larger biases.

Any bench with a length trade-off (Bench.tradeoff: CHAIR's CHAIR_i against Recall) has a frontier.

Files. Every bias is an ordinary ``runner.run`` of the bench in its own folder,
``<results>/runs/<model>/frontier/<bench>/bias_<b>/samples.jsonl`` (cached per sample, resumable, scored
like any run). The summary is ``<results>/runs/<model>/frontier/<bench>/frontier.json``: model, bench,
protocol hash, limit, biases and the points sorted by recall; it holds no timings, so a rerun (which
generates nothing) writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from transformers import LogitsProcessor

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.benches.base import Tradeoff
from povid_eval.core import paths
from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_json
from povid_eval.run import runner
from povid_eval.vlm.generate import Generate, for_card

# Measured on the embedded tiny base (CHAIR, 500 images): Recall 0.81 at biases 0 to 5, then 0.80 (6),
# 0.63 (7), 0.36 (7.5), 0.23 (8), 0.18 (9). Its logits are peaked: the knob is steep past 6.
DEFAULT_BIASES: tuple[float, ...] = (0.0, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0)

CONTINUATIONS = (",", "and")


class StopBias(LogitsProcessor):
    """Adds ``+bias`` to the end-of-sequence logit(s) and ``-bias`` to the list-continuation tokens' logits
    (see the module docstring). ``eos_token_id``: an id or a list of ids."""

    def __init__(self, eos_token_id: int | Iterable[int], continuation_ids: Iterable[int], bias: float):
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        self.eos_token_id = sorted(set(eos))
        self.continuation_ids = sorted(set(continuation_ids) - set(self.eos_token_id))
        self.bias = float(bias)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[:, self.eos_token_id] += self.bias
        if self.continuation_ids:
            scores[:, self.continuation_ids] -= self.bias
        return scores

    def __eq__(self, other) -> bool:
        return isinstance(other, StopBias) and (self.eos_token_id, self.continuation_ids, self.bias) == (
            other.eos_token_id,
            other.continuation_ids,
            other.bias,
        )

    def __hash__(self) -> int:
        return hash((tuple(self.eos_token_id), tuple(self.continuation_ids), self.bias))

    def __repr__(self) -> str:
        return f"StopBias(eos={self.eos_token_id}, continuation_ids={self.continuation_ids}, bias={self.bias:g})"


def continuation_token_ids(tokenizer) -> list[int]:
    """Ids of the vocabulary entries that decode, stripped, to "," or "and" (e.g. "," and "▁and" in the tiny
    base's word-level vocabulary; ",", "▁,", "and", "▁and" in Llama's sentencepiece). Special tokens are left
    out. Raises if there is none: a bias against continuing would silently be an end-of-sequence bias only."""
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    found = [i for i, text in zip(ids, texts) if text.strip() in CONTINUATIONS]
    if not found:
        wanted = " or ".join(map(repr, CONTINUATIONS))
        raise InputError(None, f"no vocabulary entry of the tokenizer decodes to {wanted}")
    return found


def _biased_generate(model: cards.ModelCard, bias: float) -> Generate:
    """The card's generation with a StopBias; the tokenizer and the model are loaded only when something
    is left to generate (a cached rerun needs neither)."""
    loaded: list[Generate] = []

    def generate(images, prompts, decoding: cards.Decoding, **options) -> list[str]:
        if not loaded:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model.resolve(model.path)), local_files_only=True)
            stop = StopBias(tokenizer.eos_token_id, continuation_token_ids(tokenizer), bias)
            loaded.append(for_card(model, [stop]))
        return loaded[0](images, prompts, decoding, **options)

    return generate


def tradeoff_of(card: cards.BenchCard) -> Tradeoff:
    """The bench's trade-off (metric vs recall), or an InputError: only such a bench has a frontier."""
    tradeoff = registry.bench_of(card).tradeoff
    if tradeoff is None:
        with_one = [b.name for b in registry.BENCHES.values() if b.tradeoff]
        raise InputError(
            None,
            f"--bench: the frontier is traced on a bench with a length trade-off "
            f"({', '.join(with_one)}); {card.name!r} is a {card.kind} bench",
        )
    return tradeoff


def default_bench(group: str = "all") -> str:
    """The first card of a bench set whose bench has a trade-off (the frontier's default bench)."""
    for name in cards.bench_names(group):
        if registry.bench_of(registry.load_card(name)).tradeoff:
            return name
    raise InputError(None, f"--bench: no card of the set {group!r} has a bench with a length trade-off")


def frontier_path(results: Path, model: str, bench: str) -> Path:
    """<results>/runs/<model>/frontier/<bench>/frontier.json (core/paths.py)."""
    return paths.frontier_folder(results, model, bench) / "frontier.json"


def frontier(
    model_name: str,
    bench: str,
    biases: Sequence[float] | None = DEFAULT_BIASES,
    results: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
    limit: int = 0,
) -> dict | None:
    """Run the bench once per bias (cached, resumable) and write its frontier.json; returns its content (None
    on ranks other than 0 under torchrun). ``biases`` None: DEFAULT_BIASES. Each point holds the bias, n and
    every scalar metric of the run."""
    model = cards.load_model_card(model_name)
    card = registry.load_card(bench)
    tradeoff = tradeoff_of(card)
    biases = sorted({float(b) for b in (DEFAULT_BIASES if biases is None else biases)})
    if not biases:
        raise InputError(None, "no biases given")
    results = paths.results_root(results)
    folder = paths.frontier_folder(results, model.name, card.name)
    points, record = [], None
    for bias in biases:
        record = runner.run(
            model_name,
            bench,
            batch_size=batch_size,
            limit=limit,
            progress=progress,
            results=results,
            folder=folder / f"bias_{bias:g}",
            generate=_biased_generate(model, bias),
        )
        if record is not None:
            scalars = {k: v for k, v in record["metrics"].items() if isinstance(v, (int, float))}
            points.append({"bias": bias, "n": record["n"], **scalars})
    if record is None:
        return None
    points.sort(key=lambda p: (p[tradeoff.recall], -p["bias"]))
    result = {
        "model": model.name,
        "bench": card.name,
        "protocol_hash": record["protocol_hash"],
        "limit": record["limit"],
        "biases": biases,
        "points": points,
    }
    atomic_write_json(folder / "frontier.json", result)
    return result


def metric_at_recall(points: Sequence[dict], recall: float, tradeoff: Tradeoff) -> float | None:
    """The frontier's metric (CHAIR_i) at ``recall``: plain linear interpolation of the metric between the two
    neighbouring points on the recall axis (several points at the same recall count as one, with their
    lowest metric). Exact at a point; None below the lowest or above the highest recall covered (no
    extrapolation). No envelope is taken: the curve goes through every point."""
    best: dict[float, float] = {}
    for p in points:
        r, c = float(p[tradeoff.recall]), float(p[tradeoff.metric])
        best[r] = min(c, best.get(r, c))
    xs = sorted(best)
    if not xs or not xs[0] <= recall <= xs[-1]:
        return None
    for lo, hi in zip(xs, xs[1:]):
        if lo <= recall <= hi:
            t = (recall - lo) / (hi - lo)
            return best[lo] + t * (best[hi] - best[lo])
    return best[xs[0]]  # a single point, at exactly its recall
