"""Model cards (models/<name>.toml) and bench cards (benchmarks/<bench>.toml), read into frozen dataclasses.

A model card says what to load; a bench card is the protocol: prompt, decoding, data, parser/variant, image
list. Unknown or misspelt keys and missing required keys are errors naming the card file and the key.
``protocol_hash`` hashes everything in a bench card that changes a number, so cached samples and metrics
are tied to the protocol that made them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from povid_eval.core import paths
from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_text
from povid_eval.prompts import template_problem

ROOT = paths.ROOT
DTYPES = ("fp32", "bf16", "fp16")
BACKENDS = ("hf", "openai")
FORMATS = ("auto", "hf", "llava")
DEFAULT_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"


@dataclass(frozen=True)
class Decoding:
    """How a bench decodes: greedy unless ``do_sample`` (temperature, nucleus top_p, seeded). ``batch_size``:
    prompts per generation batch, 0 = the run's --batch-size; 1 = no padding, as LLaVA's and POVID's
    scripts generate (batched fp16 with left padding can flip an output against batch 1)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 0


@dataclass(frozen=True)
class ModelCard:
    """What to load. ``path``, ``adapter``, ``model_base`` and ``vision_tower`` are local folders, relative to the
    project root unless absolute; ``path`` may also be a hub id (``llava-hf/llava-1.5-7b-hf``), used from the
    local HF cache, or downloaded only when POVID_EVAL_ALLOW_DOWNLOADS=1.

    ``backend = "openai"``: the model is an OpenAI-compatible chat endpoint (``base_url``, ``api_model``, key
    from the environment variable ``api_key_env``); ``path`` is then unused.
    ``format``: ``hf`` (LlavaForConditionalGeneration folder), ``llava`` (the original LLaVA repo's
    LlavaLlamaForCausalLM folder, or its LoRA folder over ``model_base``, converted on load) or ``auto``.
    ``template``: a name in vlm/templates.toml (vicuna_v1, plain, ...), ``chat_template``, or a literal string.
    """

    name: str
    path: str = ""
    adapter: str = ""
    backend: str = "hf"
    format: str = "auto"
    model_base: str = ""  # original-format LoRA folders: the checkpoint they apply to
    vision_tower: str = ""  # original format: local CLIP folder (default: mm_vision_tower)
    dtype: str = "fp32"
    device: str = "cpu"  # cpu, cuda, cuda:N, auto
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    template: str = DEFAULT_TEMPLATE
    image_aspect_ratio: str = "pad"  # "pad" (LLaVA-1.5: each image padded to a square of the mean colour) | "square"
    base_url: str = ""  # openai backend: e.g. http://localhost:8000/v1
    api_model: str = ""  # openai backend: the served model's name
    api_key_env: str = ""  # openai backend: environment variable holding the key
    concurrency: int = 8  # openai backend: requests in flight
    timeout: float = 120.0  # openai backend: seconds per request
    max_retries: int = 5  # openai backend: retries on 429 / 5xx / timeouts
    info: dict = field(default_factory=dict)  # provenance: training command, world hash, seed, ...

    def resolve(self, value: str) -> Path:
        return resolve_path(value)


@dataclass(frozen=True)
class BenchCard:
    """A benchmark protocol: the fields every bench has, and ``options``, the bench's own keys typed by its
    bench (benches/<kind>/: e.g. CHAIR's image list, MMHal's judge). ``kind`` names the bench (the TOML key
    ``kind``; ``bench`` is its older spelling); ``data`` is the data root (relative to the project root unless
    absolute); ``files`` the bench's data paths, relative to ``data``. Cards are loaded, checked and typed by
    benches.registry.load_card."""

    name: str
    kind: str
    variant: str
    data: str
    prompt: str = ""
    suffix: str = ""
    strip: str = ""
    template: str = ""  # the prompt template of this protocol instead of the model card's (e.g. llava_v1)
    limit: int = 0
    world: bool = False  # data is the embedded synthetic world, built on demand
    # POVID's diffusion noise on every image at this step t before the model sees it (vlm/noise.py; 0: the
    # clean images): the image-reliance diagnostic (`povid-eval run --image-noise`)
    image_noise: int = 0
    decoding: Decoding = field(default_factory=Decoding)
    files: dict = field(default_factory=dict)
    options: Any = None  # the bench's Options (benches/base.py)

    def data_path(self, key: str | None = None) -> Path:
        root = resolve_path(self.data)
        return root if key is None else root / self.files[key]

    def ask(self, text: str) -> str:
        """A question as the card asks it: its ``strip`` text removed, its ``suffix`` appended."""
        if not self.strip and not self.suffix:
            return text
        return (text.replace(self.strip, "") if self.strip else text).strip() + self.suffix

    def with_overrides(self, overrides: dict) -> BenchCard:
        """The card with a run's --data and option overrides (e.g. --image-ids), as recorded in metrics.json."""
        common = {k: v for k, v in overrides.items() if k in _COMMON}
        own = {k: v for k, v in overrides.items() if k not in _COMMON}
        options = dataclasses.replace(self.options, **own) if own else self.options
        return dataclasses.replace(self, **common, options=options)

    def protocol(self) -> dict:
        """Everything that changes a number (the data root's location does not): the common fields and what
        the bench's options add (Options.protocol). The layout is the first release's, so protocol hashes of
        existing cards stay valid."""
        d = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("data", "options", "kind")
        }
        d["bench"] = self.kind
        d["decoding"] = dataclasses.asdict(self.decoding)
        if not self.decoding.batch_size:  # a field added later: cards without it keep their hash
            d["decoding"].pop("batch_size")
        for later in ("template", "image_noise"):  # fields added later: cards without them keep their hash
            if not d[later]:
                d.pop(later)
        d.update(self.options.protocol() if self.options is not None else {"judge": ""})
        return d

    def protocol_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.protocol(), sort_keys=True).encode()).hexdigest()[:16]


_COMMON = {f.name for f in dataclasses.fields(BenchCard)} - {"options"}
BENCH_KEYS = tuple(sorted(_COMMON))


def resolve_path(value: str | Path) -> Path:
    """A path of a card: relative to the project root unless absolute (``~`` expanded); see paths.py."""
    return paths.project(value)


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,)}
_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "dict": "a table"}


def _type_problem(value: Any, kind: str) -> str | None:
    """Why ``value`` is not of the field type ``kind`` (a dataclass annotation: str, int, float, bool, dict, or
    one of them "| None": TOML has no null, so a value that is given must be of the type)."""
    kind = kind.removesuffix(" | None")
    types = _TYPES.get(kind)
    if types is None:
        return None
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, types):
        return f"expected {_TYPE_WORDS[kind]}, got {type(value).__name__} {value!r}"[:200]
    if kind == "float" and not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    return None


def at_least(low: float, integer: bool = True) -> Callable[[Any], str | None]:
    word = "an integer" if integer else "a number"
    return lambda v: None if v >= low else f"expected {word} >= {low:g}, got {v!r}"


def above(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v > low else f"expected a number > {low:g}, got {v!r}"


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


def matches(pattern: str, what: str) -> Callable[[Any], str | None]:
    return lambda v: None if re.fullmatch(pattern, v) else f"expected {what}, got {v!r}"


def check_table(
    path: Path,
    table: dict,
    cls,
    required: tuple[str, ...] = (),
    prefix: str = "",
    rules: dict[str, Callable[[Any], str | None]] | None = None,
) -> None:
    """Every key of ``table`` is a field of the dataclass ``cls`` with a value of the field's type that passes
    its rule; ``required`` keys are present. An InputError names the file and the key otherwise."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise InputError(path, f"unknown key '{prefix}{key}' (known: {', '.join(sorted(fields))})")
    for key in required:
        if key not in table:
            raise InputError(path, f"missing key '{prefix}{key}'")
    for key, value in table.items():
        problem = _type_problem(value, fields[key])
        if problem is None and rules and key in rules:
            problem = rules[key](value)
        if problem:
            raise InputError(path, problem, field=f"{prefix}{key}")


def check_keys(path: Path, table: dict, cls, required: tuple[str, ...], prefix: str = "") -> None:
    """check_table without value rules (the keys and the types of the values)."""
    check_table(path, table, cls, required, prefix)


_DECODING_RULES = {
    "max_new_tokens": at_least(1),
    "temperature": at_least(0, integer=False),
    "top_p": lambda v: None if 0 < v <= 1 else f"expected a number in (0, 1], got {v!r}",
    "seed": at_least(0),
    "batch_size": at_least(0),
}


def _decoding(path: Path, table: Any, prefix: str) -> Decoding:
    if not isinstance(table, dict):
        raise InputError(path, f"expected a table, got {type(table).__name__}", field=prefix.rstrip("."))
    check_table(path, table, Decoding, (), prefix=prefix, rules=_DECODING_RULES)
    decoding = Decoding(**table)
    if decoding.do_sample and decoding.temperature == 0:
        raise InputError(path, "do_sample = true needs a temperature > 0", field=f"{prefix}temperature")
    return decoding


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text (byte {e.start}): a TOML file must be UTF-8") from None


def models_dir() -> Path:
    """models/ of the project, or $POVID_EVAL_MODELS."""
    return Path(os.environ.get("POVID_EVAL_MODELS") or ROOT / "models")


def benchmarks_dir() -> Path:
    """benchmarks/ of the project, or $POVID_EVAL_BENCHMARKS."""
    return Path(os.environ.get("POVID_EVAL_BENCHMARKS") or ROOT / "benchmarks")


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.toml"))


def _card_path(name_or_path: str, folder: Path) -> Path:
    """A card file: a path ending in .toml, folder/<name>.toml, or the one folder/<group>/<name>.toml."""
    if name_or_path.endswith(".toml"):
        return Path(name_or_path)
    path = folder / f"{name_or_path}.toml"
    nested = sorted(folder.glob(f"*/{name_or_path}.toml"))
    return nested[0] if not path.is_file() and len(nested) == 1 else path


def _read_card(name_or_path: str, folder: Path, kind: str) -> tuple[Path, dict]:
    """The table of a card given by name or by path (see _card_path), with its ``name`` (default: the file's
    stem) checked to be a valid name."""
    if not name_or_path.endswith(".toml"):
        paths.check_name(name_or_path.split("/")[-1], f"{kind} name")
    path = _card_path(name_or_path, folder)
    if not path.is_file():
        if path.exists():
            raise InputError(path, f"{kind} card expected, found a folder")
        raise InputError(path, f"unknown {kind} '{name_or_path}' (known: {', '.join(_names(folder)) or 'none'})")
    data = read_toml(path)
    data.setdefault("name", path.stem)
    paths.check_name(data["name"], f"{kind} name", path, "name")
    return path, data


_DEVICE = r"cpu|auto|mps|cuda(:\d+)?"
_MODEL_RULES = {
    "backend": one_of(BACKENDS),
    "format": one_of(FORMATS),
    "dtype": one_of(DTYPES),
    "device": matches(_DEVICE, "cpu, cuda, cuda:N, mps or auto"),
    "threads": at_least(0),
    "concurrency": at_least(1),
    "timeout": above(0),
    "max_retries": at_least(0),
    "image_aspect_ratio": one_of(("pad", "square")),
}


def load_model_card(name_or_path: str, folder: Path | None = None) -> ModelCard:
    path, data = _read_card(name_or_path, folder or models_dir(), "model")
    if "generation" in data:
        raise InputError(
            path,
            "a model card has no [generation] table any more (it was never used): decoding is the "
            "bench card's [decoding], the same for every model; delete the table",
            field="generation",
        )
    check_table(path, data, ModelCard, (), rules=_MODEL_RULES)
    if data.get("backend", "hf") == "openai":
        for key in ("base_url", "api_model"):
            if not data.get(key):
                raise InputError(path, f"missing key '{key}' (needed by backend = \"openai\")")
    elif not data.get("path"):
        raise InputError(path, "missing key 'path'")
    problem = template_problem(data.get("template", DEFAULT_TEMPLATE))
    if problem:
        raise InputError(path, problem, field="template")
    return ModelCard(**data)


_BENCH_RULES = {
    "limit": at_least(0),
    "template": lambda v: template_problem(v) if v else None,
    "image_noise": lambda v: None if 0 <= v < 1000 else f"expected a diffusion step in 0..999 (0: no noise), got {v}",
}


def read_bench_card(name_or_path: str, folder: Path | None = None) -> tuple[Path, dict]:
    """A bench card's file and its table (its ``name`` checked)."""
    return _read_card(name_or_path, folder or benchmarks_dir(), "bench")


def split_bench_table(path: Path | None, data: dict) -> tuple[dict, dict, str]:
    """A bench card's common fields (checked: types, ranges, required kind/variant/data, the [decoding]
    table, [files] a table of paths), the rest of its table (the bench's own options, which
    benches.registry checks and types), and the key that named the kind ("kind", or the older "bench")."""
    data = dict(data)
    if "bench" in data and "kind" not in data:  # the older spelling of the key (errors name it as written)
        data["kind"] = data.pop("bench")
        common_key = "bench"
    else:
        common_key = "kind"
    decoding = data.pop("decoding", {})
    common = {k: data.pop(k) for k in list(data) if k in _COMMON}
    check_table(path, common, BenchCard, ("kind", "variant", "data"), rules=_BENCH_RULES)
    common["decoding"] = _decoding(path, decoding, "decoding.")
    files = common.get("files", {})
    for key, value in files.items():
        if not isinstance(value, str) or not value:
            raise InputError(path, f"expected a path (a non-empty string), got {value!r}", field=f"files.{key}")
    return common, data, common_key


def bench_names(group: str = "all") -> list[str]:
    """The cards of a bench set: ``all`` = benchmarks/*.toml (the embedded world), a folder name such as
    ``real`` = benchmarks/real/*.toml, anything else = that one card."""
    if group == "all":
        return _names(benchmarks_dir())
    folder = benchmarks_dir() / group
    return [f"{group}/{name}" for name in _names(folder)] if folder.is_dir() else [group]


# ---------------------------------------------------------------- writing cards (a small TOML emitter)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: dict) -> str:
    """Scalars and lists first, then one level of tables (enough for the cards)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def save_model_card(card: ModelCard, folder: Path | None = None) -> Path:
    data = dataclasses.asdict(card)
    path = (folder or models_dir()) / f"{card.name}.toml"
    atomic_write_text(path, to_toml(data))
    return path
