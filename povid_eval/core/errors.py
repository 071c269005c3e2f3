"""Errors the CLI reports as one line with exit code 2 (no traceback)."""

from __future__ import annotations

from pathlib import Path


class PovidError(Exception):
    """A problem the user can fix; its message is one line that says what and where."""


class MissingAssetError(PovidError):
    """Something the run needs is not on this machine (data, weights); the message says how to get it."""


class InputError(PovidError):
    """Bad input, located: ``FILE:LINE: message`` or ``FILE: field: message``.

    ``line`` is 1-based (a line of a jsonl/txt file); ``field`` names a key or a record, e.g. ``record 5``.
    """

    def __init__(self, path: str | Path | None, message: str, *, line: int | None = None, field: str | None = None):
        self.path, self.message, self.line, self.field = path, message, line, field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else ""
        if self.line is not None:
            where += f":{self.line}"
        if self.field is not None:
            where += f": {self.field}"
        return f"{where}: {self.message}" if where else self.message
