"""povid_eval.vlm.convert: original-LLaVA checkpoints (written here from a tiny HF Llava) load as HF Llava."""

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from povid_eval.core.errors import MissingAssetError, PovidError
from povid_eval.vlm.build import CLIP_MEAN, CLIP_STD, build_tiny_llava
from povid_eval.vlm.convert import check_original_llava, is_original_llava, load_original_llava
from povid_eval.vlm.model import VLM
from povid_eval.vlm.tokenizer import format_prompt, vocab_from_texts

torch.set_num_threads(1)
TEXTS = ["A red dog is on the left.", "Is there a cat in the image?", "Yes", "No", "A blue car."]
SMALL = dict(
    vision_hidden=32,
    vision_layers=2,
    vision_heads=2,
    vision_intermediate=64,
    text_hidden=48,
    text_layers=1,
    text_heads=2,
    text_intermediate=96,
)
IMAGE_ID = 4  # <image>'s id in the tiny tokenizer (special tokens 0-4)
TO_ORIGINAL = (  # transformers 5 prefix -> original LLaVA prefix, written independently of convert.py
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("model.language_model.", "model."),
    ("lm_head.", "lm_head."),
)


@pytest.fixture(scope="module")
def hf():
    """The reference: a tiny HF Llava (lm_head sharpened) and its processor."""
    model, processor = build_tiny_llava(vocab_from_texts(TEXTS), seed=0, **SMALL)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model, processor


def _original_state(model, tower_in_ckpt=True, image_token=True):
    state = {}
    for key, value in model.state_dict().items():
        orig, new = next((o, n) for o, n in TO_ORIGINAL if key.startswith(o))
        if tower_in_ckpt or not key.startswith("model.vision_tower."):
            state[new + key[len(orig) :]] = value.clone().contiguous()
    if not image_token:  # an original LLaVA vocabulary has no <image>: drop its row, later ids move down by one
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            state[key] = torch.cat([state[key][:IMAGE_ID], state[key][IMAGE_ID + 1 :]])
    return state


def write_tower(folder: Path, model, processor, clip_model_format=False) -> Path:
    """A CLIP folder: config.json (CLIPVisionModel's, or a full CLIPModel's with vision_config), weights,
    preprocessor_config.json."""
    folder.mkdir(parents=True)
    tower = model.model.vision_tower
    processor.image_processor.save_pretrained(folder)
    if not clip_model_format:
        tower.save_pretrained(folder)
        return folder
    config = {
        "model_type": "clip",
        "architectures": ["CLIPModel"],
        "projection_dim": 32,
        "vision_config": tower.config.to_dict(),
        "text_config": {"hidden_size": 32},
    }
    (folder / "config.json").write_text(json.dumps(config))
    state = {"vision_model." + k: v.contiguous() for k, v in tower.state_dict().items()}
    state.update(
        {
            "text_model.embeddings.token_embedding.weight": torch.zeros(3, 32),
            "logit_scale": torch.ones(()),
            "visual_projection.weight": torch.zeros(32, 32),
        }
    )
    save_file(state, str(folder / "model.safetensors"))
    return folder


def write_original(
    folder: Path,
    model,
    processor,
    tower: Path | str,
    *,
    fmt="safetensors",
    tower_in_ckpt=True,
    image_token=True,
    **overrides,
) -> Path:
    """An original-format LLaVA-1.5 folder holding ``model``'s weights (fmt: safetensors, sharded or bin)."""
    folder.mkdir(parents=True)
    state = _original_state(model, tower_in_ckpt, image_token)
    text = model.config.text_config
    config = {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        "hidden_act": "silu",
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_attention_heads": text.num_attention_heads,
        "num_hidden_layers": text.num_hidden_layers,
        "num_key_value_heads": text.num_key_value_heads,
        "max_position_embeddings": text.max_position_embeddings,
        "rms_norm_eps": text.rms_norm_eps,
        "vocab_size": state["lm_head.weight"].shape[0],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "pretraining_tp": 1,
        "rope_scaling": None,
        "use_cache": True,
        "mm_vision_tower": str(tower),
        "mm_hidden_size": model.config.vision_config.hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat",
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        **overrides,
    }
    (folder / "config.json").write_text(json.dumps(config))
    if fmt == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    elif fmt == "sharded":
        keys = sorted(state)
        shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for name, part in shards.items():
            save_file({k: state[k] for k in part}, str(folder / name))
        index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        save_file(state, str(folder / "model.safetensors"))
    processor.tokenizer.save_pretrained(folder)
    if not image_token:
        _drop_image_token(folder)
    return folder


def _drop_image_token(folder: Path) -> None:
    shift = lambda i: i - (i > IMAGE_ID)  # noqa: E731
    tj = json.loads((folder / "tokenizer.json").read_text())
    tj["added_tokens"] = [dict(t, id=shift(t["id"])) for t in tj["added_tokens"] if t["content"] != "<image>"]
    tj["model"]["vocab"] = {k: shift(v) for k, v in tj["model"]["vocab"].items() if k != "<image>"}
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc.pop("image_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))


def _image(w=64, h=64, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _logits(model, processor, image=None):
    batch = processor(
        images=[image or _image()], text=[format_prompt("Is there a cat in the image?")], return_tensors="pt"
    )
    with torch.no_grad():
        return batch, model(**batch).logits


@pytest.fixture(scope="module")
def tower(hf, tmp_path_factory):
    return write_tower(tmp_path_factory.mktemp("clip") / "clip-vit", *hf)


@pytest.mark.parametrize("fmt", ["safetensors", "sharded", "bin"])
def test_full_checkpoint_logits_equal(hf, tower, tmp_path, fmt):
    model, processor = hf
    path = write_original(tmp_path / "llava", model, processor, tower, fmt=fmt)
    assert is_original_llava(path) and check_original_llava(path) == []
    converted, conv_processor = load_original_llava(path)
    assert not converted.training and converted.config.image_token_id == IMAGE_ID
    assert converted.config.image_seq_length == model.config.image_seq_length == 16
    ref_batch, ref = _logits(model, processor)
    batch, out = _logits(converted, conv_processor)
    assert torch.equal(batch["input_ids"], ref_batch["input_ids"])
    assert torch.equal(batch["pixel_values"], ref_batch["pixel_values"])
    assert torch.equal(out, ref)


def test_tower_from_clip_folder_and_image_token_added(hf, tmp_path):
    """Tower weights only in a CLIPModel folder (vision_model.* kept, text keys dropped) whose
    preprocessor_config.json has openai/clip-vit-large-patch14-336's old style; a tokenizer without <image>
    gets it appended, with zero embedding / lm_head rows: the other logits are the reference's."""
    model, processor = hf
    tower = write_tower(tmp_path / "clip", model, processor, clip_model_format=True)
    old_style = {
        "crop_size": 64,
        "size": 64,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
    }
    (tower / "preprocessor_config.json").write_text(json.dumps(old_style))
    path = write_original(tmp_path / "llava", model, processor, tower, tower_in_ckpt=False, image_token=False)
    converted, conv_processor = load_original_llava(path)
    n = model.config.text_config.vocab_size
    new_id = lambda i: n - 1 if i == IMAGE_ID else i - (i > IMAGE_ID)  # noqa: E731
    assert converted.config.image_token_id == n - 1 and len(conv_processor.tokenizer) == n
    ref_batch, ref = _logits(model, processor)
    batch, out = _logits(converted, conv_processor)
    assert batch["input_ids"].tolist() == [[new_id(i) for i in ref_batch["input_ids"][0].tolist()]]
    assert torch.equal(batch["pixel_values"], ref_batch["pixel_values"])
    keep = [i for i in range(n) if i != IMAGE_ID]
    torch.testing.assert_close(out[..., [new_id(i) for i in keep]], ref[..., keep], rtol=0, atol=1e-6)
    assert torch.equal(out[..., n - 1], torch.zeros_like(out[..., n - 1]))


def _expand2square(image, fill):
    w, h = image.size
    result = Image.new(image.mode, (max(w, h), max(w, h)), fill)
    result.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    return result


def test_pad_to_square_like_llava(hf, tower, tmp_path):
    """image_aspect_ratio 'pad': a wide image is centred on a square of the mean colour, then resized/cropped."""
    model, processor = hf
    path = write_original(tmp_path / "llava", model, processor, tower, fmt="bin")
    conv_model, conv_processor = load_original_llava(path)
    vlm = VLM(model=conv_model, processor=conv_processor)  # image_aspect_ratio "pad", the default
    wide = _image(96, 40, seed=1)
    fill = tuple(int(x * 255) for x in CLIP_MEAN)
    got = conv_processor.image_processor(vlm.prepare_images([wide]), return_tensors="pt")["pixel_values"]
    want = processor.image_processor(_expand2square(wide, fill), return_tensors="pt")["pixel_values"]
    assert torch.equal(got, want)
    unpadded = processor.image_processor(wide, return_tensors="pt")["pixel_values"]
    assert not torch.equal(got, unpadded)


def _write_lora(folder: Path, base_model, r=4, alpha=8, rslora=False, seed=1):
    """A LLaVA LoRA folder over the language model's q/v/down projections + a new projector in
    non_lora_trainables.bin; returns (A/B per HF module name, the new projector state)."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    adapters, tensors = {}, {}
    for name, module in base_model.named_modules():
        if name.startswith("model.language_model.") and name.endswith(("q_proj", "v_proj", "down_proj")):
            a = torch.randn(r, module.in_features, generator=g) * 0.1
            b = torch.randn(module.out_features, r, generator=g) * 0.1
            adapters[name] = (a, b)
            orig = "base_model.model.model." + name.removeprefix("model.language_model.")
            tensors[orig + ".lora_A.weight"], tensors[orig + ".lora_B.weight"] = a, b
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "lora_dropout": 0.05,
        "target_modules": ["q_proj", "v_proj", "down_proj"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    projector = {
        k: torch.randn(v.shape, generator=g) * 0.2
        for k, v in base_model.model.multi_modal_projector.state_dict().items()
    }
    non_lora = {
        f"base_model.model.model.mm_projector.{0 if k.startswith('linear_1') else 2}.{k.split('.')[-1]}": v
        for k, v in projector.items()
    }
    torch.save(non_lora, folder / "non_lora_trainables.bin")
    return adapters, projector


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_over_base_equals_peft_merge(hf, tower, tmp_path, rslora):
    from peft import LoraConfig, get_peft_model

    model, processor = hf
    base = write_original(tmp_path / "stage1", model, processor, tower)
    lora = tmp_path / "stage2-lora"
    adapters, projector = _write_lora(lora, model, rslora=rslora)
    (lora / "config.json").write_text((base / "config.json").read_text())  # as LLaVA saves it; no tokenizer
    assert is_original_llava(lora) and check_original_llava(lora, model_base=base) == []
    converted, conv_processor = load_original_llava(lora, model_base=base)

    ref = copy.deepcopy(model)
    ref.model.multi_modal_projector.load_state_dict(projector)
    peft_model = get_peft_model(
        ref,
        LoraConfig(
            r=4,
            lora_alpha=8,
            use_rslora=rslora,
            lora_dropout=0.0,
            target_modules=r".*language_model.*\.(q_proj|v_proj|down_proj)",
        ),
    )
    with torch.no_grad():
        for name, (a, b) in adapters.items():
            module = peft_model.get_submodule("base_model.model." + name)
            module.lora_A["default"].weight.copy_(a)
            module.lora_B["default"].weight.copy_(b)
    merged = peft_model.merge_and_unload().eval()
    _, want = _logits(merged, processor)
    _, got = _logits(converted, conv_processor)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    _, base_logits = _logits(model, processor)
    assert not torch.allclose(got, base_logits, atol=1e-3)


class Payload:
    pass


@pytest.mark.parametrize(
    "payload", [{"x": Payload()}, {"f": os.system}, [torch.zeros(2)]], ids=["instance", "function", "list"]
)
def test_non_lora_trainables_must_be_a_tensor_dict(hf, tower, tmp_path, payload):
    model, processor = hf
    base = write_original(tmp_path / "stage1", model, processor, tower)
    lora = tmp_path / "lora"
    _write_lora(lora, model)
    torch.save(payload, lora / "non_lora_trainables.bin")
    with pytest.raises(PovidError, match="non_lora_trainables.bin: refused") as e:
        load_original_llava(lora, model_base=base)
    assert "\n" not in str(e.value)


def test_one_line_errors(hf, tower, tmp_path):
    model, processor = hf
    lora = tmp_path / "lora"
    _write_lora(lora, model)
    with pytest.raises(MissingAssetError, match="model_base") as e:
        load_original_llava(lora)
    bad = write_original(tmp_path / "linear", model, processor, tower, mm_projector_type="linear")
    with pytest.raises(PovidError, match="mm_projector_type 'linear' is not supported") as e2:
        load_original_llava(bad)
    startend = write_original(tmp_path / "startend", model, processor, tower, mm_use_im_start_end=True)
    with pytest.raises(PovidError, match="mm_use_im_start_end"):
        load_original_llava(startend)
    path = write_original(tmp_path / "llava", model, processor, tower)
    with pytest.raises(MissingAssetError, match="vision tower") as e3:
        load_original_llava(path, vision_tower=tmp_path / "no-such-clip")
    hub = write_original(tmp_path / "hub", model, processor, "povid-test-nobody/clip-vit-tiny")
    with pytest.raises(MissingAssetError, match="hf download povid-test-nobody/clip-vit-tiny") as e4:
        load_original_llava(hub)
    assert 'vision_tower = "DIR"' in str(e4.value)
    extra = write_original(tmp_path / "extra", model, processor, tower)
    save_file({"model.mm_projector.4.weight": torch.zeros(2, 2)}, str(extra / "model.safetensors"))
    with pytest.raises(PovidError, match=r"no transformers Llava counterpart, e\.g\. model\.mm_projector\.4") as e5:
        load_original_llava(extra)
    for err in (e, e2, e3, e4, e5):
        assert "\n" not in str(err.value)


def test_check_lists_problems(hf, tower, tmp_path):
    model, processor = hf
    assert not is_original_llava(tmp_path)
    hf_folder = tmp_path / "hf"
    model.save_pretrained(hf_folder)
    assert not is_original_llava(hf_folder)
    path = write_original(tmp_path / "llava", model, processor, tower, tower_in_ckpt=False)
    (path / "model.safetensors").unlink()
    (path / "tokenizer.json").unlink()
    problems = check_original_llava(path, vision_tower=tmp_path / "nowhere")
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert any("no weights" in p for p in problems) and any("tokenizer" in p for p in problems)
    assert any("nowhere" in p and "vision_tower" in p for p in problems)
    lora = tmp_path / "lora"
    _write_lora(lora, model)
    assert [p for p in check_original_llava(lora) if "model_base" in p]
    assert "checkpoint folder not found" in check_original_llava(tmp_path / "absent")[0]
    # the checkpoint lacks tower weights and so does the CLIP folder
    bare_tower = tmp_path / "bare-clip"
    write_tower(bare_tower, model, processor)
    (bare_tower / "model.safetensors").unlink()
    path2 = write_original(tmp_path / "llava2", model, processor, bare_tower, tower_in_ckpt=False)
    assert any("no vision-tower weights" in p for p in check_original_llava(path2))


def test_sentencepiece_tokenizer_model_only(hf, tower, tmp_path):
    """Real LLaVA-1.5 / POVID folders ship only a sentencepiece tokenizer.model (+ tokenizer_config.json):
    it loads, <image> is added after the vocabulary, and a response is scored with the ids it has inside the
    whole sequence (sentencepiece marks a word start differently at the start of a text)."""
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS * 40 + ["USER: ASSISTANT: describe this image"] * 40))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=64,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    model, processor = hf
    model = copy.deepcopy(model)
    model.resize_token_embeddings(64)  # the sentencepiece vocabulary, no <image>
    path = write_original(tmp_path / "llava", model, processor, tower, image_token=True)
    for name in ("tokenizer.json", "special_tokens_map.json", "chat_template.jinja"):
        (path / name).unlink(missing_ok=True)
    (tmp_path / "tokenizer.model").rename(path / "tokenizer.model")
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True, "add_eos_token": False}
        )
    )
    converted, conv_processor = load_original_llava(path)
    assert conv_processor.tokenizer.convert_tokens_to_ids("<image>") == 64 == converted.config.image_token_id
    vlm = VLM(model=converted, processor=conv_processor)
    prompt = vlm.prompt("vicuna_v1", "Is there a cat in the image?")
    batch = vlm.encode([_image()], [prompt])
    assert (batch["input_ids"] == 64).sum() == 16
    # LLaVA's tokenizer_image_token: chunks around <image> tokenized on their own, later chunks without <s>
    tok = conv_processor.tokenizer
    chunks = [tok(chunk)["input_ids"] for chunk in prompt.split("<image>")]
    assert batch["input_ids"][0].tolist() == chunks[0] + [64] * 16 + chunks[1][1:]
    answer = "A red dog is on the left."
    full = vlm.tokenizer(f"ASSISTANT: {answer}", add_special_tokens=False)["input_ids"]
    ids = vlm.response_token_ids([answer])[0]
    assert ids[:-1] == full[-(len(ids) - 1) :] and ids[-1] == vlm.tokenizer.eos_token_id
    assert vlm.sequence_logprobs([_image()], [prompt], [answer]).isfinite().all()


def test_tokenization_check_warns_and_uses_llava_chunks(hf, tower, tmp_path, capsys, monkeypatch):
    """Where the processor tokenizes a prompt differently from LLaVA's tokenizer_image_token (e.g. a sentencepiece
    tokenizer outside Llama's legacy mode drops the word-start piece after <image>), check_tokenization says so
    on stderr and encodes prompts LLaVA's way from then on: chunks around <image> tokenized on their own, the
    later chunks without their <s>."""

    model, processor = hf
    path = write_original(tmp_path / "llava", copy.deepcopy(model), processor, tower, image_token=True)
    converted, conv_processor = load_original_llava(path)
    vlm = VLM(model=converted, processor=conv_processor, path=str(path))
    prompt = vlm.prompt("llava_v1_nosys", "Is there a cat in the image?")
    assert vlm.check_tokenization("llava_v1_nosys", ["Is there a cat in the image?"]) is True  # agree: no warning
    assert not vlm.chunked and capsys.readouterr().err == ""
    image = converted.config.image_token_id
    without_word_start = [t for t in vlm.llava_prompt_ids(prompt)]
    k = without_word_start.index(image)
    without_word_start.pop(k + 1)  # what a non-legacy tokenizer does to the piece after <image>
    monkeypatch.setattr(vlm, "processor_prompt_ids", lambda p: without_word_start)
    assert vlm.check_tokenization("llava_v1_nosys", ["Is there a cat in the image?"]) is False
    assert "tokenizes prompts differently from LLaVA's" in capsys.readouterr().err and vlm.chunked
    tok = conv_processor.tokenizer
    chunks = [tok(chunk)["input_ids"] for chunk in prompt.split("<image>")]
    offset = 1 if chunks[0][:1] == [tok.bos_token_id] else 0
    n_image = int(
        (conv_processor(images=[_image()], text=[prompt], return_tensors="pt")["input_ids"][0] == image).sum()
    )
    ids = vlm.encode([_image()], [prompt])["input_ids"][0].tolist()
    assert ids == chunks[0] + [image] * n_image + chunks[1][offset:]
