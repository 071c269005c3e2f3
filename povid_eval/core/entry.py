"""How every entry point (``povid-eval``, ``python -m povid_eval.world``, ``python -m povid_eval.world.pretrain``)
ends: a problem the user can fix is ONE line on stderr and exit code 2, an interrupt exit code 130, anything
else a traceback (a bug)."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

from povid_eval.core.errors import PovidError
from povid_eval.core.io import STORAGE_ERRNOS


def storage_hint(code: int) -> str:
    """What to do about a storage error (io.STORAGE_ERRNOS) of this errno."""
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free some space and run the same command again: it resumes where it stopped"
    return "give a folder you can write to (e.g. --out DIR), or fix its permissions"


def run_reporting(func: Callable[[], object], prog: str = "povid-eval") -> int:
    """Run ``func``; 0 when it returns, else the exit code of the problem it raised (module docstring)."""
    try:
        func()
    except PovidError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's: a full disk, a read-only folder (io.STORAGE_ERRNOS); not a bug
        if e.errno not in STORAGE_ERRNOS:
            raise
        print(f"{prog}: error: {e.filename or 'writing'}: {e.strerror}; {storage_hint(e.errno)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
