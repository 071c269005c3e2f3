"""The tiny base's pretraining (world/pretrain.py) on the shared tiny world, a few steps per stage: it writes a
loadable model with its train_info, and a failure while saving leaves the earlier folder as it was."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from povid_eval.core.errors import InputError
from povid_eval.world import pretrain as pt

SIZES = {"vision_hidden": 32, "vision_intermediate": 64, "text_hidden": 32, "text_intermediate": 64}


def _config():
    cfg = pt.PretrainConfig(
        text_scenes=40, vision_images=24, tune_images=24, render_workers=1, sizes={**pt.PretrainConfig().sizes, **SIZES}
    )
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


def test_a_tower_taken_from_another_base_is_that_bases_tower(trained, tiny_env, tmp_path):
    """--tower: stage 0 is skipped and the vision tower's weights are the given base's, bit for bit; the source
    is recorded with its hash. A base with another tower shape is refused with the file and field named."""
    from safetensors.torch import load_file

    source, _ = trained
    info = pt.pretrain(
        tiny_env[0] / "world", tmp_path / "b2", config=_config(), tower=source, command="test", log=lambda line: None
    )
    assert info["stages"]["vision"]["steps"] == 0 and info["stages"]["vision"]["from"] == str(source)
    a, b = load_file(source / "model.safetensors"), load_file(tmp_path / "b2" / "model.safetensors")
    tower = [k for k in a if "vision_tower." in k]
    assert tower and all(a[k].equal(b[k]) for k in tower)
    other = _config()
    other.sizes = {**other.sizes, "vision_hidden": 48}
    with pytest.raises(InputError, match=r"config\.json.*vision_config.*hidden_size"):
        pt.pretrain(tiny_env[0] / "world", tmp_path / "b3", config=other, tower=source, command="t", log=lambda x: None)
    assert not (tmp_path / "b3").exists()


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
    records, pixels = pt.fresh_images(5, 0, processor)
    assert pixels.shape == (5, 3, 64, 64) and [r.image_id for r in records] == list(range(5))
    for r in records:
        assert sum(r.counts.values()) == len(r.boxes) and r.seen <= set(r.counts) and r.seen
        assert set(r.colours) == set(r.counts)
        assert set(r.masks) == r.seen  # a visible-pixel mask for each category the tower can see
    again, _ = pt.fresh_images(5, 0, processor)
    assert [r.boxes for r in again] == [r.boxes for r in records]


def test_fresh_tune_images_are_their_own_stream_with_the_worlds_captions():
    """The language stages' extra renders: ids above every split's, other scenes than the tower's, and five
    reference captions each whose canonical one names every visible object (and at most one slip more)."""
    from povid_eval.vlm.build import build_tiny_llava
    from povid_eval.world.generate import captions, make_image

    _, processor = build_tiny_llava(["a"])
    records, pixels = pt.fresh_images(4, 0, processor, stream="tune")
    tower, _ = pt.fresh_images(4, 0, processor)
    assert pixels.shape == (4, 3, 64, 64)
    assert [r.image_id for r in records] == [pt.FRESH_TUNE_ID + k for k in range(4)]
    assert [r.boxes for r in records] != [r.boxes for r in tower]
    for r in records:
        assert r.captions == captions(make_image(0, "tune", r.image_id), 0) and len(r.captions) == 5
        assert not r.masks


def test_patch_targets_follow_the_visible_pixels_where_masks_are_known():
    """A 32 x 32 image in 2 x 2 patches. A cup's box spans all four patches, but its pixels fill the top-left
    patch and stray 3 pixels into the top-right one (under MASK_SHARE of its pixels and PATCH_SHARE of the
    patch): from the mask, only the top-left patch shows a cup; from the box alone, all four do."""
    import numpy as np

    from povid_eval.benches.coco import ImageRecord

    mask = np.zeros((32, 32), bool)
    mask[2:14, 2:14] = True
    mask[5, 16:19] = True
    box = [("cup", (2, 2, 20, 20))]
    record = ImageRecord(1, None, 32, 32, {"cup": 1}, box, [], seen={"cup"}, colours={"cup": "red"})
    categories = ["cup", "dog"]
    by_box = pt.patch_targets([record], categories, 2)
    record.masks = {"cup": np.packbits(mask)}
    by_mask = pt.patch_targets([record], categories, 2)
    cup, red = 0, len(categories) + list(pt.PALETTE).index("red")
    assert by_box[0, :, cup].tolist() == [1, 1, 1, 1]
    assert by_mask[0, :, cup].tolist() == by_mask[0, :, red].tolist() == [1, 0, 0, 0]
    assert by_mask[0, :, 1].sum() == 0
    mask[20:30, 20:30] = True  # a second instance covering most of the bottom-right patch
    record.masks = {"cup": np.packbits(mask)}
    assert pt.patch_targets([record], categories, 2)[0, :, cup].tolist() == [1, 0, 0, 1]


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
    hidden = pt.lm_hidden(model, input_ids, torch.ones_like(input_ids), model.model.multi_modal_projector(features))
    loss = pt.grounding_loss(model, hidden, input_ids, word_ids, targets)
    edited = hidden.detach().clone()
    edited[0, -1] += 1.0  # a text position
    assert torch.allclose(pt.grounding_loss(model, edited, input_ids, word_ids, targets), loss.detach())
    loss.backward()
    assert model.model.multi_modal_projector.linear_1.weight.grad.abs().sum() > 0


def test_patch_words_name_the_dominant_category_and_keep_every_visible_one():
    """A 32 x 32 image in 2 x 2 patches: a laptop fills the top row, a mouse sits in the top-right patch beside
    it (it wins no patch by area, so it takes the laptop's repeated one), a dog covers most of bottom-left."""
    boxes = [("laptop", (0, 0, 32, 16)), ("mouse", (26, 10, 4, 4)), ("dog", (0, 16, 12, 16))]
    assert pt.patch_words(boxes, 32, 32, 2) == ["laptop", "mouse", "dog", None]
    assert pt.patch_words([], 32, 32, 2) == [None] * 4
    assert pt.patch_words([("cup", (0, 0, 32, 32))], 32, 32, 2) == ["cup"] * 4


def test_reading_loss_pulls_the_projector_to_the_patch_words_embeddings():
    """Zero when the projector outputs each patch word's embedding; its gradient reaches the projector, not the
    embeddings (they are the target)."""
    import torch

    from povid_eval.vlm.build import build_tiny_llava

    model, _ = build_tiny_llava(["cup", "dog", "a"], seed=0, **SIZES)
    n = model.config.image_seq_length
    features = torch.randn(2, n, model.config.vision_config.hidden_size)
    target_ids = torch.full((2, n), model.config.image_token_id)
    loss = pt.reading_loss(model, model.model.multi_modal_projector(features), target_ids)
    loss.backward()
    assert loss.item() > 0
    assert model.model.multi_modal_projector.linear_2.weight.grad.abs().sum() > 0
    assert model.model.get_input_embeddings().weight.grad is None
    with torch.no_grad():
        target = model.model.get_input_embeddings()(target_ids)
        model.model.multi_modal_projector.linear_2.weight.zero_()
        model.model.multi_modal_projector.linear_2.bias.copy_(target[0, 0])
    assert pt.reading_loss(model, model.model.multi_modal_projector(features), target_ids).item() < 1e-10


def test_pretrain_with_the_reading_curriculum_records_it(tiny_env, tmp_path):
    cfg = replace(_config(), text_context=0.5, reading=1.0)
    info = pt.pretrain(tiny_env[0] / "world", tmp_path / "base", config=cfg, command="test", log=lambda line: None)
    assert (info["config"]["text_context"], info["config"]["reading"]) == (0.5, 1.0)
    assert all(loss == loss for stage in ("text", "align", "tune") for _, loss in info["stages"][stage]["losses"])


@pytest.mark.parametrize("option", ["grounding", "text_context", "reading"])
def test_the_word_reading_options_refuse_categories_that_share_a_last_word(tiny_env, tmp_path, option):
    """They read one word per category (its name's last word): a world with "dog" and "hot dog" is refused with
    an input error naming the world, before any training, and nothing is written."""
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_env[0] / "world", world)
    path = world / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    names = {c["name"] for c in data["categories"]}
    victim = next(c for c in data["categories"] if c["name"] != "dog")
    assert "dog" in names
    victim["name"] = "hot dog"
    path.write_text(json.dumps(data))
    cfg = replace(_config(), **{option: 0.5})
    with pytest.raises(InputError, match="same word"):
        pt.pretrain(world, tmp_path / "base", config=cfg, command="test", log=lambda line: None)
    assert not (tmp_path / "base").exists()


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
