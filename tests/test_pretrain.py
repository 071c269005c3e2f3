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


def test_grounding_targets_are_what_the_patches_up_to_each_one_show():
    import torch

    patch = torch.zeros(1, 4, 3)
    patch[0, 1, 0] = 1  # category 0 in patch 1
    patch[0, 3, 2] = 1  # category 2 in the last patch
    running = pt.grounding_targets(patch)
    assert running[0].tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 1]]
    assert torch.equal(running[:, -1], patch.amax(1))  # the last image token: the whole image


def test_pretrain_with_the_grounding_loss_records_it(tiny_env, tmp_path):
    cfg = replace(_config(), grounding=5.0)
    info = pt.pretrain(tiny_env[0] / "world", tmp_path / "base", config=cfg, command="test", log=lambda line: None)
    assert info["config"]["grounding"] == 5.0
    assert all(loss == loss for stage in ("align", "tune") for _, loss in info["stages"][stage]["losses"])  # no NaN


def test_grounding_loss_reads_the_category_words_at_the_image_positions_only():
    """The loss sees the image positions' hidden states and nothing else: changing a text position's hidden
    state leaves it as it was; its gradient reaches the projector through the language model."""
    import torch

    from povid_eval.vlm.build import build_tiny_llava

    model, processor = build_tiny_llava(["cup", "dog", "a"], seed=0, **SIZES)
    n = model.config.image_seq_length
    tok = processor.tokenizer
    input_ids = torch.tensor([[tok.bos_token_id] + [model.config.image_token_id] * n + tok("a cup")["input_ids"][1:]])
    features = torch.randn(1, n, model.config.vision_config.hidden_size)
    word_ids = torch.tensor(
        [tok(" cup", add_special_tokens=False)["input_ids"][-1], tok(" dog", add_special_tokens=False)["input_ids"][-1]]
    )
    targets = pt.grounding_targets(torch.randint(0, 2, (1, n, 2)).float())
    hidden = pt.lm_hidden(model, input_ids, torch.ones_like(input_ids), features)
    loss = pt.grounding_loss(model, hidden, input_ids, word_ids, targets)
    edited = hidden.detach().clone()
    edited[0, -1] += 1.0  # a text position
    assert torch.allclose(pt.grounding_loss(model, edited, input_ids, word_ids, targets), loss.detach())
    loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0


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
