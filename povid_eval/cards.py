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
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from povid_eval.errors import InputError
from povid_eval.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("chair", "pope", "mme", "mmhal")
DTYPES = ("fp32", "bf16", "fp16")
BACKENDS = ("hf", "openai")
FORMATS = ("auto", "hf", "llava")
JUDGES = ("rule", "openai", "hf")
DEFAULT_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


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
    model_base: str = ""                         # original-format LoRA folders: the checkpoint they apply to
    vision_tower: str = ""                       # original format: local CLIP folder (default: mm_vision_tower)
    dtype: str = "fp32"
    device: str = "cpu"                          # cpu, cuda, cuda:N, auto
    threads: int = 0                             # CPU threads for torch; 0 = torch's default
    template: str = DEFAULT_TEMPLATE
    base_url: str = ""                           # openai backend: e.g. http://localhost:8000/v1
    api_model: str = ""                          # openai backend: the served model's name
    api_key_env: str = ""                        # openai backend: environment variable holding the key
    concurrency: int = 8                         # openai backend: requests in flight
    timeout: float = 120.0                       # openai backend: seconds per request
    max_retries: int = 5                         # openai backend: retries on 429 / 5xx / timeouts
    generation: Decoding = field(default_factory=Decoding)
    info: dict = field(default_factory=dict)   # provenance: training command, world hash, seed, ...

    def resolve(self, value: str) -> Path:
        return resolve_path(value)


@dataclass(frozen=True)
class BenchCard:
    """A benchmark protocol. ``data`` is the data root (relative to the project root unless absolute)."""

    name: str
    bench: str
    variant: str
    data: str
    prompt: str = ""
    suffix: str = ""
    strip: str = ""
    judge: str = ""                              # MMHal: rule | openai | hf
    judge_model: str = ""                        # openai: the pinned judge model; hf: a local causal LM folder
    judge_base_url: str = ""                     # openai judge endpoint (default https://api.openai.com/v1)
    judge_key_env: str = ""                      # environment variable holding the judge's API key
    judge_prompt: str = ""                       # judge prompt file (4 {} slots); default: the project's own
    image_ids: str = ""                          # CHAIR: file of image ids to use (one per line, '#' comments)
    sample: int = 0                              # CHAIR: else draw this many images of the annotations...
    sample_seed: int = 0                         # ... with this seed (sorted ids, random.Random(seed).sample)
    limit: int = 0
    world: bool = False                          # data is the embedded synthetic world, built on demand
    decoding: Decoding = field(default_factory=Decoding)
    files: dict = field(default_factory=dict)   # bench-specific data paths, relative to data

    def data_path(self, key: str | None = None) -> Path:
        root = resolve_path(self.data)
        return root if key is None else root / self.files[key]

    def protocol(self) -> dict:
        """Everything that changes a number (the data root's location does not). Fields added after the first
        release are left out while they hold their default, so existing protocol hashes stay valid; a file
        named by ``image_ids`` or ``judge_prompt`` counts by its content (sha256), not its path."""
        d = dataclasses.asdict(self)
        d.pop("data")
        for name in _LATER_FIELDS:
            if d[name] == _DEFAULTS[name]:
                d.pop(name)
        for name in ("image_ids", "judge_prompt"):
            if d.get(name):
                path = resolve_path(d[name])
                d[name] = {"file": Path(d[name]).name,
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None}
        return d

    def protocol_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.protocol(), sort_keys=True).encode()).hexdigest()[:16]


_LATER_FIELDS = ("judge_model", "judge_base_url", "judge_key_env", "judge_prompt", "image_ids", "sample",
                 "sample_seed")
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(BenchCard)}


def resolve_path(value: str | Path) -> Path:
    """A path of a card: relative to the project root unless absolute (``~`` expanded)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else ROOT / p


def check_keys(path: Path, table: dict, cls, required: tuple[str, ...], prefix: str = "") -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise InputError(path, f"unknown key '{prefix}{key}' (known: {', '.join(sorted(known))})")
    for key in required:
        if key not in table:
            raise InputError(path, f"missing key '{prefix}{key}'")


def _decoding(path: Path, table: Any) -> Decoding:
    if not isinstance(table, dict):
        raise InputError(path, "'decoding'/'generation' must be a table")
    check_keys(path, table, Decoding, (), prefix="decoding.")
    return Decoding(**table)


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"invalid TOML: {e}") from None


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


def _read_card(name_or_path: str, folder: Path, kind: str, cls, required: tuple[str, ...]) -> tuple[Path, dict]:
    """The checked table of a card given by name or by path (see _card_path)."""
    path = _card_path(name_or_path, folder)
    if not path.is_file():
        raise InputError(path, f"unknown {kind} '{name_or_path}' (known: {', '.join(_names(folder)) or 'none'})")
    data = read_toml(path)
    data.setdefault("name", path.stem)
    check_keys(path, data, cls, required)
    return path, data


def _choice(path: Path, data: dict, key: str, choices: tuple[str, ...], default: str) -> None:
    if data.get(key, default) not in choices:
        raise InputError(path, f"{key} must be one of {', '.join(choices)}, got {data[key]!r}", field=key)


def load_model_card(name_or_path: str, folder: Path | None = None) -> ModelCard:
    from povid_eval.vlm.prompts import template_problem

    path, data = _read_card(name_or_path, folder or models_dir(), "model", ModelCard, ())
    _choice(path, data, "dtype", DTYPES, "fp32")
    _choice(path, data, "backend", BACKENDS, "hf")
    _choice(path, data, "format", FORMATS, "auto")
    if data.get("backend", "hf") == "openai":
        for key in ("base_url", "api_model"):
            if not data.get(key):
                raise InputError(path, f"missing key '{key}' (needed by backend = \"openai\")")
    elif not data.get("path"):
        raise InputError(path, "missing key 'path'")
    problem = template_problem(data.get("template", DEFAULT_TEMPLATE))
    if problem:
        raise InputError(path, problem, field="template")
    return ModelCard(generation=_decoding(path, data.pop("generation", {})), **data)


def load_bench_card(name_or_path: str, folder: Path | None = None) -> BenchCard:
    path, data = _read_card(name_or_path, folder or benchmarks_dir(), "bench", BenchCard, ("bench", "variant", "data"))
    if data["bench"] not in BENCHES:
        raise InputError(path, f"bench must be one of {', '.join(BENCHES)}, got {data['bench']!r}")
    if data.get("judge"):
        _choice(path, data, "judge", JUDGES, "")
    return BenchCard(decoding=_decoding(path, data.pop("decoding", {})), **data)


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
