"""Reading user files with located errors, and writing files atomically (temp file, then rename)."""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from povid_eval.core.errors import InputError

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


MAX_TEXT_CHARS = 200_000  # a text field longer than this (a caption, an answer, a reply) is refused: no model
# writes one (1,024 new tokens are about 6,000 characters), and NLTK's tokenizer
# would take minutes on it


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


STALE_AFTER_S = 10.0  # a staging folder this long untouched, and locked by nobody, was left by a killed process


def _untouched(path: Path) -> bool:
    """Whether ``path`` has not changed for STALE_AFTER_S."""
    return time.time() - path.stat().st_mtime >= STALE_AFTER_S


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on ``fd`` without waiting: False when another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _held_folder(prefix: str, parent: Path) -> tuple[Path, int]:
    """A new folder ``parent/{prefix}XXXXXXXX`` and an open descriptor holding an exclusive flock on it (the
    kernel drops the lock when the process dies, however it dies)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return folder, fd


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders ``.{out.name}.tmp-*`` and ``.{out.name}.old-*`` beside ``out`` that a killed
    process left (SIGKILL, a power loss: nothing ran its clean-up): those no living process holds locked
    (staging_dir, replace_dir) and untouched for STALE_AFTER_S. A folder still locked is another build's, left
    alone. An ``.old-`` folder whose ``out`` is missing (killed between replace_dir's two renames) is put back
    in ``out``'s place first. Returns what was removed."""
    removed = []
    for folder in sorted(out.parent.glob(f".{out.name}.tmp-*")) + sorted(out.parent.glob(f".{out.name}.old-*")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            if not try_lock(fd):
                continue  # its owner is alive
            if not _untouched(folder):
                continue  # just made: its creator may not have locked it yet
            kept = folder / out.name
            if ".old-" in folder.name and kept.is_dir() and not out.exists():
                os.replace(kept, out)  # killed between replace_dir's two renames: the previous one goes back
            shutil.rmtree(folder)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove what atomic_write_bytes leaves in ``folder`` when its process is killed between the write and the
    rename (``.NAME.XXXXXXXX.tmp``, untouched for STALE_AFTER_S). Call it holding the folder's writer lock
    (paths.writer_lock does), so that no living writer's file can be among them. Returns what was removed."""
    removed = []
    for path in sorted(folder.glob(".*.tmp")):
        if path.is_file() and not path.is_symlink() and _untouched(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def staging_dir(out: Path, log=None) -> Iterator[Path]:
    """A new empty folder beside ``out`` to build it in: when the block ends normally it takes ``out``'s place
    (replace_dir), on any other exit it is removed. It is locked while the block runs, so that when a kill
    prevents the removal the next build finds it unlocked and removes it (remove_stale_staging, run first;
    ``log`` gets one line per folder removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for folder in remove_stale_staging(out):
        if log is not None:
            log(f"removed {folder}, left by a killed build")
    tmp, fd = _held_folder(f".{out.name}.tmp-", out.parent)
    try:
        tmp.chmod(0o755)
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when moved into place
        os.close(fd)


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` (a sibling of ``out``) in ``out``'s place: a reader sees the old folder or
    the new one, never a half-written one (the old one is moved aside first, into a locked folder, then
    removed: a kill meanwhile leaves it to remove_stale_staging)."""
    old = fd = None
    if out.exists():
        old, fd = _held_folder(f".{out.name}.old-", out.parent)
        os.replace(out, old / out.name)
    try:
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None and not out.exists():
                os.replace(old / out.name, out)
            raise
        if old is not None:
            shutil.rmtree(old)
    finally:
        if fd is not None:
            os.close(fd)


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


@contextmanager
def reading(path: Path):
    """Make a failure to read ``path`` (gzip that is not gzip, a vanished file) an InputError naming it; the
    machine's errors (io.STORAGE_ERRNOS) stay OSErrors."""
    try:
        yield
    except (OSError, EOFError) as e:
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            raise
        raise InputError(path, f"unreadable: {e}") from None


def read_bytes(path: str | Path) -> bytes:
    """The content of a (possibly .gz) file."""
    p = require_file(path)
    with reading(p), _open_binary(p) as f:
        return f.read()


def decode(path: Path, raw: bytes, line: int | None = None) -> str:
    """raw as UTF-8; a byte that is not UTF-8 is an InputError naming the file (and line)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"byte {e.start + 1} of the line" if line is not None else f"byte {e.start + 1}"
        raise InputError(path, f"not UTF-8 text ({where}: {raw[e.start : e.start + 1]!r})", line=line) from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (or .gz) as a str; see decode."""
    p = Path(path)
    return decode(p, read_bytes(p))


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line end) of a UTF-8 text file (or .gz); a byte that is not UTF-8
    names its line."""
    p = require_file(path)
    with reading(p), _open_binary(p) as f:
        for lineno, raw in enumerate(f, 1):
            yield lineno, decode(p, raw, lineno).rstrip("\r\n")


def read_json(path: str | Path) -> Any:
    """Load a .json or .json.gz file; a syntax error names the line."""
    p = Path(path)
    text = read_text(p)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(p, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except RecursionError:
        raise InputError(p, "invalid JSON: nested too deeply") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, object) for each non-blank line of a jsonl file."""
    p = Path(path)
    for lineno, line in read_lines(p):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(p, f"invalid JSON line: {e.msg} (column {e.colno})", line=lineno) from None
        except RecursionError:
            raise InputError(p, "invalid JSON line: nested too deeply", line=lineno) from None


def read_records(path: str | Path) -> list[tuple[int | None, Any]]:
    """Records of a JSON list file or a jsonl file, as (line number or None, record).

    A file whose first non-blank character is '[' is one JSON list (records have no line numbers);
    anything else is read as jsonl. A JSON file whose top level is not a list is an error."""
    p = require_file(path)
    with reading(p), _open_binary(p) as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):
        data = read_json(p)
        if not isinstance(data, list):
            raise InputError(p, f"expected a JSON list of records, got {type(data).__name__}")
        return [(None, r) for r in data]
    return list(iter_jsonl(p))


def require_fields(
    path: Path, record: Any, fields: tuple[str, ...], *, line: int | None = None, field: str | None = None
) -> None:
    """Raise InputError unless record is an object with every field; located by line or by field (a record)."""
    if not isinstance(record, dict):
        raise InputError(path, f"expected a JSON object, got {type(record).__name__}", line=line, field=field)
    for name in fields:
        if name not in record:
            raise InputError(path, f"missing field '{name}'", line=line, field=field)


def require_id(path: str | Path, value: Any, key: str, *, line: int | None = None, field: str | None = None):
    """An id field's value: an integer or a non-empty string (not a float, a bool, a list or an object)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        shown = json.dumps(value)[:80] if not isinstance(value, str) else repr(value)
        raise InputError(path, f"'{key}' must be an integer or a non-empty string, got {shown}", line=line, field=field)
    return value


def require_text(path: str | Path, value: Any, key: str, *, line: int | None = None, field: str | None = None) -> str:
    """A text field's value: a string of at most MAX_TEXT_CHARS characters."""
    if not isinstance(value, str):
        raise InputError(path, f"'{key}' must be a string, got {json.dumps(value)[:80]}", line=line, field=field)
    if len(value) > MAX_TEXT_CHARS:
        raise InputError(
            path,
            f"'{key}' is {len(value):,} characters long, more than any model answer (limit {MAX_TEXT_CHARS:,})",
            line=line,
            field=field,
        )
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _open_image(path: str | Path, context: str, decode: bool):
    """The image at ``path`` as RGB (``decode``), or only its header checked; an InputError names the file
    (and ``context``) when it is missing, a folder, too large for PIL's limit, or unreadable."""
    from PIL import Image, UnidentifiedImageError

    suffix = f" ({context})" if context else ""
    if not Path(path).is_file():
        raise InputError(
            path, f"image not found{suffix}" if not Path(path).exists() else f"image expected, found a folder{suffix}"
        )
    try:
        with Image.open(path) as im:
            return im.convert("RGB") if decode else None
    except Image.DecompressionBombError as e:
        raise InputError(path, f"image too large{suffix}: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            raise
        raise InputError(path, f"unreadable image{suffix}: {e}") from None


def read_image(path: str | Path, context: str = ""):
    """An RGB PIL image; a missing or unreadable file is an InputError naming it (and ``context``)."""
    return _open_image(path, context, decode=True)


def check_image(path: str | Path, context: str = "") -> None:
    """A quick look at an image file's header (no decoding): an InputError unless it is a file PIL can open
    within its size limit. A truncated file passes; read_image finds it when the pixels are needed."""
    _open_image(path, context, decode=False)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to path via a temp file in the same folder and an atomic rename. The file gets the usual
    permissions (0666 minus the umask), not mkstemp's private 0600."""
    p = Path(path)
    if p.is_dir():
        raise InputError(p, "a folder is in the way of the file to write")
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
