"""Plots: read fake result files in the real layout, write valid PNGs atomically, byte-identical on rerun."""

import json

import pytest
from PIL import Image

from povid_eval.core.errors import InputError
from povid_eval.report import plots

SPLITS = ("random", "popular", "adversarial")


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _iv(v, w):
    return [v - w, v + w]


def _fake_results(root, models=("base", "povid")):
    for k, m in enumerate(models):
        d = 0.05 * k
        chair = {
            "CHAIRi": 0.19 - d,
            "CHAIRs": 0.75 - 2 * d,
            "Len": 0.27,
            "Recall": 0.79 - d / 2,
            "mean_words": 23.5 - 10 * d,
        }
        _write(
            root / "runs" / m / "chair" / "metrics.json",
            {
                "bench": "chair",
                "n": 500,
                "metrics": chair,
                "intervals": {key: _iv(v, 0.01 * max(v, 1)) for key, v in chair.items()},
            },
        )
        pope, ivs = {"mean_f1": 0.85 + d}, {"mean_f1": _iv(0.85 + d, 0.01)}
        for i, s in enumerate(SPLITS):
            split = {
                "TP": 1379,
                "FP": 150,
                "TN": 1336,
                "FN": 109,
                "n": 2976,
                "accuracy": 0.9 - 0.1 * i,
                "f1": 0.91 - 0.1 * i + d,
                "precision": 0.9 - 0.15 * i,
                "recall": 0.93 + d / 2,
                "yes_ratio": 0.5 + 0.15 * i,
            }
            pope[s] = split
            ivs.update(
                {f"{s}.{key}": _iv(split[key], 0.01) for key in ("accuracy", "f1", "precision", "recall", "yes_ratio")}
            )
        _write(root / "runs" / m / "pope" / "metrics.json", {"bench": "pope", "metrics": pope, "intervals": ivs})
        subtasks = {
            s: {
                "acc": 50.0,
                "acc_plus": 5.0 + 10 * i,
                "n_questions": 80,
                "other_num": 0,
                "score": 55.0 + 30 * i - 100 * d,
            }
            for i, s in enumerate(("color", "count", "existence"))
        }
        mme_iv = {"cognition": [0.0, 0.0], "perception": _iv(250.0, 30)}
        mme_iv.update({f"subtasks.{s}.score": _iv(v["score"], 10) for s, v in subtasks.items()})
        _write(
            root / "runs" / m / "mme" / "metrics.json",
            {
                "bench": "mme",
                "metrics": {"cognition": 0.0, "perception": 250.0 - 100 * d, "subtasks": subtasks},
                "intervals": mme_iv,
            },
        )
        _write(
            root / "runs" / m / "mmhal" / "metrics.json",
            {
                "bench": "mmhal",
                "metrics": {
                    "hallucination_rate": 0.43 - d,
                    "n": 96,
                    "parse_failures": 0,
                    "score": 2.6 + d,
                    "per_type": {"adversarial": 0.25, "attribute": 1.8},
                },
                "intervals": {"hallucination_rate": _iv(0.43 - d, 0.1), "score": _iv(2.6 + d, 0.4)},
            },
        )
    points = [
        {
            "bias": b,
            "CHAIRi": 0.19 - 0.02 * b,
            "CHAIRs": 0.75 - 0.1 * b,
            "Len": 0.27 - 0.02 * b,
            "Recall": 0.79 - 0.09 * b,
            "mean_words": 23.5 - 1.5 * b,
            "n": 500,
        }
        for b in (5.0, 2.0, 0.0)
    ]
    _write(
        root / "runs" / "base" / "frontier" / "chair" / "frontier.json",
        {
            "bench": "chair",
            "model": "base",
            "biases": [0.0, 2.0, 5.0],
            "limit": 0,
            "points": points,
            "protocol_hash": "x",
        },
    )
    return root


BENCHES = ["chair", "pope", "mme", "mmhal"]


def test_plots_are_valid_pngs_and_deterministic(tmp_path):
    results = _fake_results(tmp_path / "results")
    models = ["base", "povid"]
    first = plots.comparison_plots(models, BENCHES, results, tmp_path / "a", frontier_model="base")
    second = plots.comparison_plots(models, BENCHES, results, tmp_path / "b", frontier_model="base")
    assert [p.name for p in first] == ["metric_bars.png", "chair_tradeoff.png", "pope_splits.png", "mme_subtasks.png"]
    for a, b in zip(first, second):
        assert a.is_file() and a.parent == tmp_path / "a"
        with Image.open(a) as im:
            assert im.format == "PNG"
            im.verify()
            w, h = im.size
        assert 400 <= w <= 2000 and 300 <= h <= 1500
        assert a.read_bytes() == b.read_bytes(), a.name
    # atomic write leaves no temp files behind; rewriting in place gives the same bytes
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in first)
    again = plots.comparison_plots(models, ["mme"], results, tmp_path / "a", frontier_model="base")
    assert again[-1].read_bytes() == second[3].read_bytes()


def test_missing_metrics_names_the_run_command(tmp_path):
    results = _fake_results(tmp_path / "results")
    (results / "runs" / "povid" / "pope" / "metrics.json").unlink()
    with pytest.raises(InputError, match=r"povid-eval run --bench pope --model povid") as e:
        plots.comparison_plots(["base", "povid"], ["pope"], results, tmp_path / "out", frontier_model="base")
    assert e.value.path == results / "runs" / "povid" / "pope" / "metrics.json"
    assert not (tmp_path / "out" / "pope_splits.png").exists()


def test_missing_frontier_names_the_frontier_command(tmp_path):
    results = _fake_results(tmp_path / "results", models=("base", "povid"))
    with pytest.raises(InputError, match=r"povid-eval frontier --model povid"):
        plots.load_frontier("povid", "chair", results)
    assert plots.tradeoff(["base"], "chair", results, tmp_path / "out", frontier_model="povid") is None


def test_missing_headline_metric_is_located(tmp_path):
    results = _fake_results(tmp_path / "results", models=("base",))
    path = results / "runs" / "base" / "mmhal" / "metrics.json"
    data = json.loads(path.read_text())
    del data["metrics"]["score"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"metrics\.score: missing"):
        plots.metric_bars(["base"], ["mmhal"], results, tmp_path / "out")
