import json
import subprocess
import sys
from pathlib import Path

import pytest

import povid_eval.world  # noqa: F401  (registers the synthetic world's MMHal judge, "rule", as the CLI does)

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
    return subprocess.run(
        [sys.executable, "-m", "povid_eval", *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT
    )


@pytest.fixture
def cli():
    return run_cli


# ------------------------------------------------------------------ one shared tiny world + tiny model

TINY_LIMITS = {"chair": 6, "pope": 12, "mme": 3, "mmhal": 8}


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory):
    """A small synthetic world (16 train / 24 val images), a tiny random LLaVA saved as models/tiny, and the
    world's bench cards pointing at that world with small limits: ``(root, environment variables)``.

    The cards live in <root>/models and <root>/benchmarks; set the variables (POVID_EVAL_MODELS,
    POVID_EVAL_BENCHMARKS, POVID_EVAL_CACHE) to use them (``use_tiny_env`` does, with monkeypatch)."""
    import re

    from povid_eval.vlm import build_tiny_llava
    from povid_eval.vlm.tokenizer import vocab_from_texts
    from povid_eval.world import build_world

    root = tmp_path_factory.mktemp("tiny-env")
    world = root / "world"
    build_world(world, seed=0, n_train=16, n_val=24)
    texts = [c["caption"] for c in json.loads((world / "annotations" / "captions_val.json").read_text())["annotations"]]
    texts += [json.loads(x)["text"] for x in (world / "pope" / "llava_pope_test.jsonl").read_text().splitlines()]
    model, processor = build_tiny_llava(vocab_from_texts(texts), seed=0)
    model.save_pretrained(root / "tiny")
    processor.save_pretrained(root / "tiny")
    (root / "models").mkdir()
    (root / "models" / "tiny.toml").write_text(f'path = "{root / "tiny"}"\n')
    (root / "benchmarks").mkdir()
    for bench, limit in TINY_LIMITS.items():
        text = (ROOT / "benchmarks" / f"{bench}.toml").read_text()
        text = text.replace('data = "data/world"', f'data = "{world}"\nlimit = {limit}')
        text = re.sub(r"max_new_tokens = \d+", "max_new_tokens = 6", text)
        (root / "benchmarks" / f"{bench}.toml").write_text(text)
    variables = {
        "POVID_EVAL_MODELS": str(root / "models"),
        "POVID_EVAL_BENCHMARKS": str(root / "benchmarks"),
        "POVID_EVAL_CACHE": str(root / "cache"),
    }
    return root, variables


@pytest.fixture
def use_tiny_env(tiny_env, monkeypatch):
    root, variables = tiny_env
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    return root


def models_on_base(root: Path, names) -> Path:
    """<root>/models/<name>.toml for every name, each a card of the committed tiny base (tests fake their answers)."""
    (root / "models").mkdir(exist_ok=True)
    for name in names:
        (root / "models" / f"{name}.toml").write_text(f'path = "{ROOT / "models" / "base"}"\n')
    return root / "models"


def point_at(monkeypatch, root: Path, benchmarks: Path) -> None:
    """Models from <root>/models, bench cards from ``benchmarks``, caches in <root>/cache."""
    monkeypatch.setenv("POVID_EVAL_MODELS", str(root / "models"))
    monkeypatch.setenv("POVID_EVAL_BENCHMARKS", str(benchmarks))
    monkeypatch.setenv("POVID_EVAL_CACHE", str(root / "cache"))


def patched_benchmarks(tiny_env, tmp_path: Path, monkeypatch, card: str, old: str, new: str) -> Path:
    """The tiny env's variables set, and its bench cards copied to tmp_path/benchmarks with ``old`` replaced by
    ``new`` in ``card``.toml, used as the bench cards."""
    import shutil

    root, variables = tiny_env
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    benches = tmp_path / "benchmarks"
    shutil.copytree(root / "benchmarks", benches)
    (benches / f"{card}.toml").write_text((benches / f"{card}.toml").read_text().replace(old, new))
    monkeypatch.setenv("POVID_EVAL_BENCHMARKS", str(benches))
    return benches


# A small tiny-LLaVA (vlm/build.py sizes) for tests that build their own model.
SMALL_SIZES = dict(
    image_size=32,
    patch_size=16,
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_intermediate=64,
    text_hidden=32,
    text_layers=2,
    text_heads=2,
    text_intermediate=64,
    max_positions=64,
)
