"""The tiny base's pretraining (world/pretrain.py) on the shared tiny world, a few steps per stage: it writes a
loadable model with its train_info, and a failure while saving leaves the earlier folder as it was."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from povid_eval.world import pretrain as pt

SIZES = {"vision_hidden": 32, "vision_intermediate": 64, "text_hidden": 32, "text_intermediate": 64}


def _config():
    cfg = pt.PretrainConfig(text_scenes=40, vision_images=24, sizes={**pt.PretrainConfig().sizes, **SIZES})
    for stage in ("vision", "text", "align", "tune"):
        setattr(cfg, stage, replace(getattr(cfg, stage), steps=2, warmup=1, batch_size=4))
    return cfg


@pytest.fixture(scope="module")
def trained(tiny_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "base"
    info = pt.pretrain(tiny_env[0] / "world", out, config=_config(), command="test", log=lambda line: None)
    return out, info


def test_pretrain_writes_a_loadable_model_and_its_train_info(trained):
    from povid_eval.vlm import load_vlm

    out, info = trained
    assert json.loads((out / "train_info.json").read_text()) == info
    assert [s["steps"] for s in info["stages"].values()] == [2, 2, 2, 2]
    assert load_vlm(out).model.config.text_config.num_hidden_layers == 4
    assert [p.name for p in out.parent.iterdir()] == ["base"]  # no temporary folder left beside it


def test_a_failed_save_leaves_the_earlier_model(trained, tiny_env, monkeypatch):
    out, _ = trained
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pt, "atomic_write_json", fail)
    with pytest.raises(OSError):
        pt.pretrain(tiny_env[0] / "world", out, config=_config(), command="test", log=lambda line: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["base"]


def test_fresh_vision_images_carry_the_annotations_patch_targets_read():
    """Stage 0's fresh renders: one record per image with its boxes, counts, colours and visible categories
    (never a category the image lacks), and pixel values as the processor makes them."""
    from povid_eval.vlm.build import build_tiny_llava

    _, processor = build_tiny_llava(["a"])
    records, pixels = pt.fresh_vision_images(5, 0, processor)
    assert pixels.shape == (5, 3, 64, 64) and [r.image_id for r in records] == list(range(5))
    for r in records:
        assert sum(r.counts.values()) == len(r.boxes) and r.seen <= set(r.counts) and r.seen
        assert set(r.colours) == set(r.counts)
    again, _ = pt.fresh_vision_images(5, 0, processor)
    assert [r.boxes for r in again] == [r.boxes for r in records]


def test_the_module_entry_reports_errors_as_the_cli_does(tmp_path):
    """``python -m povid_eval.world.pretrain`` reports a missing world as ``povid-eval pretrain`` does: one line,
    exit 2, nothing written."""
    out = tmp_path / "model"
    run = subprocess.run(
        [sys.executable, "-m", "povid_eval.world.pretrain", "--world", str(tmp_path / "no-world"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("povid-eval: error: ") and len(run.stderr.strip().splitlines()) == 1
    assert "no-world" in run.stderr and not out.exists()
