"""How every entry point (``povid-eval``, ``python -m povid_eval.world``, ``python -m povid_eval.world.pretrain``)
ends: a problem the user can fix is ONE line on stderr and exit code 2, an interrupt exit code 130, anything
else a traceback (a bug)."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

from povid_eval.core.errors import PovidError
from povid_eval.core.io import STORAGE_ERRNOS


def count(minimum: int):
    """An argparse type for an integer >= minimum (every entry point's counts, seeds and thread numbers)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def storage_hint(code: int) -> str:
    """What to do about a storage error (io.STORAGE_ERRNOS) of this errno."""
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some space and run the same command again: it resumes where it stopped"
    return "give a folder you can write to (e.g. --out DIR), or fix its permissions"


def run_reporting(func: Callable[[], object]) -> int:
    """Run ``func``; 0 when it returns, else the exit code of the problem it raised (module docstring)."""
    try:
        func()
    except PovidError as e:
        print(f"povid-eval: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's: a full disk, a read-only folder (io.STORAGE_ERRNOS); not a bug
        if e.errno not in STORAGE_ERRNOS:
            raise
        print(f"povid-eval: error: {e.filename or 'writing'}: {e.strerror}; {storage_hint(e.errno)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("povid-eval: interrupted", file=sys.stderr)
        return 130
    return 0
