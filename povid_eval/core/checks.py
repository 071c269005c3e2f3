"""What `povid-eval doctor` reports, one asset at a time: ``Check(asset, ok, detail, fix)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One asset a run needs: its kind, the verdict, what was found or is missing (with the path), and the
    exact command or download that fixes it."""

    asset: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.asset}: {self.detail}" + (f" (fix: {self.fix})" if self.fix and not self.ok else "")


def file_check(asset: str, path: Path, fix: str = "") -> Check:
    """The file is there."""
    return Check(asset, path.is_file(), f"{path}" + ("" if path.is_file() else " not found"), fix)
