"""The image-reliance diagnostic: runs on diffusion-noised images (`run --image-noise`) and compare's section."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import models_on_base, point_at

from povid_eval import cli
from povid_eval.benches import registry
from povid_eval.core import paths
from povid_eval.core.errors import InputError
from povid_eval.report import compare, reliance
from povid_eval.run import runner
from povid_eval.vlm.noise import noisy_image

ROOT = Path(__file__).resolve().parents[1]


def fake_model(seen: list | None = None):
    """Answers that depend on the pixels' roughness (mean step between neighbouring pixels: under 20 for the
    world's clean images, over 90 at t = 500): a noised image makes the 'model' see a dog and say yes."""

    def generate(images, prompts, decoding):
        if seen is not None:
            seen.extend(np.asarray(im).copy() for im in images)
        out = []
        for im, p in zip(images, prompts):
            noisy = float(np.abs(np.diff(np.asarray(im, dtype=float), axis=1)).mean()) > 50
            if "Is there" in p:
                out.append("Yes" if noisy else "No")
            else:
                out.append("A kitchen with a sink and a dog." if noisy else "A kitchen with a sink.")
        return out

    return generate


def blind_model(images, prompts, decoding):
    return ["Yes" if "Is there" in p else "A kitchen with a sink and a dog." for p in prompts]


@pytest.fixture(scope="module")
def env(tiny_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("reliance")
    models_on_base(root, ("a", "b"))
    return root, tiny_env[0] / "benchmarks"


@pytest.fixture
def results(env, monkeypatch):
    root, benchmarks = env
    point_at(monkeypatch, root, benchmarks)
    out = root / "results"
    for model, generate in (("a", blind_model), ("b", fake_model())):
        for bench in ("chair", "pope"):
            for noise in (0, 500):
                if not paths.run_folder(out, model, bench, noise).joinpath("metrics.json").is_file():
                    runner.run(
                        model, bench, results=out, generate=generate, progress=False, limit=12, image_noise=noise
                    )
    return out


def test_noised_run_has_its_own_folder_protocol_and_seeded_noise(results, tmp_path):
    clean = json.loads((results / "runs/a/chair/metrics.json").read_text())
    noised = json.loads((results / "runs/a/noised-t500/chair/metrics.json").read_text())
    assert noised["overrides"] == {"image_noise": 500} and noised["protocol"]["image_noise"] == 500
    assert "image_noise" not in clean["protocol"] and clean["protocol_hash"] != noised["protocol_hash"]
    # the model is shown POVID's x_t of each image, seeded by the card's seed and the image's path: the same
    # noise for every model and every prompt of the image, whatever the batch
    seen = []
    runner.run("a", "chair", results=tmp_path, generate=fake_model(seen), progress=False, limit=2, image_noise=500)
    card = registry.load_card("chair").with_overrides({"image_noise": 500})
    items = runner.bench_items(card, limit=2)
    from PIL import Image

    want = [np.asarray(runner.noised(card, it.image, Image.open(it.image).convert("RGB"))) for it in items]
    assert all(np.array_equal(s, w) for s, w in zip(seen, want))
    direct = noisy_image(Image.open(items[0].image).convert("RGB"), 500, seed=runner.noise_seed(card, items[0].image))
    assert np.array_equal(seen[0], np.asarray(direct)) and not np.array_equal(seen[0], seen[1])


def test_the_tiny_model_on_noised_images(results, tmp_path):
    """The real path: the committed tiny base captions noised images; resuming adds nothing."""
    first = runner.run("a", "chair", results=tmp_path, progress=False, limit=3, image_noise=500)
    again = runner.run("a", "chair", results=tmp_path, progress=False, limit=3, image_noise=500)
    lines = (tmp_path / "runs/a/noised-t500/chair/samples.jsonl").read_text().splitlines()
    assert len(lines) == 3 and first["metrics"] == again["metrics"]
    assert first["protocol"]["image_noise"] == 500


def test_compare_reports_shifts_reliance_and_sources(results):
    compare.write_comparison("a", "b", ["chair", "pope"], results)
    md = (results / "compare" / "a_vs_b.md").read_text()
    assert "## Image reliance" in md and "### chair, t = 500" in md and "### pope, t = 500" in md
    sections = json.loads((results / "compare" / "a_vs_b.reliance.json").read_text())
    by_bench = {s["bench"]: s for s in sections}
    # a ignores the image: nothing moves; b says "dog"/"yes" only on noised images
    chair, pope = by_bench["chair"], by_bench["pope"]
    assert chair["reliance"]["a"] == 0 and chair["reliance"]["b"] > 0 and chair["reliance"]["ci"][0] > 0
    assert pope["reliance"]["a"] == 0 and pope["reliance"]["b"] == 1.0
    rows = {r["metric"]: r for r in chair["rows"]}
    assert rows["CHAIRi"]["shift_a"] == 0 and rows["CHAIRi"]["shift_b"] > 0
    assert rows["CHAIRi"]["delta"] == pytest.approx(rows["CHAIRi"]["shift_b"] - rows["CHAIRi"]["shift_a"])
    # a hallucinates the dog with and without the pixels (prior-driven); b names it only under noise, so it is
    # none of b's clean hallucinations (its sink, where there is none, it names with and without the pixels)
    assert chair["sources"]["a"]["prior_share"] == 1.0 and "dog" in chair["sources"]["a"]["top_prior"]
    b = chair["sources"]["b"]
    assert "dog" not in b["top_prior"] + b["top_pixel"] and b["prior"] == b["hallucinated"]
    assert "## Per-object grounding: chair" in md


def test_no_section_without_noised_runs_of_both(results, tmp_path):
    assert reliance.reliance_sections("a", "b", ["mme"], results) == []
    assert reliance.to_markdown("a", "b", []) == ""


def test_bad_noise_settings(results, capsys):
    for bad in ("0", "1000", "x"):
        with pytest.raises(SystemExit) as e:
            cli.main(["run", "--bench", "chair", "--model", "a", "--image-noise", bad, "--results", str(results)])
        assert e.value.code == 2
    assert "diffusion step in 1..999" in capsys.readouterr().err
    with pytest.raises(InputError, match="reserved"):
        paths.run_folder(results, "a", "noised-t500")
    with pytest.raises(InputError, match="image_noise"):
        registry.make_card(None, {"name": "x", "kind": "pope", "variant": "llava", "data": "d", "image_noise": 1000})


def test_compare_refuses_a_stale_noised_run(results, env, monkeypatch):
    root, _ = env
    card = root / "models" / "b.toml"
    before = card.read_text()
    monkeypatch.setattr(compare, "compare_models", lambda *a, **k: [])
    try:
        card.write_text(before + 'dtype = "bf16"\n')
        with pytest.raises(InputError, match="noised-t500.*--image-noise 500 --fresh"):
            reliance.reliance_sections("a", "b", ["chair"], results)
    finally:
        card.write_text(before)


def test_compare_refuses_noised_runs_of_another_protocol(results):
    path = results / "runs/b/noised-t500/chair/metrics.json"
    before = path.read_text()
    try:
        path.write_text(before.replace('"image_noise": 500', '"image_noise": 400'))
        with pytest.raises(InputError, match="different protocols"):
            reliance.reliance_sections("a", "b", ["chair"], results)
        path.write_text(before.replace('"image_noise": 500', '"image_noise": "500"'))
        with pytest.raises(InputError, match="overrides"):
            reliance.reliance_sections("a", "b", ["chair"], results)
    finally:
        path.write_text(before)
