"""povid_eval.vlm on a tiny random LLaVA built in a temp folder (no training): fast."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from povid_eval.core.errors import MissingAssetError
from povid_eval.vlm import VLM, build_tiny_llava, format_prompt, format_response, load_vlm, response_logprobs
from povid_eval.vlm.tokenizer import detokenize, vocab_from_texts

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "A red dog is on the left.",
    "Two cats, a bag and a t-shirt are next to the dog's bowl.",
    "Is there a cat in the image?",
    "Is there a bowl in the image?",
    "Yes",
    "No",
    "A blue car.",
]
SMALL = dict(
    vision_hidden=32,
    vision_layers=2,
    vision_heads=2,
    vision_intermediate=64,
    text_hidden=48,
    text_layers=2,
    text_heads=2,
    text_intermediate=96,
)


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    model, processor = build_tiny_llava(vocab_from_texts(TEXTS), seed=0, **SMALL)
    with torch.no_grad():  # sharper random logits: fewer near-ties, so greedy decoding says something
        model.lm_head.weight.mul_(20)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vlm(saved):
    return load_vlm(saved)


def test_save_load_round_trip(saved, vlm):
    model, _ = build_tiny_llava(vocab_from_texts(TEXTS), seed=0, **SMALL)
    assert (saved / "model.safetensors").stat().st_size < 2_000_000
    state = vlm.model.state_dict()
    for name, p in model.state_dict().items():
        if name.endswith("lm_head.weight"):
            torch.testing.assert_close(state[name], p * 20)
        else:
            torch.testing.assert_close(state[name], p)
    batch = vlm.encode(_images(1), [format_prompt("Describe this image.")])
    n_image = (64 // vlm.model.config.vision_config.patch_size) ** 2
    assert vlm.model.config.image_seq_length == n_image
    assert int((batch["input_ids"] == vlm.model.config.image_token_id).sum()) == n_image


def test_greedy_batch_1_equals_batch_8(vlm):
    images = _images(8)
    questions = ["Describe this image.", "Is there a cat in the image?", "Is there a bowl in the image?", "Yes"]
    prompts = [format_prompt(q) for q in questions * 2]
    batched = vlm.generate_ids(images, prompts, max_new_tokens=12)
    single = [vlm.generate_ids([im], [p], max_new_tokens=12)[0] for im, p in zip(images, prompts)]
    assert batched == single
    assert any(len(x) > 1 for x in batched)
    assert vlm.generate(images, prompts, max_new_tokens=12) == [vlm.decode(x) for x in single]


def test_sampling_is_seeded(vlm):
    images, prompts = _images(2), [format_prompt("Describe this image.")] * 2
    a = vlm.generate(images, prompts, do_sample=True, temperature=1.5, seed=3, max_new_tokens=10)
    b = vlm.generate(images, prompts, do_sample=True, temperature=1.5, seed=3, max_new_tokens=10)
    assert a == b


def test_sequence_logprobs_matches_manual_and_masks_prompt(vlm):
    images = _images(3, seed=1)
    prompts = [
        format_prompt("Describe this image."),
        format_prompt("Is there a cat in the image?"),
        format_prompt("Is there a bowl in the image?"),
    ]
    responses = ["A red dog is on the left.", "Yes", "No"]
    with torch.no_grad():
        got = vlm.sequence_logprobs(images, prompts, responses)
    assert got.shape == (3,)
    tok = vlm.tokenizer
    for i in range(3):  # manual: one unpadded sequence, log-softmax, response positions only
        batch = vlm.processor(
            images=[images[i]], text=[prompts[i] + format_response(responses[i])], return_tensors="pt"
        )
        n_prompt = len(vlm.processor(images=[images[i]], text=[prompts[i]])["input_ids"][0])
        ids = batch["input_ids"][0]
        assert ids[-1] == tok.eos_token_id
        with torch.no_grad():
            logits = vlm.model(**batch).logits[0]
        logp = torch.log_softmax(logits, -1)
        manual = sum(logp[t - 1, ids[t]] for t in range(n_prompt, len(ids)))
        torch.testing.assert_close(got[i], manual, rtol=1e-4, atol=1e-4)
    # token-id level: an empty response scores 0, and generated ids score without re-tokenizing
    pixel_values, prompt_ids = vlm.prompt_token_ids(images, prompts)
    with torch.no_grad():
        zero = response_logprobs(vlm.model, pixel_values, prompt_ids, [[], [], []], tok.pad_token_id)
        assert torch.all(zero == 0)
        gen = vlm.generate_ids(images, prompts, max_new_tokens=6, scorable=True)  # to be scored again
        scored = vlm.response_ids_logprobs(images, prompts, gen)
    assert torch.all(scored <= 0) and torch.all(scored > -1e4)


def test_sequence_logprobs_has_gradient(vlm):
    lp = vlm.sequence_logprobs(_images(1), [format_prompt("Describe this image.")], ["A blue car."])
    lp.sum().backward()
    assert vlm.model.lm_head.weight.grad is not None
    vlm.model.zero_grad(set_to_none=True)


def test_decode_reads_naturally(vlm):
    tok = vlm.tokenizer
    for text in ["A red dog is on the left.", "Two cats, a bag and a t-shirt are next to the dog's bowl. A blue car."]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert detokenize(tok, ids + [tok.eos_token_id, ids[0]]) == text
        assert vlm.decode(ids) == text
    assert vlm.decode(tok("yes", add_special_tokens=False)["input_ids"]) == "Yes"


def test_missing_paths_raise_missing_asset(tmp_path, saved):
    with pytest.raises(MissingAssetError, match="not found"):
        load_vlm(tmp_path / "nope")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((saved / "config.json").read_text())
    with pytest.raises(MissingAssetError, match="model.safetensors"):
        load_vlm(partial)
    with pytest.raises(MissingAssetError, match="adapter"):
        load_vlm(saved, adapter=tmp_path / "no_adapter")


def test_peft_adapter_round_trip(tmp_path, saved, vlm):
    from peft import LoraConfig, get_peft_model

    base = load_vlm(saved).model
    lora = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q|k|v|o)_proj", init_lora_weights=False),
    )
    lora.save_pretrained(tmp_path / "adapter")
    tuned = load_vlm(saved, adapter=tmp_path / "adapter")
    images, prompts = _images(2), [format_prompt("Describe this image.")] * 2
    with torch.no_grad():
        a = vlm.sequence_logprobs(images, prompts, ["A red dog.", "No"])
        b = tuned.sequence_logprobs(images, prompts, ["A red dog.", "No"])
        with tuned.model.disable_adapter():
            c = tuned.sequence_logprobs(images, prompts, ["A red dog.", "No"])
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, c)


@pytest.mark.skipif(not (ROOT / "models" / "base" / "model.safetensors").is_file(), reason="models/base not built")
def test_base_model_loads_and_generates():
    vlm = load_vlm(ROOT / "models" / "base")
    assert isinstance(vlm, VLM)
    (text,) = vlm.generate(_images(1), [format_prompt("Describe this image.")], max_new_tokens=40)
    assert text and text[0].isupper()
    assert (ROOT / "models" / "base" / "model.safetensors").stat().st_size < 10_000_000
