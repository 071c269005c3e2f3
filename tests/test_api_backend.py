"""``backend = "openai"`` end to end: runner.run against a real loopback HTTP server (tests/chat_server.py)
whose answers come from the tiny base itself, so the API path must reproduce the hf path exactly; plus the
answer cache, bounded concurrency, retries and the API key's handling."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from chat_server import ChatServer, clear_proxies, user_image, user_text

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.core.errors import MissingAssetError
from povid_eval.core.http import ChatAPIError
from povid_eval.core.io import read_image
from povid_eval.run import runner
from povid_eval.vlm import api as api_model
from povid_eval.vlm import generate as generate_module

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
KEY_ENV, KEY = "POVID_TEST_API_KEY", "sk-povid-test-5c1e0d-secret"
LIMITS = {"pope": 12, "chair": 8}


@pytest.fixture(scope="module")
def world(tiny_env, tmp_path_factory):
    """The shared tiny world (conftest.tiny_env), pope/chair bench cards over it, and the tiny base's hf card."""
    root = tmp_path_factory.mktemp("api")
    (root / "world").symlink_to(tiny_env[0] / "world")
    (root / "benchmarks").mkdir()
    for bench, limit in LIMITS.items():
        text = (ROOT / "benchmarks" / f"{bench}.toml").read_text()
        text = text.replace('data = "data/world"', f'data = "{tiny_env[0] / "world"}"\nlimit = {limit}')
        text = re.sub(r"max_new_tokens = \d+", "max_new_tokens = 24" if bench == "chair" else r"\g<0>", text)
        (root / "benchmarks" / f"{bench}.toml").write_text(text)
    (root / "models").mkdir()
    base = {"path": str(ROOT / "models" / "base"), "threads": 1, "template": TEMPLATE}
    (root / "models" / "base.toml").write_text(cards.to_toml(base))
    return root


def variables(root: Path, cache: Path) -> dict[str, str]:
    return {
        "POVID_EVAL_MODELS": str(root / "models"),
        "POVID_EVAL_BENCHMARKS": str(root / "benchmarks"),
        "POVID_EVAL_CACHE": str(cache),
    }


@pytest.fixture(scope="module")
def reference(world):
    """The hf backend's samples (key -> text) and metrics per bench, one prompt per batch."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in variables(world, world / "cache-hf").items():
            mp.setenv(name, value)
        mp.setattr(generate_module, "_LOADED", {})
        for bench in LIMITS:
            record = runner.run("base", bench, results=world / "hf", batch_size=1, progress=False)
            out[bench] = (samples(world / "hf" / "runs" / "base" / bench), record)
    return out


@pytest.fixture(scope="module")
def tiny():
    """answer(body) for the server: the tiny base under its own template, greedy, max_tokens from the request;
    with surrounding whitespace, as servers often send (the backend strips it)."""
    import torch

    from povid_eval.vlm import load_vlm

    torch.set_num_threads(1)
    vlm, lock = load_vlm(ROOT / "models" / "base"), threading.Lock()

    def answer(body: dict) -> str:
        image, question = user_image(body), user_text(body)
        with lock:
            text = vlm.generate([image], [vlm.prompt(TEMPLATE, question)], max_new_tokens=body["max_tokens"])[0]
        return f" {text}\n"

    return answer


@pytest.fixture
def env(world, tmp_path, monkeypatch):
    clear_proxies(monkeypatch)
    for name, value in variables(world, tmp_path / "cache").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setattr(generate_module, "_LOADED", {})  # its key has no base_url: each test's server is new
    return world


def api_card(root: Path, url: str, **fields) -> cards.ModelCard:
    data = {
        "backend": "openai",
        "base_url": url,
        "api_model": "tiny-base",
        "api_key_env": KEY_ENV,
        "concurrency": 2,
        "max_retries": 2,
        **fields,
    }
    (root / "models" / "api.toml").write_text(cards.to_toml(data))
    return cards.load_model_card("api")


def samples(folder: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return {r["key"]: r["text"] for r in rows}


def files_text(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("bench", LIMITS)
def test_api_backend_reproduces_the_hf_backend(env, tiny, reference, tmp_path, bench):
    with ChatServer(tiny) as server:
        api_card(env, server.url)
        record = runner.run("api", bench, results=tmp_path / "out", progress=False)
    texts, hf_record = reference[bench]
    assert samples(tmp_path / "out" / "runs" / "api" / bench) == texts and len(texts) == LIMITS[bench]
    assert record["metrics"] == hf_record["metrics"] and record["n"] == hf_record["n"]
    assert record["intervals"] == hf_record["intervals"]
    assert not server.errors
    decoding = registry.load_card(bench).decoding
    assert len(server.requests) == len(
        {(b["messages"][0]["content"][0]["image_url"]["url"], user_text(b)) for b in server.bodies()}
    )  # one request per distinct (image, prompt)
    for request in server.requests:
        body = request["body"]
        assert request["path"] == "/v1/chat/completions" and body["model"] == "tiny-base"
        assert body["max_tokens"] == decoding.max_new_tokens and body["temperature"] == 0 and body["top_p"] == 1
        assert "seed" not in body  # greedy
        [message] = body["messages"]
        assert message["role"] == "user" and [p["type"] for p in message["content"]] == ["image_url", "text"]
        assert message["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert "<image>" not in user_text(body) and "ASSISTANT" not in user_text(body)  # the server's template


def test_rerun_sends_no_requests(env, tiny, tmp_path):
    with ChatServer(tiny) as server:
        api_card(env, server.url)
        first = runner.run("api", "pope", results=tmp_path / "a", progress=False)
        sent = len(server.requests)
        assert sent == LIMITS["pope"]
        again = runner.run("api", "pope", results=tmp_path / "b", progress=False)  # new results folder: client cache
        assert len(server.requests) == sent
    assert again["metrics"] == first["metrics"]
    assert samples(tmp_path / "b" / "runs" / "api" / "pope") == samples(tmp_path / "a" / "runs" / "api" / "pope")
    assert len(list((tmp_path / "cache" / "api").glob("*.json"))) == sent


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrency_is_bounded(env, tmp_path, concurrency):
    def slow(body):
        time.sleep(0.03)
        return "Yes"

    with ChatServer(slow) as server:
        api_card(env, server.url, concurrency=concurrency)
        runner.run("api", "pope", results=tmp_path, batch_size=16, progress=False)
    assert len(server.requests) == LIMITS["pope"]
    assert server.max_in_flight == concurrency


def test_retries_after_429_and_503(env, tmp_path):
    image = read_image(next((env / "world" / "images" / "val").glob("*.png")))
    decoding = cards.Decoding(max_new_tokens=8)
    with ChatServer(lambda body: "A red cube.") as server:
        generate = generate_module._load(api_card(env, server.url, concurrency=1, max_retries=2))
        server.script += [(429, {"Retry-After": "0"}, "rate limited"), (503, {"Retry-After": "0"}, "overloaded")]
        assert generate([image], ["Describe this image."], decoding) == ["A red cube."]
        assert len(server.requests) == 3
        assert len({json.dumps(r["body"], sort_keys=True) for r in server.requests}) == 1  # the same request

        generate = generate_module._load(api_card(env, server.url, concurrency=1, max_retries=1))
        server.script += [(503, {"Retry-After": "0"}, "overloaded")] * 2
        with pytest.raises(ChatAPIError, match="HTTP 503: gave up after 2 attempts: overloaded"):
            generate([image], ["What is this?"], decoding)


def test_key_is_sent_and_written_nowhere(env, tmp_path):
    with ChatServer(lambda body: "Yes", key=KEY) as server:  # 401 without the key
        api_card(env, server.url)
        runner.run("api", "pope", results=tmp_path / "results", progress=False)
    assert len(server.requests) == LIMITS["pope"]
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)
    written = files_text(tmp_path / "results", tmp_path / "cache")
    assert b"sk-povid-test" not in written and KEY_ENV.encode() not in written
    assert (tmp_path / "results" / "runs" / "api" / "pope" / "metrics.json").is_file()


def test_no_key_variable_no_authorization_header(env, tmp_path):
    with ChatServer(lambda body: "No") as server:
        api_card(env, server.url, api_key_env="")
        runner.run("api", "pope", results=tmp_path, progress=False)
    assert server.requests and not any("Authorization" in r["headers"] for r in server.requests)


def test_missing_key_fails_before_any_request(env, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with ChatServer() as server:
        card = api_card(env, server.url)
        with pytest.raises(MissingAssetError) as error:  # the backend's own check: one line
            api_model.openai_generate(card)
        assert str(error.value) == (
            f"model api: environment variable {KEY_ENV} (the API key for {server.url}) is not set"
        )
        with pytest.raises(MissingAssetError, match=f"{KEY_ENV} is not set"):  # the runner's checks come first
            runner.run("api", "pope", results=tmp_path / "r", progress=False)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "povid_eval",
                "run",
                "--bench",
                "pope",
                "--model",
                "api",
                "--results",
                str(tmp_path / "cli"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != KEY_ENV},
        )
    assert proc.returncode == 2, proc.stderr
    assert KEY_ENV in proc.stderr and "Traceback" not in proc.stderr
    assert not server.requests and not any(p.read_text() for p in tmp_path.rglob("samples.jsonl"))


def _echo_slowly(body):
    """An answer made from the request (so any server gives the same one), after a latency that varies."""
    text = user_text(body)
    time.sleep(0.005 + 0.004 * (sum(map(ord, text)) % 7))
    return "Yes" if len(text) % 2 else "No"


def _rows(folder: Path) -> list[tuple[str, str]]:
    lines = (folder / "samples.jsonl").read_text().splitlines()
    return [(r["key"], r["text"]) for r in map(json.loads, lines)]


def test_requests_are_pipelined_across_batches_and_appended_in_order(env, tmp_path):
    with ChatServer(_echo_slowly) as server:
        api_card(env, server.url, concurrency=8)
        runner.run("api", "pope", results=tmp_path / "pipelined", batch_size=4, limit=48, progress=False)
        pipelined_requests = len(server.requests)
    assert server.max_in_flight == 8  # twice the batch size: no barrier between batches
    with ChatServer(_echo_slowly) as server:  # a new server (a new url): nothing from the answer cache
        api_card(env, server.url, concurrency=1)
        runner.run("api", "pope", results=tmp_path / "sequential", batch_size=4, limit=48, progress=False)
    assert server.max_in_flight == 1 and len(server.requests) == pipelined_requests
    pipelined = _rows(tmp_path / "pipelined" / "runs" / "api" / "pope")
    assert pipelined == _rows(tmp_path / "sequential" / "runs" / "api" / "pope")  # same samples, same order
    assert len(pipelined) == 48 and len({k for k, _ in pipelined}) == 48


def test_a_killed_pipelined_run_resumes_without_loss_or_duplicates(env, tmp_path):
    def slow(body):
        time.sleep(0.05)
        return _echo_slowly(body)

    with ChatServer(slow) as server:
        api_card(env, server.url, concurrency=4)
        results = tmp_path / "results"
        command = [sys.executable, "-m", "povid_eval", "run", "--model", "api", "--bench", "pope"]
        command += ["--limit", "48", "--batch-size", "4", "--results", str(results)]
        proc = subprocess.Popen(command, env=dict(os.environ), stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        samples_file = results / "runs" / "api" / "pope" / "samples.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and (not samples_file.is_file() or len(samples_file.read_text().splitlines()) < 8):
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        kept = len(samples_file.read_text().splitlines())
        assert 8 <= kept < 48
        runner.run("api", "pope", results=results, batch_size=4, limit=48, progress=False)
    rows = _rows(results / "runs" / "api" / "pope")
    assert len(rows) == 48 and len({k for k, _ in rows}) == 48
    with ChatServer(_echo_slowly) as server:
        api_card(env, server.url, concurrency=1)
        runner.run("api", "pope", results=tmp_path / "sequential", batch_size=4, limit=48, progress=False)
    assert rows == _rows(tmp_path / "sequential" / "runs" / "api" / "pope")  # in item order, as one run
