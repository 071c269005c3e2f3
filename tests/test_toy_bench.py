"""A fifth bench in one folder (tests/toybench/), registered, goes through run, score, compare, leaderboard
and doctor with no other module edited; and one contract test runs every registered bench through items ->
score -> units -> from_sums -> bootstrap."""

import json
import shutil

import numpy as np
import pytest
import toybench

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.cli import main
from povid_eval.core.stats import bootstrap_intervals
from povid_eval.run import runner


@pytest.fixture
def toy(tiny_env, tmp_path, monkeypatch):
    """The toy bench registered, its card (benchmarks/toy.toml) beside copies of the tiny world's cards, and
    two models (tiny, twin: the same weights)."""
    root, variables = tiny_env
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(registry.BENCHES, "toy", toybench.BENCH)
    world = root / "world"
    instances = json.loads((world / "annotations" / "instances_val.json").read_text())
    rows = [
        {
            "id": f"q{i}",
            "image": im["file_name"],
            "question": "Which room or place is this?",
            "answer": im.get("scene", "kitchen"),
        }
        for i, im in enumerate(instances["images"][:8])
    ]
    data = tmp_path / "toydata"
    data.mkdir()
    (data / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    benches = tmp_path / "benchmarks"
    shutil.copytree(root / "benchmarks", benches)
    (benches / "toy.toml").write_text(
        f'kind = "toy"\nvariant = "contains"\ndata = "{data}"\n\n[files]\n'
        f'questions = "questions.jsonl"\nimages = "{world / "images" / "val"}"\n\n'
        "[decoding]\nmax_new_tokens = 6\n"
    )
    monkeypatch.setenv("POVID_EVAL_BENCHMARKS", str(benches))
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    (models / "twin.toml").write_text((models / "tiny.toml").read_text())
    monkeypatch.setenv("POVID_EVAL_MODELS", str(models))
    return tmp_path


def cli(capsys, *argv):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_fifth_bench_goes_through_every_command(toy, capsys):
    results = toy / "results"
    rc, out, err = cli(capsys, "run", "--bench", "toy", "--model", "tiny", "--results", results, "--json")
    assert rc == 0, err
    metrics = json.loads(out)
    assert metrics["bench"] == "toy" and metrics["n"] == 8 and "accuracy" in metrics["intervals"]
    samples = results / "runs" / "tiny" / "toy" / "samples.jsonl"
    rc, out, err = cli(
        capsys, "score", "toy", "--answers", samples, "--questions", toy / "toydata" / "questions.jsonl", "--json"
    )
    assert rc == 0, err
    assert json.loads(out)["metrics"] == metrics["metrics"]
    every_scene = "A kitchen, a street, an office, a living room or a park."  # twin is always right
    runner.run(
        "twin", "toy", results=results, progress=False, generate=lambda images, prompts, d: [every_scene] * len(prompts)
    )
    rc, out, err = cli(capsys, "compare", "tiny", "twin", "--bench", "toy", "--results", results)
    assert rc == 0, err
    assert "| toy | accuracy |" in out and (results / "plots" / "tiny_vs_twin" / "metric_bars.png").is_file()
    rc, out, err = cli(capsys, "leaderboard", "--bench", "toy", "--results", results)
    assert rc == 0, err
    assert "Toy accuracy" in (results / "leaderboard-toy.md").read_text()
    rc, out, err = cli(capsys, "doctor", "--bench", "toy", "--results", results)
    assert rc == 0, err
    assert "toy: images" in out and "8 images" in out


def test_every_registered_bench_meets_the_contract(toy):
    """items -> (faked) answers -> score -> units: from_sums of the summed units gives the reported metrics,
    and the bootstrap runs on them."""
    for name, bench in registry.BENCHES.items():
        card = registry.load_card(name)
        items = runner.card_items(card)
        assert items and len({it.key for it in items}) == len(items), name
        samples = [
            (k + 1, it.record | {"key": it.key, "prompt": it.prompt, "text": "Yes, a kitchen with a sink."})
            for k, it in enumerate(items)
        ]
        result = bench.score(card, samples, with_units=True, **bench.prepare(card))
        matrix, from_sums = result.pop("units")
        assert result["bench"] == bench.name and result["n"] > 0, name
        point = from_sums(matrix.sum(0))
        for metric in bench.metrics:
            node = result["metrics"]
            for part in metric.key.split("."):
                node = node[part]
            assert np.isclose(float(point[metric.key]), node), (name, metric.key)
        intervals = bootstrap_intervals(matrix, from_sums, n_resamples=50, seed=0)
        assert all(lo <= hi for lo, hi in (v for v in intervals.values() if None not in v)), name


def test_cards_of_the_fifth_bench_are_checked_by_the_bench(toy):
    bad = toy / "benchmarks" / "bad.toml"
    bad.write_text('kind = "toy"\nvariant = "exact"\ndata = "x"\n[files]\nquestions = "q"\nimages = "i"\n')
    with pytest.raises(cards.InputError, match="unknown toy variant 'exact'"):
        registry.load_card("bad")
