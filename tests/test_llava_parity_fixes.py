"""The differences from LLaVA's own evaluation code that moved a number (issue 13), each fixed and pinned here:
llava-hf images padded to a square as LLaVA-1.5 does, no special token blocked in generation, no model-card
[generation] table that nothing read, POPE labels checked against the questions before any generation,
MMHal prompted with llava_v1, and POVID's release CHAIR protocol as a card of its own."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import patched_benchmarks
from PIL import Image

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.core.errors import InputError, MissingAssetError
from povid_eval.prompts import named_templates
from povid_eval.run import runner
from povid_eval.vlm.model import load_vlm, pad_to_square


def _wide(width=90, height=40, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_pad_to_square_is_llavas_expand2square():
    image = _wide()
    padded = pad_to_square(image, (122, 116, 104))
    assert padded.size == (90, 90)
    top = (90 - 40) // 2
    assert np.array_equal(np.asarray(padded)[top : top + 40], np.asarray(image))
    assert np.asarray(padded)[0, 0].tolist() == [122, 116, 104] and np.asarray(padded)[-1, -1].tolist() == [
        122,
        116,
        104,
    ]
    tall = pad_to_square(_wide(30, 70), (1, 2, 3))
    assert tall.size == (70, 70) and np.asarray(tall)[:, :20].reshape(-1, 3).tolist()[0] == [1, 2, 3]
    square = _wide(50, 50)
    assert pad_to_square(square, (0, 0, 0)) is square


def test_hf_cards_pad_like_llava_unless_told_square(tiny_env):
    root, _ = tiny_env
    padded = load_vlm(root / "tiny")  # image_aspect_ratio "pad", the default
    square = load_vlm(root / "tiny", image_aspect_ratio="square")
    image = _wide()
    mean = padded.processor.image_processor.image_mean
    expected = padded.processor.image_processor(
        pad_to_square(image, tuple(int(x * 255) for x in mean)), return_tensors="pt"
    )["pixel_values"]
    prompt = padded.prompt("llava_v1_nosys", "Describe this image.")
    got = padded.encode([image], [prompt])["pixel_values"]
    assert torch.equal(got, expected)
    cropped = square.encode([image], [prompt])["pixel_values"]
    assert torch.equal(cropped, square.processor.image_processor(image, return_tensors="pt")["pixel_values"])
    assert not torch.equal(got, cropped)
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        load_vlm(root / "tiny", image_aspect_ratio="anyres")


def test_image_aspect_ratio_is_a_card_field_in_the_fingerprint(tmp_path):
    from povid_eval.run.fingerprint import fingerprint, fingerprint_hash

    (tmp_path / "a.toml").write_text('path = "x"\n')
    (tmp_path / "b.toml").write_text('path = "x"\nimage_aspect_ratio = "square"\n')
    a, b = cards.load_model_card("a", tmp_path), cards.load_model_card("b", tmp_path)
    assert a.image_aspect_ratio == "pad" and b.image_aspect_ratio == "square"
    assert fingerprint_hash(fingerprint(a)) != fingerprint_hash(fingerprint(b))
    (tmp_path / "c.toml").write_text('path = "x"\nimage_aspect_ratio = "anyres"\n')
    with pytest.raises(InputError, match="image_aspect_ratio: must be one of pad, square"):
        cards.load_model_card("c", tmp_path)


def test_generation_blocks_no_special_token(tiny_env):
    """LLaVA's generate blocks nothing: a model that wants to say <image> says it; only scorable answers
    (training's y_l^n, scored again after their prompt) suppress it."""
    root, _ = tiny_env
    vlm = load_vlm(root / "tiny")

    def favour_image_token(module, inputs, logits):  # the image token is the most likely next token everywhere
        logits[..., vlm.image_token_id] += 1000.0
        return logits

    vlm.model.lm_head.register_forward_hook(favour_image_token)
    prompt = vlm.prompt("llava_v1_nosys", "Describe this image.")
    free = vlm.generate_ids([_wide()], [prompt], max_new_tokens=3)[0]
    scorable = vlm.generate_ids([_wide()], [prompt], max_new_tokens=3, scorable=True)[0]
    assert vlm.image_token_id in free and vlm.image_token_id not in scorable


def test_model_cards_have_no_generation_table(tmp_path):
    (tmp_path / "m.toml").write_text('path = "x"\n\n[generation]\nmax_new_tokens = 512\n')
    with pytest.raises(InputError, match=r"m.toml: generation: a model card has no \[generation\] table"):
        cards.load_model_card("m", tmp_path)
    for name in ("base", "llava-1.5-7b", "povid-7b"):  # the shipped cards load
        cards.load_model_card(name)


def _pope_card(tiny_env, tmp_path, change_labels):
    root, _ = tiny_env
    data = tmp_path / "world"
    shutil.copytree(root / "world" / "pope", data / "pope")
    (data / "images").symlink_to(root / "world" / "images")
    change_labels(data / "pope")
    benches = tmp_path / "benchmarks"
    benches.mkdir()
    text = (root / "benchmarks" / "pope.toml").read_text().replace(str(root / "world"), str(data))
    (benches / "pope.toml").write_text(text.replace("world = true\n", ""))
    return benches


def _drop_last_line(folder):
    path = folder / "coco_pope_random.json"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def _change_a_label_text(folder):
    path = folder / "coco_pope_popular.json"
    lines = path.read_text().splitlines()
    row = json.loads(lines[3])
    row["text"] = "Is there a giraffe in the image?"
    lines[3] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("change, fragment", [(_drop_last_line, "lines for the"), (_change_a_label_text, "line 4")])
def test_pope_labels_are_checked_against_the_questions_before_any_generation(
    tiny_env, tmp_path, monkeypatch, change, fragment
):
    benches = _pope_card(tiny_env, tmp_path, change)
    for k, v in tiny_env[1].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("POVID_EVAL_BENCHMARKS", str(benches))

    def never(*args, **kwargs):
        raise AssertionError("nothing may be generated before the labels are checked")

    with pytest.raises(MissingAssetError, match=f"POPE labels match the questions: .*{fragment}"):
        runner.run("tiny", "pope", results=tmp_path / "r", generate=never, progress=False)
    assert not (tmp_path / "r" / "runs" / "tiny" / "pope" / "samples.jsonl").exists()
    assert "e3e39262" in registry.bench_of(registry.load_card("pope")).data_checks(registry.load_card("pope"))[-1].fix


def test_mmhal_is_prompted_with_llava_v1(tiny_env, tmp_path, monkeypatch):
    """LLaVA-RLHF's MMHal script prompts with conv_llava_v1 ("... a curious human ..."): the real card names
    that template, and the runner hands a card's template to the generation instead of the model card's."""
    assert registry.load_card("real/mmhal-bench").template == "llava_v1"
    llava_v1 = named_templates()["llava_v1"]
    assert llava_v1.startswith(
        "A chat between a curious human and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the human's questions. "
    )
    assert llava_v1.endswith("USER: <image>\n{prompt} ASSISTANT:")
    patched_benchmarks(
        tiny_env, tmp_path, monkeypatch, "mmhal", 'judge = "rule"', 'judge = "rule"\ntemplate = "llava_v1"'
    )
    seen = set()

    def generate(images, prompts, decoding, template=""):
        seen.add(template)
        return ["There is a dog."] * len(prompts)

    runner.run("tiny", "mmhal", results=tmp_path / "r", generate=generate, progress=False)
    assert seen == {"llava_v1"}


def test_release_chair_card_samples_one_image_at_a_time(tiny_env, tmp_path, monkeypatch):
    card = registry.load_card("povid-paper/chair-coco-povid")
    d = card.decoding
    assert (d.do_sample, d.temperature, d.top_p, d.max_new_tokens, d.batch_size) == (True, 0.2, 1.0, 1024, 1)
    assert card.options.image_ids == registry.load_card("real/chair-coco").options.image_ids
    patched_benchmarks(tiny_env, tmp_path, monkeypatch, "chair", "[decoding]", "[decoding]\nbatch_size = 1")
    sizes = []

    def generate(images, prompts, decoding):
        sizes.append(len(prompts))
        return ["A dog."] * len(prompts)

    runner.run("tiny", "chair", results=tmp_path / "r", generate=generate, progress=False, batch_size=16)
    assert sizes and set(sizes) == {1}
