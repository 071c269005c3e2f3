"""The tower probe (world/probe.py): a linear readout of the vision tower against the captions, same counts."""

import json

import pytest
import torch

from povid_eval import cli
from povid_eval.benches.chair.grounding import signal_detection
from povid_eval.world import probe


def test_tally_counts_hits_and_false_alarms_over_the_chair_sets():
    rows = [
        {"image_id": 1, "gt_objects": ["dog", "bench"], "cooc_absent": ["frisbee", "person"]},
        {"image_id": 2, "gt_objects": ["car"], "cooc_absent": ["truck"]},
    ]
    named = {"1": {"dog", "frisbee", "cat"}, "2": {"car", "truck"}}
    t = probe.tally(named, rows)
    assert t == {"hits": 2, "present": 3, "false_alarms": 2, "absent": 3}
    s = probe.summary(t)
    d_prime, criterion = signal_detection(2, 3, 2, 3)
    assert s["named_present"] == pytest.approx(2 / 3) and s["named_cooc_absent"] == pytest.approx(2 / 3)
    assert s["d_prime"] == pytest.approx(float(d_prime)) == pytest.approx(0.0, abs=1e-12)
    assert s["criterion"] == pytest.approx(float(criterion))


def test_the_probe_reads_a_category_that_one_patch_shows():
    g = torch.Generator().manual_seed(0)
    n, patches, dims = 300, 4, 6
    labels = (torch.rand(n, dims, generator=g) < 0.4).float()
    features = 0.3 * torch.randn(n, patches, dims, generator=g)
    where = torch.randint(patches, (n, dims), generator=g)
    for i in range(n):  # category c shows in one random patch, as feature c
        for c in range(dims):
            if labels[i, c]:
                features[i, where[i, c], c] += 3.0
    head = probe.fit_probe(features[:200], labels[:200], steps=400, seed=0)
    said = probe.probe_scores(head, features[200:]) > 0
    assert (said == labels[200:].bool()).float().mean() > 0.95


def test_cli_on_the_tiny_world_matches_the_captions_chair_scores(use_tiny_env, tmp_path, capsys):
    root = use_tiny_env
    results = tmp_path / "results"
    assert cli.main(["run", "--bench", "chair", "--model", "tiny", "--results", str(results)]) == 0
    capsys.readouterr()
    out = probe.probe("tiny", root / "world", results, steps=20)
    metrics = json.loads((results / "runs" / "tiny" / "chair" / "metrics.json").read_text())["metrics"]
    assert out["images"] == 6 and out["probe"]["train_images"] == 16
    assert out["captions"]["named_present"] == pytest.approx(metrics["Recall"])
    assert out["captions"]["named_cooc_absent"] == pytest.approx(metrics["named_cooc_absent"])
    assert out["captions"]["d_prime"] == pytest.approx(metrics["d_prime"])
    assert set(out["tower"]) == {"named_present", "named_cooc_absent", "d_prime", "criterion"}
    rc = probe.main(["--model", "tiny", "--world", str(root / "world"), "--results", str(results), "--steps", "5"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and lines[0].startswith("tiny on 6 images")
    assert [x.split()[0] for x in lines[1:]] == ["tower", "captions"]


def test_a_model_without_a_chair_run_gets_one_line_and_exit_2(use_tiny_env, tmp_path, capsys):
    rc = probe.main(["--model", "tiny", "--world", str(use_tiny_env / "world"), "--results", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "details.jsonl: not found" in err[0] and "povid-eval run --bench chair" in err[0]


def test_a_broken_details_line_is_named(use_tiny_env, tmp_path, capsys):
    folder = tmp_path / "results" / "runs" / "tiny" / "chair"
    folder.mkdir(parents=True)
    good = {"image_id": 1, "gt_objects": [], "cooc_absent": [], "mentions": []}
    (folder / "details.jsonl").write_text(json.dumps(good) + '\n{"image_id": 2}\n')
    rc = probe.main(["--model", "tiny", "--world", str(use_tiny_env / "world"), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "details.jsonl:2" in err and "expected a CHAIR details row" in err


def test_an_api_model_has_no_tower_to_probe(tmp_path, monkeypatch, capsys):
    (tmp_path / "api.toml").write_text('backend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\napi_model = "m"\n')
    monkeypatch.setenv("POVID_EVAL_MODELS", str(tmp_path))
    rc = probe.main(["--model", "api", "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "served over an API" in err and len(err.splitlines()) == 1


def test_a_lora_model_is_probed_through_its_base_tower(use_tiny_env, tmp_path, monkeypatch):
    from transformers import LlavaForConditionalGeneration

    from povid_eval.train.loop import add_lora

    root = use_tiny_env
    add_lora(LlavaForConditionalGeneration.from_pretrained(root / "tiny"), r=2, alpha=4).save_pretrained(
        tmp_path / "adapter"
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tuned.toml").write_text(f'path = "{root / "tiny"}"\nadapter = "{tmp_path / "adapter"}"\n')
    monkeypatch.setenv("POVID_EVAL_MODELS", str(tmp_path / "models"))
    folder = tmp_path / "results" / "runs" / "tuned" / "chair"
    folder.mkdir(parents=True)
    image = json.loads((root / "world" / "annotations" / "instances_val.json").read_text())["images"][0]["id"]
    row = {"image_id": image, "gt_objects": [], "cooc_absent": [], "mentions": []}
    (folder / "details.jsonl").write_text(json.dumps(row) + "\n")
    out = probe.probe("tuned", root / "world", tmp_path / "results", steps=5)
    assert out["images"] == 1 and out["tower"]["named_present"] == 0.0
