"""The length-control frontier: StopBias, the continuation tokens, a small sweep of the tiny base on a small
synthetic world (cached, bias 0 = the plain run, a rerun writes the same bytes), and the interpolation."""

import json
from pathlib import Path

import pytest
import torch

from povid_eval import cli
from povid_eval.benches.chair import BENCH as CHAIR
from povid_eval.run import frontier as fr
from povid_eval.run import runner

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "models" / "base"
LIMIT = 20
BIASES = "0,7,7.5"
needs_base = pytest.mark.skipif(not (BASE / "model.safetensors").is_file(), reason="models/base not built")


def test_stop_bias_moves_eos_up_and_continuations_down():
    scores = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    before = scores.clone()
    out = fr.StopBias(2, [4, 5], 1.5)(torch.zeros(2, 3, dtype=torch.long), scores)
    expected = before.clone()
    expected[:, 2] += 1.5
    expected[:, [4, 5]] -= 1.5
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(scores, before, rtol=0, atol=0)  # the input is left as it was
    assert torch.equal(fr.StopBias([2], [4, 5], 0.0)(None, scores), scores)
    assert fr.StopBias(2, [5, 4], 1.5) == fr.StopBias([2], [4, 5], 1.5) != fr.StopBias(2, [4, 5], 2)


@needs_base
def test_continuation_ids_of_the_tiny_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(BASE), local_files_only=True)
    ids = fr.continuation_token_ids(tok)
    assert sorted(tok.convert_ids_to_tokens(ids)) == [",", "\u2581and"]
    assert tok.eos_token_id not in ids


@pytest.mark.parametrize(
    "recall, expected",
    [
        (0.4, 0.10),
        (0.5, 0.12),
        (0.6, 0.14),
        (0.7, 0.15),
        (0.8, 0.16),
        (0.45, 0.11),
        (0.75, 0.155),
        (0.39, None),
        (0.81, None),
    ],
)
def test_chair_i_at_recall_interpolates_linearly(recall, expected):
    points = [
        {"Recall": 0.8, "CHAIRi": 0.16},
        {"Recall": 0.4, "CHAIRi": 0.10},
        {"Recall": 0.6, "CHAIRi": 0.14},
        {"Recall": 0.7, "CHAIRi": 0.15},
        {"Recall": 0.7, "CHAIRi": 0.30},
    ]  # same recall: the lower counts
    got = fr.metric_at_recall(points, recall, CHAIR.tradeoff)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_chair_i_at_recall_edge_cases():
    assert fr.metric_at_recall([], 0.5, CHAIR.tradeoff) is None
    assert fr.metric_at_recall([{"Recall": 0.5, "CHAIRi": 0.2}], 0.5, CHAIR.tradeoff) == 0.2
    assert fr.metric_at_recall([{"Recall": 0.5, "CHAIRi": 0.2}], 0.6, CHAIR.tradeoff) is None


@pytest.fixture(scope="module")
def bench_env(tiny_env, tmp_path_factory):
    """The shared 24-image world and a CHAIR card (the committed protocol) on it; the model is models/base."""
    root = tmp_path_factory.mktemp("frontier")
    (root / "benchmarks").mkdir()
    world = tiny_env[0] / "world"
    text = (ROOT / "benchmarks" / "chair.toml").read_text().replace('data = "data/world"', f'data = "{world}"')
    (root / "benchmarks" / "chair.toml").write_text(text)
    return root, {"POVID_EVAL_BENCHMARKS": str(root / "benchmarks")}


@needs_base
def test_sweep_cli_plain_run_and_cached_rerun(bench_env, monkeypatch, capsys, tmp_path):
    root, variables = bench_env
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "results"
    assert (
        cli.main(["frontier", "--model", "base", "--biases", BIASES, "--limit", str(LIMIT), "--results", str(out)]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"frontier of base on chair (n = {LIMIT})"
    assert lines[2].split() == ["bias", "CHAIRs", "CHAIRi", "Recall", "mean_words", "grounding_gap"]
    assert [line.split()[0] for line in lines[3:]] == ["0", "7", "7.5"]

    path = out / "runs" / "base" / "frontier" / "chair" / "frontier.json"
    written = path.read_bytes()
    result = json.loads(written)
    assert result["model"] == "base" and result["bench"] == "chair" and result["biases"] == [0.0, 7.0, 7.5]
    points = result["points"]
    assert [p["Recall"] for p in points] == sorted(p["Recall"] for p in points)
    by_bias = {p["bias"]: p for p in points}
    for bias in (0, 7, 7.5):
        samples = out / "runs" / "base" / "frontier" / "chair" / f"bias_{bias}" / "samples.jsonl"
        assert len(samples.read_text().splitlines()) == LIMIT
    assert by_bias[7.5]["mean_words"] < by_bias[7.0]["mean_words"] < by_bias[0.0]["mean_words"]
    assert by_bias[7.5]["Recall"] < by_bias[0.0]["Recall"]

    plain = runner.run("base", "chair", limit=LIMIT, results=tmp_path / "plain", progress=False)
    assert all(by_bias[0.0][k] == v for k, v in plain["metrics"].items() if isinstance(v, (int, float)))
    assert result["protocol_hash"] == plain["protocol_hash"]

    def no_generation(*args, **kwargs):
        raise AssertionError("a cached frontier must not generate")

    monkeypatch.setattr(fr, "for_card", no_generation)
    again = fr.frontier("base", "chair", biases=[7.5, 0, 7], limit=LIMIT, results=out, progress=False)
    assert again == result and path.read_bytes() == written
