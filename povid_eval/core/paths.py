"""Where things live, and the rules that keep the tool inside its own folders.

Relative paths: one rule for every subcommand.
- A path given on the command line (``--out``, ``--data``, ``--captions``, ``--preferences``, ...) is relative
  to the current directory, as with any command-line tool.
- A path written in a card (models/*.toml, benchmarks/**/*.toml, a recipe TOML) or in a file the tool wrote
  (a preference jsonl, train_info.json) is relative to the project root, the folder that holds models/ and
  benchmarks/, so a card means the same thing from any directory.
- Defaults are the project's own folders (results/, data/world, models/, benchmarks/), whatever the current
  directory.

Names: model, bench and output names (from cards and flags) become folder and file names, so they must
match ``NAME_PATTERN`` (letters, digits, ``.``, ``_``, ``-``; no ``..``; at most 100 characters), and every
output path derived from one is checked to lie under its root (``inside``).

Ownership: every folder the tool builds carries a marker file (``MARKER``) naming what made it. The tool
writes into a folder only if it is new, empty or carries the marker (``claim``), and deletes or replaces
only folders that carry it.

One writer: ``writer_lock(folder)`` holds an exclusive ``flock`` on ``folder/.lock`` for the duration of a
run; the kernel releases it when the process dies, so a killed run never leaves a stale lock behind, and the
next holder removes the temp files a killed writer left there (io.remove_stale_temp_files).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

from povid_eval.core.errors import InputError, PovidError
from povid_eval.core.io import remove_stale_temp_files, try_lock

ROOT = Path(__file__).resolve().parents[2]
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MARKER = ".povid-eval.json"
LOCK = ".lock"


# ------------------------------------------------------------------------------------------- names


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a model, bench or output name, or None if it can."""
    if not isinstance(name, str):
        return f"expected a name (a string), got {type(name).__name__}"
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        return (
            f"{name!r} is not a valid name: use letters, digits, '.', '_' and '-' (starting with a letter or "
            f"digit, no '..', at most 100 characters)"
        )
    return None


def check_name(name: object, what: str, where: str | Path | None = None, field: str | None = None) -> str:
    """``name`` if it is a valid name, else an InputError (located at ``where``/``field``, or naming ``what``)."""
    problem = name_problem(name)
    if problem:
        raise InputError(where, problem, field=field) if where is not None else InputError(None, f"{what}: {problem}")
    return name


def inside(root: str | Path, *parts: str) -> Path:
    """``root/parts...``, refused unless it resolves to a path under ``root`` (no ``..``, no absolute part,
    no symlink that leads out)."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base):
        raise InputError(None, f"{'/'.join(parts)!r} would leave {base}: refused")
    return path


# ------------------------------------------------------------------------------------------- paths


def project(value: str | Path) -> Path:
    """A path written in a card or a file the tool wrote: relative to the project root unless absolute."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else ROOT / p


def from_cli(value: str | Path | None, default: str | Path) -> Path:
    """A path given on the command line (relative to the current directory), or the project's ``default``."""
    return Path(value).expanduser().resolve() if value not in (None, "") else project(default)


def results_root(value: str | Path | None = None) -> Path:
    """The results folder: ``--out``/``--results`` (cwd-relative) or the project's results/; not a file."""
    root = from_cli(value, "results")
    if root.exists() and not root.is_dir():
        raise InputError(root, "results folder expected, found a file")
    return root


def cache_dir() -> Path:
    """Where derived data is cached: $POVID_EVAL_CACHE, else $XDG_CACHE_HOME/povid-eval, else ~/.cache/povid-eval."""
    if os.environ.get("POVID_EVAL_CACHE"):
        return Path(os.environ["POVID_EVAL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "povid-eval"


# ------------------------------------------------------------------------------------------- results layout
#   <results>/runs/<model>/<bench>/                  samples.jsonl, metrics.json, a bench's details
#   <results>/runs/<model>/frontier/<bench>/         frontier.json, bias_<b>/ (one run per stop bias)
#   <results>/runs/<model>/noised-t<T>/<bench>/      a run on diffusion-noised images (--image-noise T)
#   <results>/train/<model>/                         a training's data, checkpoints, adapter
#   <results>/compare/, <results>/plots/, <results>/leaderboard*.{md,csv,html}     reports
# Model folders live under runs/, so no model name can collide with a report.

RUNS = "runs"


def run_folder(results: Path, model: str, bench: str, noise: int = 0) -> Path:
    """Where a model's run of a bench card lives; ``noise``: its run on images noised at that diffusion step."""
    if bench == "frontier" or re.fullmatch(r"noised-t\d+", bench):
        raise InputError(None, f"bench card name {bench!r} is reserved for the results layout: rename the card")
    return inside(results, RUNS, model, f"noised-t{noise}", bench) if noise else inside(results, RUNS, model, bench)


def noised_steps(results: Path, model: str, bench: str) -> list[int]:
    """The diffusion steps at which a model has a finished run of a bench card on noised images."""
    folder = Path(results) / RUNS / model
    found = folder.glob(f"noised-t*/{bench}/metrics.json") if folder.is_dir() else []
    return sorted(int(m.group(1)) for p in found if (m := re.fullmatch(r"noised-t(\d+)", p.parent.parent.name)))


def frontier_folder(results: Path, model: str, bench: str) -> Path:
    """Where a model's stop-bias frontier on a bench card lives (frontier.json and one run per bias)."""
    return inside(results, RUNS, model, "frontier", bench)


def model_names(results: Path) -> list[str]:
    """The models with a folder under <results>/runs, sorted."""
    folder = Path(results) / RUNS
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------- ownership


def is_ours(folder: Path) -> bool:
    """Does ``folder`` carry the tool's marker?"""
    return (Path(folder) / MARKER).is_file()


def is_empty(folder: Path) -> bool:
    return not any(Path(folder).iterdir())


def mark(folder: Path, kind: str) -> None:
    """Put the marker into ``folder`` (which the tool made or found empty)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        path.write_text(json.dumps({"made_by": "povid-eval", "kind": kind}) + "\n")


def require_ours(folder: Path, what: str) -> None:
    """Refuse a non-empty folder without the marker: the tool will not write into or replace it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, f"{what}: folder expected, found a file")
    if folder.is_dir() and not is_ours(folder) and not is_empty(folder):
        raise InputError(
            folder,
            f"{what}: this folder is not empty and was not made by povid-eval (no {MARKER}); "
            f"refusing to write into it: give a new or empty folder",
        )


def claim(root: Path, *parts: str, kind: str) -> Path:
    """``root/parts...`` ready for writing: ``root`` is a folder (or new), and every level below it must be
    new, empty or ours; those levels are created and marked. Returns the innermost folder (checked to lie
    under ``root``)."""
    folder = inside(root, *parts)
    base = Path(root).resolve()
    if base.exists() and not base.is_dir():
        raise InputError(base, f"{kind} folder expected, found a file")
    levels = [base.joinpath(*parts[:k]) for k in range(1, len(parts) + 1)]
    for level in levels:
        require_ours(level, f"{kind} folder")
    for level in levels:
        level.mkdir(parents=True, exist_ok=True)
        mark(level, kind)
    return folder


# ------------------------------------------------------------------------------------------- one writer


class Busy(PovidError):
    """Another process holds a folder's writer lock."""


@contextmanager
def writer_lock(folder: Path, what: str):
    """Hold an exclusive lock on ``folder`` (flock on folder/.lock) or raise Busy at once; released on exit
    and by the kernel when the process dies (no stale lock after a kill). Once held, the temp files of a killed
    writer in ``folder`` are removed."""

    path = Path(folder) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not try_lock(fd):
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise Busy(
                f"{folder}: {what} is being written by {holder}; wait for it to finish "
                f"(two writers would duplicate samples)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        remove_stale_temp_files(Path(folder))  # a killed writer's half-written files
        yield
    finally:
        os.close(fd)
