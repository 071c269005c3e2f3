"""How every entry point (``povid-eval``, ``python -m povid_eval.world``, ``python -m povid_eval.world.pretrain``)
ends: a problem the user can fix is ONE line on stderr and exit code 2, an interrupt (Ctrl-C) exit code 130, a
SIGTERM (a scheduler's or ``kill``'s stop) exit code 143, anything else a traceback (a bug).

SIGTERM is turned into an interrupt (``Terminated``) so that it takes Ctrl-C's way out: the ``finally`` blocks
remove temp files and folders, locks are released, and a rerun resumes. A second SIGTERM during that clean-up
kills at once (the default action), as does SIGKILL, which no process can catch."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
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


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where the process is so that the interrupt's clean-up runs (module docstring)."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM does not wait for the clean-up
    raise Terminated()


def run_reporting(func: Callable[[], object]) -> int:
    """Run ``func``; 0 when it returns, else the exit code of the problem it raised (module docstring)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _report(func)
    finally:
        if main_thread:  # None: a handler Python did not install; the default is what it did
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _report(func: Callable[[], object]) -> int:
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
    except Terminated:
        print("povid-eval: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("povid-eval: interrupted", file=sys.stderr)
        return 130
    return 0
