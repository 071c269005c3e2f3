"""`povid-eval compare`: paired tables from result files, plots, cached reruns, clear errors."""

import re
from pathlib import Path

import pytest
from conftest import models_on_base, point_at

from povid_eval import cli
from povid_eval.core.errors import InputError
from povid_eval.report import compare
from povid_eval.run import results as run_results
from povid_eval.run import runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tiny_env, tmp_path_factory):
    """The shared tiny world's cards; models a, b, c (the committed base; their answers are faked)."""
    root = tmp_path_factory.mktemp("compare")
    models_on_base(root, ("a", "b", "c"))
    return root, tiny_env[0] / "benchmarks"


@pytest.fixture
def results(env, monkeypatch):
    root, benchmarks = env
    point_at(monkeypatch, root, benchmarks)
    out = root / "results"

    def fake(answer_yes: bool):
        def generate(images, prompts, decoding):
            return [
                "Yes" if answer_yes else "No" if "Is there" in p else "A view of a kitchen with a sink and a cup."
                for p in prompts
            ]

        return generate

    for model, yes in (("a", True), ("b", True), ("c", False)):
        for bench in ("chair", "pope"):
            if not (out / "runs" / model / bench / "metrics.json").is_file():
                runner.run(model, bench, results=out, generate=fake(yes), progress=False)
    return out


def test_identical_models_have_zero_deltas_and_intervals_containing_zero(results):
    rows = compare.compare_models("a", "b", ["chair", "pope"], results, n_resamples=2000)
    assert rows and all(r["delta"] == 0 and r["p_holm"] == 1 for r in rows)
    assert all(r["ci"][0] <= 0 <= r["ci"][1] for r in rows if r["test"] == "paired bootstrap")
    mcnemar = {r["metric"] for r in rows if r["test"].startswith("McNemar")}
    assert mcnemar and mcnemar <= {"random.accuracy", "popular.accuracy", "adversarial.accuracy"}


def test_compare_writes_tables_and_plots_and_reruns_byte_identical(results, capsys):
    assert cli.main(["compare", "a", "c", "--bench", "pope", "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "| pope | mean_f1 |" in printed and "95% CI" in printed
    files = sorted((results / "compare").glob("a_vs_c.*")) + sorted((results / "plots" / "a_vs_c").glob("*.png"))
    assert [f.suffix for f in files] == [".csv", ".md", ".png", ".png"]
    before = {f: f.read_bytes() for f in files}
    assert cli.main(["compare", "a", "c", "--bench", "pope", "--results", str(results)]) == 0
    assert {f: f.read_bytes() for f in files} == before
    row = next(
        line
        for line in before[results / "compare" / "a_vs_c.csv"].decode().splitlines()
        if line.startswith("pope,adversarial.yes_ratio")
    )
    assert float(row.split(",")[4]) < 0  # c says "No" to everything


def test_missing_results_and_unknown_models_are_clear(results, tmp_path, capsys):
    with pytest.raises(InputError, match=re.escape("run `povid-eval run --bench chair --model a` first")):
        run_results.aligned_units("a", "chair", tmp_path)
    assert cli.main(["compare", "a", "nosuchmodel", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown model 'nosuchmodel'" in err


def test_chair_i_at_matched_recall_against_the_baseline_frontier(results):
    import json

    from povid_eval.benches import registry
    from povid_eval.run.frontier import metric_at_recall

    card = registry.load_card("chair")
    units, from_sums = run_results.aligned_units("a", "chair", results)
    assert compare.matched_recall_row("c", card, units, from_sums, results) is None  # c has no frontier
    points = [{"bias": 2, "Recall": 0.0, "CHAIRi": 0.0}, {"bias": 0, "Recall": 1.0, "CHAIRi": 1.0}]
    frontier = results / "runs" / "c" / "frontier" / "chair" / "frontier.json"
    frontier.parent.mkdir(parents=True)
    frontier.write_text(json.dumps({"points": points}))
    try:
        row = compare.matched_recall_row("c", card, units, from_sums, results, n_resamples=500)
    finally:
        frontier.unlink()
    recall = json.loads((results / "runs" / "a" / "chair" / "metrics.json").read_text())["metrics"]["Recall"]
    assert row["a"] == pytest.approx(metric_at_recall(points, recall, registry.bench_of(card).tradeoff))
    assert row["metric"] == "CHAIRi at matched recall"
    assert row["ci"][0] <= row["delta"] <= row["ci"][1] or row["ci"][0] == row["ci"][1]
