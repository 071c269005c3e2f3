"""Small pieces shared by the benches: ratios for the pure scorers, and the result / record plumbing of the
readers of the release formats (benches/<name>/files.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from povid_eval.core.io import iter_jsonl, read_records


def ratio(a, b):
    """a / b for floats or arrays, 0.0 where b == 0 (an undefined ratio is reported as 0, not an error).

    Plain float division where b != 0, so point estimates equal the reference implementations bit for bit.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def as_floats(metrics: dict) -> dict:
    """numpy 0-d values -> Python floats (for point estimates and JSON)."""
    return {k: float(v) for k, v in metrics.items()}


def result(bench: str, variant: str, n: int, metrics: dict) -> dict:
    """What every scorer returns (and `povid-eval score --json` prints): {bench, variant, n, metrics}."""
    return {"bench": bench, "variant": variant, "n": n, "metrics": metrics}


def attach_units(result: dict, units) -> dict:
    """Attach (unit matrix, from_sums) for bootstrap intervals (core/stats.py); not part of the JSON output."""
    return {**result, "units": units}


class Located(list):
    """(line, record) pairs held in memory, with the file they were read from (named in errors)."""

    def __init__(self, pairs, path: str | Path):
        super().__init__(pairs)
        self.path = path


def records(source, *, listing: bool = False) -> list:
    """(line, record) pairs from a file path (jsonl; ``listing``: a JSON list too), or a list of them as
    given (samples held in memory)."""
    if isinstance(source, (str, Path)):
        return read_records(source) if listing else list(iter_jsonl(source))
    return list(source)


def name(source) -> str | Path:
    """How errors name a source: its path, or the file in-memory samples came from."""
    return source if isinstance(source, (str, Path)) else getattr(source, "path", "samples")


def where(line: int | None, index: int) -> dict:
    """Location kwargs for InputError: the line of a jsonl file, else the record index of a JSON list."""
    return {"line": line} if line is not None else {"field": f"record {index}"}
