"""`povid-eval run`: real tiny LLaVA (random weights) on a small synthetic world: results files, cache,
resume after SIGKILL, torchrun sharding, and clear errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_LIMITS as LIMITS

from povid_eval.benches import registry
from povid_eval.run import runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tiny_env):
    """The shared tiny world and model (conftest.tiny_env)."""
    return tiny_env


@pytest.fixture
def use_env(env, monkeypatch):
    root, variables = env
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    return root


def cli(env, *args, **kw):
    root, variables = env
    return subprocess.run(
        [sys.executable, "-m", "povid_eval", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **variables},
        cwd=root,
        **kw,
    )


@pytest.mark.parametrize("bench", tuple(registry.BENCHES))
def test_run_writes_samples_and_metrics(use_env, tmp_path, bench):
    record = runner.run("tiny", bench, results=tmp_path, progress=False)
    folder = tmp_path / "runs" / "tiny" / bench
    lines = (folder / "samples.jsonl").read_text().splitlines()
    n_items = LIMITS[bench] * (2 if bench == "mme" else 1)
    assert len(lines) == n_items == record["n"]
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in (
        "bench",
        "variant",
        "n",
        "metrics",
        "protocol",
        "protocol_hash",
        "model",
        "versions",
        "seed",
        "wall_time_s",
    ):
        assert key in metrics, key
    assert metrics["model"]["card"] == "tiny" and metrics["versions"]["torch"].startswith("2.13.0")

    def fail(*a):
        raise AssertionError("a cached run must not generate")

    again = runner.run("tiny", bench, results=tmp_path, generate=fail, progress=False)
    assert again["metrics"] == record["metrics"]


def test_samples_are_llava_answers_that_score_reads(env, use_env, tmp_path):
    runner.run("tiny", "pope", results=tmp_path, progress=False)
    card = registry.load_card("pope")
    proc = cli(
        env,
        "score",
        "pope",
        "--answers",
        tmp_path / "runs" / "tiny" / "pope" / "samples.jsonl",
        "--questions",
        card.data_path("questions"),
        "--labels-dir",
        card.data_path("labels"),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "runs" / "tiny" / "pope" / "metrics.json").read_text())["metrics"]
    assert json.loads(proc.stdout)["metrics"] == metrics


def test_batch_size_does_not_change_results(use_env, tmp_path):
    a = runner.run("tiny", "chair", results=tmp_path / "a", batch_size=1, progress=False)
    b = runner.run("tiny", "chair", results=tmp_path / "b", batch_size=8, progress=False)
    assert a["metrics"] == b["metrics"]


def test_kill_and_resume(env, tmp_path):
    out = tmp_path / "killed"
    args = ("run", "--bench", "chair", "--model", "tiny", "--batch-size", "1", "--limit", "24", "--results", out)
    root, variables = env
    proc = subprocess.Popen(
        [sys.executable, "-m", "povid_eval", *map(str, args)],
        env={**os.environ, **variables},
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples = out / "runs" / "tiny" / "chair" / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not samples.exists() or samples.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = samples.read_text().count("\n")
    assert 3 <= done < 24, done
    with open(samples, "a") as f:  # a write torn by the kill
        f.write('{"key": "torn", "te')
    resumed = cli(env, *args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    keys = [json.loads(x)["key"] for x in samples.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 24
    straight = cli(
        env, "run", "--bench", "chair", "--model", "tiny", "--limit", "24", "--results", tmp_path / "s", "--json"
    )
    assert json.loads(resumed.stdout)["metrics"] == json.loads(straight.stdout)["metrics"]


def test_torchrun_two_processes_equal_one(env, tmp_path):
    root, variables = env
    one = cli(env, "run", "--bench", "pope", "--model", "tiny", "--results", tmp_path / "one", "--json")
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29571",
            "-m",
            "povid_eval",
            "run",
            "--bench",
            "pope",
            "--model",
            "tiny",
            "--results",
            tmp_path / "two",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **variables},
        cwd=root,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "runs" / "tiny" / "pope" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "runs" / "tiny" / "pope" / "metrics.json").read_text())
    assert a["metrics"] == b["metrics"] and a["n"] == b["n"]
    assert not list((tmp_path / "two" / "runs" / "tiny" / "pope").glob("samples.rank*"))


def test_unknown_names_and_missing_image(env, tmp_path):
    proc = cli(env, "run", "--bench", "chiar", "--model", "tiny")
    assert proc.returncode == 2 and "unknown bench 'chiar'" in proc.stderr and "chair" in proc.stderr
    proc = cli(env, "run", "--bench", "chair", "--model", "nobody")
    assert proc.returncode == 2 and "unknown model 'nobody' (known: tiny)" in proc.stderr
    root, variables = env
    bench = registry.load_card(str(root / "benchmarks" / "chair.toml"))
    image = bench.data_path("images") / sorted(p.name for p in bench.data_path("images").iterdir())[0]
    backup = tmp_path / "backup.png"
    shutil.move(image, backup)
    try:
        proc = cli(env, "run", "--bench", "chair", "--model", "tiny", "--results", tmp_path / "r")
    finally:
        shutil.move(backup, image)
    assert proc.returncode == 2 and "images: 1 of 24 images missing" in proc.stderr and str(image) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unreadable_image(env, tmp_path):
    root, variables = env
    bench = registry.load_card(str(root / "benchmarks" / "chair.toml"))
    image = bench.data_path("images") / sorted(p.name for p in bench.data_path("images").iterdir())[0]
    original = image.read_bytes()
    image.write_bytes(b"not a png")
    try:
        proc = cli(env, "run", "--bench", "chair", "--model", "tiny", "--results", tmp_path / "r")
    finally:
        image.write_bytes(original)
    assert proc.returncode == 2 and "unreadable image" in proc.stderr
    assert not (tmp_path / "r" / "runs" / "tiny" / "chair" / "metrics.json").exists()
