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
    """What to load. ``path`` and ``adapter`` are relative to the project root unless absolute."""

    name: str
    path: str
    adapter: str = ""
    dtype: str = "fp32"
    device: str = "cpu"
    threads: int = 0                             # CPU threads for torch; 0 = torch's default
    template: str = DEFAULT_TEMPLATE
    generation: Decoding = field(default_factory=Decoding)
    info: dict = field(default_factory=dict)   # provenance: training command, world hash, seed, ...

    def resolve(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else ROOT / p


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
    judge: str = ""
    limit: int = 0
    world: bool = False                          # data is the embedded synthetic world, built on demand
    decoding: Decoding = field(default_factory=Decoding)
    files: dict = field(default_factory=dict)   # bench-specific data paths, relative to data

    def data_path(self, key: str | None = None) -> Path:
        root = Path(self.data) if Path(self.data).is_absolute() else ROOT / self.data
        return root if key is None else root / self.files[key]

    def protocol(self) -> dict:
        """Everything that changes a number (the data root's location does not)."""
        d = dataclasses.asdict(self)
        d.pop("data")
        return d

    def protocol_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.protocol(), sort_keys=True).encode()).hexdigest()[:16]


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


def _read_card(name_or_path: str, folder: Path, kind: str, cls, required: tuple[str, ...]) -> tuple[Path, dict]:
    """The checked table of a card given by name (folder/<name>.toml) or by path."""
    path = Path(name_or_path) if name_or_path.endswith(".toml") else folder / f"{name_or_path}.toml"
    if not path.is_file():
        raise InputError(path, f"unknown {kind} '{name_or_path}' (known: {', '.join(_names(folder)) or 'none'})")
    data = read_toml(path)
    data.setdefault("name", path.stem)
    check_keys(path, data, cls, required)
    return path, data


def load_model_card(name_or_path: str, folder: Path | None = None) -> ModelCard:
    path, data = _read_card(name_or_path, folder or models_dir(), "model", ModelCard, ("path",))
    if data.get("dtype", "fp32") not in DTYPES:
        raise InputError(path, f"dtype must be one of {', '.join(DTYPES)}, got {data['dtype']!r}")
    template = data.get("template", DEFAULT_TEMPLATE)
    if "<image>" not in template or "{prompt}" not in template:
        raise InputError(path, "template must contain '<image>' and '{prompt}'")
    return ModelCard(generation=_decoding(path, data.pop("generation", {})), **data)


def load_bench_card(name_or_path: str, folder: Path | None = None) -> BenchCard:
    path, data = _read_card(name_or_path, folder or benchmarks_dir(), "bench", BenchCard, ("bench", "variant", "data"))
    if data["bench"] not in BENCHES:
        raise InputError(path, f"bench must be one of {', '.join(BENCHES)}, got {data['bench']!r}")
    return BenchCard(decoding=_decoding(path, data.pop("decoding", {})), **data)


def bench_names() -> list[str]:
    return _names(benchmarks_dir())


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
