import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES} (the project expects ../shared beside it)")
    return FIXTURES


@pytest.fixture(scope="session")
def expected(fixtures):
    return lambda bench: json.loads((fixtures / bench / "expected.json").read_text())


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m povid_eval ARGS` as a user would; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "povid_eval", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT)


@pytest.fixture
def cli():
    return run_cli
