"""Reading user files with located errors, and writing files atomically (temp file, then rename)."""

from __future__ import annotations

import errno
import gzip
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from povid_eval.errors import InputError

# Errors of the machine, not of the program: a full disk, a quota, a read-only or forbidden folder. The CLI
# reports them in one line naming the path (cli.main); every write names its path (``writing``).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


@contextmanager
def writing(path: str | Path):
    """Name ``path`` in an OSError raised while writing it (a failing ``write()`` names no file)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return path as a Path if it is a readable file, else raise InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{what} not found" if not p.exists() else f"{what} expected, not a regular file")
    return p


def require_dir(path: str | Path, what: str = "folder") -> Path:
    p = Path(path)
    if not p.is_dir():
        raise InputError(p, f"{what} not found" if not p.exists() else f"{what} expected, found a file")
    return p


def read_json(path: str | Path) -> Any:
    """Load a .json or .json.gz file; a syntax error names the line."""
    p = require_file(path)
    try:
        with _open_text(p) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(p, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise InputError(p, f"unreadable: {e}") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, object) for each non-blank line of a jsonl file."""
    p = require_file(path)
    try:
        with _open_text(p) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(p, f"invalid JSON line: {e.msg} (column {e.colno})", line=lineno) from None
    except UnicodeDecodeError as e:
        raise InputError(p, f"not UTF-8 text: {e}") from None


def read_records(path: str | Path) -> list[tuple[int | None, Any]]:
    """Records of a JSON list file or a jsonl file, as (line number or None, record).

    A file whose first non-blank character is '[' is one JSON list (records have no line numbers);
    anything else is read as jsonl.
    """
    p = require_file(path)
    with _open_text(p) as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        data = read_json(p)
        return [(None, r) for r in data]
    return list(iter_jsonl(p))


def require_fields(path: Path, record: Any, fields: tuple[str, ...], *, line: int | None = None,
                   field: str | None = None) -> None:
    """Raise InputError unless record is an object with every field; located by line or by field (a record)."""
    if not isinstance(record, dict):
        raise InputError(path, f"expected a JSON object, got {type(record).__name__}", line=line, field=field)
    for name in fields:
        if name not in record:
            raise InputError(path, f"missing field '{name}'", line=line, field=field)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_image(path: str | Path, context: str = ""):
    """An RGB PIL image; a missing or unreadable file is an InputError naming it (and ``context``)."""
    from PIL import Image, UnidentifiedImageError

    suffix = f" ({context})" if context else ""
    if not Path(path).is_file():
        raise InputError(path, f"image not found{suffix}")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise InputError(path, f"image too large{suffix}: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            raise
        raise InputError(path, f"unreadable image{suffix}: {e}") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to path via a temp file in the same folder and an atomic rename. The file gets the usual
    permissions (0666 minus the umask), not mkstemp's private 0600."""
    p = Path(path)
    with writing(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """atomic_write_bytes of the text as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
