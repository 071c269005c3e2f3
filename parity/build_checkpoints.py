"""Build tiny RANDOM LLaVA-1.5-layout checkpoints with LLaVA's own code (llava-torch 1.2.2.post1), seeded.

    .venv-ref/bin/python parity/build_checkpoints.py OUT [--seed 0] [--merge-dtype fp16|fp32]
        [--lora-dtype fp32|bf16] [--adapter-bin]

Writes, under OUT (created; existing files are overwritten):

    OUT/clip-vit-tiny-patch14-336/   CLIPVisionModel + CLIPImageProcessor (save_pretrained): LLaVA-1.5's geometry
                                     (image 336, patch 14 -> 576 patches, quick_gelu, OpenAI CLIP mean/std,
                                     bicubic resize + centre crop to 336) with hidden size 32 and 3 layers.
    OUT/llava-tiny-base/             a full LLaVA-1.5 checkpoint (LlavaLlamaForCausalLM, model_type "llava_llama"):
                                     config.json, generation_config.json, model.safetensors (no vision-tower
                                     weights, as the released LLaVA-1.5 checkpoints: the tower comes from the folder
                                     named by mm_vision_tower), tokenizer.model + tokenizer_config.json +
                                     special_tokens_map.json (slow LlamaTokenizer, sentencepiece BPE trained here).
    OUT/llava-tiny-lora/             a LoRA run over llava-tiny-base as llava/train/train.py saves it with
                                     --lora_enable: config.json, adapter_config.json, adapter_model.safetensors
                                     (adapter_model.bin with --adapter-bin, as older peft wrote), README.md (peft's),
                                     non_lora_trainables.bin (the trained mm_projector, keys
                                     base_model.model.model.mm_projector.{0,2}.{weight,bias}).
                                     fp32 by default; --lora-dtype bf16 as finetune_lora.sh's --bf16 True.
                                     No tokenizer: LLaVA's builder reads it from model_base.
    OUT/llava-tiny-merged/           what scripts/merge_lora_weights.py writes from base + lora: LLaVA's own
                                     load_pretrained_model(lora, base, "llava-tiny-lora", device_map="cpu") then
                                     model.save_pretrained + tokenizer.save_pretrained. Like the real script, the merge
                                     runs in fp16 (the builder hard-codes it) and the saved weights, vision tower
                                     included (model.vision_tower.vision_tower.vision_model.*), are fp16;
                                     --merge-dtype fp32 merges and saves in fp32 instead.
    OUT/llava-tiny-hf/               the llava-hf folder (LlavaForConditionalGeneration + LlavaProcessor) that
                                     transformers' own conversion script writes from llava-tiny-base (see
                                     build_llava_hf: the script is run, with its 4.37.2 bugs worked around).
    OUT/manifest.json                what was built: sizes, seeds, sha256 of every file.

Folder names matter to LLaVA's builder (get_model_name_from_path = the last path component): they contain "llava",
and only the LoRA folder contains "lora". config.json's mm_vision_tower is the ABSOLUTE path of the CLIP folder
(LLaVA accepts any existing path), so build the checkpoints where they will be used, or rewrite that key.

Everything is deterministic for a given --seed (torch generators seeded per tensor name; the sentencepiece model is
trained single-threaded on a fixed corpus).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import shutil
import sys
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llava_runtime  # noqa: E402

llava_runtime.offline()

import torch  # noqa: E402

TOWER_DIR, BASE_DIR, LORA_DIR, MERGED_DIR, HF_DIR, TEXT_DIR = (
    "clip-vit-tiny-patch14-336",
    "llava-tiny-base",
    "llava-tiny-lora",
    "llava-tiny-merged",
    "llava-tiny-hf",
    "vicuna-tiny",
)

# The tiny geometry. Vision: LLaVA-1.5's CLIP ViT-L/14-336 layout, narrow. Language: a Llama-2/Vicuna layout, narrow.
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=336,
    patch_size=14,
    num_channels=3,
    projection_dim=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    hidden_act="silu",
    initializer_range=0.02,
    tie_word_embeddings=False,
    pretraining_tp=1,
    rope_scaling=None,
    use_cache=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
VOCAB_SIZE = 1000  # sentencepiece BPE with byte fallback (3 specials + 256 bytes + merges + characters) ...
LLAMA_VOCAB = 32000  # ... padded to Llama's size (_llama_sized)
LORA_R, LORA_ALPHA, LORA_DROPOUT = 8, 16, 0.05  # LLaVA-1.5's LoRA ratio (r 128, alpha 256), tiny
MODEL_MAX_LENGTH = 2048  # LLaVA-1.5 training's --model_max_length (saved as tokenizer_model_max_length)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# English text for the tokenizer: LLaVA's conversation system prompts and roles, the bench prompts, captions.
SYSTEMS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.",
]
QUESTIONS = [
    "Describe this image.",
    "Describe this image in detail.",
    "Please describe this image in detail.",
    "What is in the image?",
    "What is happening in this picture?",
    "Provide a one-sentence caption for the provided image.",
    "Answer the question using a single word or phrase.",
    "Please answer yes or no.",
    "Is there a {} in the image?",
    "Are there any {}s in the picture?",
    "How many {}s are there in the image?",
    "What color is the {}?",
    "Where is the {} located in the image?",
]
OBJECTS = (
    "person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop sign parking "
    "meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase "
    "frisbee skis snowboard sports ball kite baseball bat glove skateboard surfboard tennis racket bottle wine "
    "glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot pizza donut cake chair "
    "couch potted plant bed dining table toilet tv laptop mouse remote keyboard cell phone microwave oven toaster "
    "sink refrigerator book clock vase scissors teddy hair drier toothbrush"
).split()
CAPTION_PARTS = (
    ["A", "The", "Two", "Three", "Several", "A group of", "A small", "A large", "An old", "A young"],
    ["man", "woman", "child", "dog", "cat", "horse", "bird", "car", "bus", "train", "boat", "plane", "pizza"],
    [
        "is sitting on",
        "is standing next to",
        "is walking along",
        "is riding",
        "is holding",
        "is eating",
        "is parked near",
        "is lying on",
        "is flying over",
        "is looking at",
    ],
    [
        "a wooden table",
        "the street",
        "a grassy field",
        "the beach",
        "a busy road",
        "a kitchen counter",
        "the snow",
        "a red couch",
        "the river",
        "a city sidewalk",
        "a plate",
        "the sky",
    ],
    [
        ".",
        " in the afternoon.",
        " on a sunny day.",
        " while people watch.",
        " near a building.",
        " with trees in the background.",
        " at night.",
    ],
)
ANSWERS = ["Yes", "No", "yes", "no", "One", "Two", "Three", "Red", "Blue", "Green", "White", "Black"]


def corpus_lines() -> list[str]:
    """A fixed, order-stable English corpus (no randomness from Python's hash seed)."""
    lines = list(SYSTEMS)
    for q in QUESTIONS:
        lines += [q.format(o) for o in OBJECTS] if "{}" in q else [q]
    a, b, c, d, e = CAPTION_PARTS
    i = 0
    for w1 in a:
        for w2 in b:
            lines.append(f"{w1} {w2} {c[i % len(c)]} {d[(3 * i) % len(d)]}{e[(7 * i) % len(e)]}")
            i += 1
    for i, o in enumerate(OBJECTS):
        lines.append(f"USER: Is there a {o} in the image? ASSISTANT: {ANSWERS[i % len(ANSWERS)]}.")
        lines.append(f"There is a {o} in the image, and the {o} is {['small', 'large', 'red', 'white'][i % 4]}.")
    lines += [f"The number is {n} and the year is {1900 + 7 * n}." for n in range(40)]
    return lines


def train_tokenizer(out_dir: Path):
    """Train a Llama-style sentencepiece BPE model and save it as a slow LlamaTokenizer, configured as
    LLaVA-1.5's training leaves it (use_fast=False, padding_side right, model_max_length 2048, pad = unk)."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        model_bytes = io.BytesIO()  # trained from an iterator into memory: no temp paths in its trainer_spec
        spm.SentencePieceTrainer.train(  # Llama's trainer_spec, small
            sentence_iterator=iter(corpus_lines()),
            model_writer=model_bytes,
            model_type="bpe",
            vocab_size=VOCAB_SIZE,
            hard_vocab_limit=False,
            character_coverage=1.0,
            byte_fallback=True,
            split_digits=True,
            split_by_unicode_script=True,
            split_by_number=True,
            split_by_whitespace=True,
            allow_whitespace_only_pieces=True,
            remove_extra_whitespaces=False,
            normalization_rule_name="identity",
            add_dummy_prefix=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            unk_piece="<unk>",
            bos_piece="<s>",
            eos_piece="</s>",
            num_threads=1,
            shuffle_input_sentence=False,
            minloglevel=2,
        )
        (Path(tmp) / "tokenizer.model").write_bytes(_llama_sized(model_bytes.getvalue()))
        tok = LlamaTokenizer(
            vocab_file=str(Path(tmp) / "tokenizer.model"),
            legacy=False,
            add_bos_token=True,
            add_eos_token=False,
            clean_up_tokenization_spaces=False,
            model_max_length=MODEL_MAX_LENGTH,
            padding_side="right",
        )
        tok.pad_token = tok.unk_token  # train.py, conversation version v1: tokenizer.pad_token = tokenizer.unk_token
        tok.save_pretrained(str(out_dir))
    return LlamaTokenizer.from_pretrained(str(out_dir), use_fast=False)


def _llama_sized(model: bytes) -> bytes:
    """The trained sentencepiece model padded to Llama's 32,000 pieces: single characters of Unicode's
    supplementary private-use plane (never in any text here), appended after the trained pieces with ever lower
    scores. Every trained piece keeps its id, and the ids LLaVA-1.5 and transformers' llava-hf conversion
    hard-code hold: <image> = 32000 and <pad> = 32001 after the conversion adds them (llava-hf), IMAGE_TOKEN_INDEX
    = -200 in LLaVA's own code."""
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model)
    lowest = min(p.score for p in proto.pieces)
    for k in range(LLAMA_VOCAB - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = chr(0xF0000 + k), lowest - 1 - k, 1  # 1: NORMAL
    return proto.SerializeToString()


def _gen(seed: int, name: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    return g


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int, select=lambda name: True, scale: dict | None = None) -> None:
    """Overwrite parameters with seeded values, each from its own generator (name-keyed, so order-free):
    weights N(0, 1/fan_in) (activations keep their scale), embeddings N(0, 1), norms 1 + N(0, 0.1^2),
    biases N(0, 0.05^2); ``scale`` multiplies the std of parameters whose name contains a key."""
    for name, p in module.named_parameters():
        if not select(name):
            continue
        g = _gen(seed, name)
        if "norm" in name:  # RMSNorm / LayerNorm (CLIP's pre_layrnorm too)
            base = torch.zeros(p.shape) if name.endswith("bias") else torch.ones(p.shape)
            value = base + 0.1 * torch.randn(p.shape, generator=g)
        elif name.endswith("bias"):
            value = 0.05 * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in name or "position_embedding" in name or name.endswith("class_embedding"):
            value = torch.randn(p.shape, generator=g)
        else:  # Linear / Conv2d weights (fan_in = all but the output dimension)
            fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
            value = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
        for key, factor in (scale or {}).items():
            if key in name:
                value = value * factor
        p.copy_(value.to(p.dtype))


def build_tower(out: Path, seed: int) -> Path:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    folder = out / TOWER_DIR
    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(**VISION))
    randomize(model, seed + 1, scale={"position_embedding": 0.5, "class_embedding": 0.5})
    model.save_pretrained(str(folder), safe_serialization=True)
    CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": VISION["image_size"]},
        resample=3,  # PIL bicubic, as openai/clip-vit-large-patch14-336
        do_center_crop=True,
        crop_size={"height": VISION["image_size"], "width": VISION["image_size"]},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    ).save_pretrained(str(folder))
    return folder


def _model_args(tower: Path) -> SimpleNamespace:
    """LLaVA-1.5's finetune arguments (scripts/v1_5/finetune.sh / finetune_lora.sh) that shape the model."""
    return SimpleNamespace(
        vision_tower=str(tower),
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        pretrain_mm_mlp_adapter=None,
        mm_patch_merge_type="flat",
        mm_projector_type="mlp2x_gelu",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        tune_mm_mlp_adapter=False,
    )


def _finish_config_as_train_py(model, model_args, tokenizer) -> None:
    """What llava/train/train.py writes into model.config after initialize_vision_modules (image_aspect_ratio
    "pad" is LLaVA-1.5's --image_aspect_ratio), plus the keys every released LLaVA-1.5 config.json also has."""
    cfg = model.config
    cfg.image_aspect_ratio = "pad"
    cfg.tokenizer_padding_side = tokenizer.padding_side
    cfg.tokenizer_model_max_length = tokenizer.model_max_length
    cfg.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
    cfg.freeze_mm_mlp_adapter = False
    cfg.mm_use_im_start_end = model_args.mm_use_im_start_end
    cfg.mm_projector_lr = None
    cfg.mm_use_im_patch_token = model_args.mm_use_im_patch_token
    model.initialize_vision_tokenizer(model_args, tokenizer=tokenizer)
    # present in liuhaotian/llava-v1.5-7b's config.json (written by the code version that trained it)
    cfg.image_grid_pinpoints = None
    cfg.mm_resampler_type = None
    cfg.tune_mm_vision_resampler = False
    cfg.unfreeze_mm_vision_tower = False


def build_base(out: Path, tower: Path, seed: int):
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    folder = out / BASE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(folder)
    torch.manual_seed(seed)
    config = LlavaConfig(vocab_size=len(tokenizer), **TEXT)
    model = LlavaLlamaForCausalLM(config)  # no mm_vision_tower yet: a plain (LLaVA) Llama
    model_args = _model_args(tower)
    model.get_model().initialize_vision_modules(model_args=model_args, fsdp=None)  # tower + mlp2x_gelu projector
    _finish_config_as_train_py(model, model_args, tokenizer)
    randomize(model, seed + 2, select=lambda n: "vision_tower" not in n, scale={"lm_head": 4.0})
    model.config.torch_dtype = torch.float32
    # The released LLaVA-1.5 checkpoints hold no vision-tower weights (the tower comes from mm_vision_tower).
    state = {k: v for k, v in model.state_dict().items() if ".vision_tower." not in k}
    model.save_pretrained(str(folder), state_dict=state, safe_serialization=True)
    return folder


def build_lora(out: Path, base: Path, tower: Path, seed: int, adapter_bin: bool, bf16: bool) -> Path:
    """llava/train/train.py with --lora_enable True on top of a LLaVA checkpoint (as POVID's stage 2), then
    its final save: model.config.save_pretrained, model.save_pretrained(state_dict=LoRA params),
    torch.save(non-LoRA trainables). 'Training' = seeded random LoRA A/B (B nonzero) and a new projector."""
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from llava.train.train import (  # imports transformers.Trainer: outside the deepspeed stub
        find_all_linear_names,
        get_peft_state_maybe_zero_3,
        get_peft_state_non_lora_maybe_zero_3,
    )
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    folder = out / LORA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # train.py: torch_dtype=(torch.bfloat16 if training_args.bf16 else None)
    model = LlavaLlamaForCausalLM.from_pretrained(str(base), torch_dtype=torch.bfloat16 if bf16 else None)
    model.config.use_cache = False
    lora_config = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        target_modules=find_all_linear_names(model),
        lora_dropout=LORA_DROPOUT,
        bias="none",
        task_type="CAUSAL_LM",
    )
    if bf16:  # train.py, bits == 16: the LoRA layers then follow the base weights' dtype
        model.to(torch.bfloat16)
    model = get_peft_model(model, lora_config)
    tokenizer = AutoTokenizer.from_pretrained(
        str(base), model_max_length=MODEL_MAX_LENGTH, padding_side="right", use_fast=False
    )
    tokenizer.pad_token = tokenizer.unk_token
    model_args = _model_args(tower)
    model.get_model().initialize_vision_modules(model_args=model_args, fsdp=None)  # projector trainable again
    _finish_config_as_train_py(model, model_args, tokenizer)

    randomize(model, seed + 3, select=lambda n: "lora_A" in n)
    randomize(model, seed + 4, select=lambda n: "lora_B" in n, scale={"lora_B": 0.5})
    randomize(model, seed + 5, select=lambda n: "mm_projector" in n)

    model.config.use_cache = True
    with llava_runtime.deepspeed_stub():
        state_dict = get_peft_state_maybe_zero_3(model.named_parameters(), lora_config.bias)
        non_lora_state_dict = get_peft_state_non_lora_maybe_zero_3(model.named_parameters())
    model.config.save_pretrained(str(folder))
    model.save_pretrained(str(folder), state_dict=state_dict, safe_serialization=not adapter_bin)
    torch.save(non_lora_state_dict, str(folder / "non_lora_trainables.bin"))
    return folder


def build_merged(out: Path, base: Path, lora: Path, merge_dtype: str) -> Path:
    """scripts/merge_lora_weights.py: load_pretrained_model(model_path, model_base, model_name,
    device_map='cpu'), then model.save_pretrained + tokenizer.save_pretrained."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    folder = out / MERGED_DIR
    model_name = get_model_name_from_path(str(lora))
    dtype = torch.float32 if merge_dtype == "fp32" else None  # None: the builder's own fp16
    with llava_runtime.llava_builder_dtype(dtype):
        tokenizer, model, image_processor, context_len = load_pretrained_model(
            str(lora), str(base), model_name, device_map="cpu"
        )
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_llava_hf(out: Path, base: Path, tower: Path, seed: int) -> Path:
    """transformers' own conversion script (transformers/models/llava/convert_llava_weights_to_hf.py of
    4.37.2, the script that made llava-hf/llava-1.5-7b-hf from liuhaotian/llava-v1.5-7b), RUN on local folders:
    its ``convert_llava_llama_to_hf(text_model_id, vision_model_id, output_hub_path, old_state_dict_id)`` with
    only its hub I/O redirected, and LlavaConfig given the tiny tower's vision config (the script relies on
    LlavaConfig's default, CLIP ViT-L/14-336's geometry):

    * ``old_state_dict_id``'s ``model_state_dict.bin``: the state dict of LLaVA's loaded model (the builder's
      load_pretrained_model, fp32), vision tower included, as the original was dumped;
    * ``text_model_id``: a Vicuna-like folder (OUT/vicuna-tiny: the base's Llama fields as a LlamaConfig and
      its tokenizer files);
    * ``vision_model_id``: the CLIP folder;
    * ``push_to_hub`` -> ``save_pretrained`` into OUT/llava-tiny-hf;
    * its ``tokenizer.add_tokens(..., special=True)`` fails on 4.37.2 (the keyword is ``special_tokens``, as
      later versions of the script spell it): the tokenizer passes it on under that name;
    * the script adds 64 to a vocab_size that resize_token_embeddings has already updated (32128 for 32064
      rows): the config is saved with the rows the weights have, as the hub's config.json says (32064).

    The script itself adds <image> (32000) and <pad> (32001), pads the vocabulary to a multiple of 64 (32064),
    fills the new rows from N(mean, 1e-5 * cov) of the old ones and maps the weight names. Afterwards the
    folder gets the processor_config.json that the llava-hf repositories on the hub carry today (patch_size
    14, vision_feature_select_strategy "default", num_additional_image_tokens 1, image_token "<image>"), which
    transformers 5's LlavaProcessor needs to expand <image>; the weights are fp32 (the script's default dtype is
    fp16: the parity check compares fp32)."""
    from llava.model.builder import load_pretrained_model
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.llava import convert_llava_weights_to_hf as conversion

    folder, text = out / HF_DIR, out / TEXT_DIR
    shutil.rmtree(text, ignore_errors=True)
    text.mkdir(parents=True)
    base_config = json.loads((base / "config.json").read_text())
    llama = {k: v for k, v in base_config.items() if k in LlamaConfig().to_dict() and not k.startswith("_")}
    llama.update(architectures=["LlamaForCausalLM"], model_type="llama")
    LlamaConfig(**{k: v for k, v in llama.items() if k != "model_type"}).save_pretrained(str(text))
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(base / f, text / f)

    with llava_runtime.llava_builder_dtype(torch.float32):
        _, model, _, _ = load_pretrained_model(str(base), None, get_model_name(base), device_map="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "model_state_dict.bin"
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, str(dump))
        del model
        vision = CLIPVisionConfig.from_pretrained(str(tower))
        saved = {"LlavaForConditionalGeneration": False, "LlavaProcessor": False}

        def save_instead_of_push(self, repo_id, *args, **kwargs):
            if isinstance(self, LlavaForConditionalGeneration):  # the vocabulary the weights have (see above)
                rows = self.get_input_embeddings().weight.shape[0]
                self.config.vocab_size = self.config.text_config.vocab_size = rows
            self.save_pretrained(str(folder))
            saved[type(self).__name__] = True

        def tokenizer_from_pretrained(path, *args, **kwargs):  # the script's add_tokens(..., special=True)
            tokenizer = AutoTokenizer.from_pretrained(path, *args, **kwargs)  # is special_tokens=True in 4.37
            add_tokens = tokenizer.add_tokens
            tokenizer.add_tokens = lambda tokens, special=None, **kw: add_tokens(
                tokens, **({"special_tokens": special} if special is not None else {}), **kw
            )
            return tokenizer

        patches = {
            (conversion, "AutoTokenizer"): SimpleNamespace(from_pretrained=tokenizer_from_pretrained),
            (conversion, "hf_hub_download"): lambda repo_id, filename: str(Path(tmp) / filename),
            (conversion, "LlavaConfig"): lambda text_config: LlavaConfig(
                text_config=text_config, vision_config=vision.to_dict()
            ),
            (LlavaForConditionalGeneration, "push_to_hub"): save_instead_of_push,
            (LlavaProcessor, "push_to_hub"): save_instead_of_push,
        }
        originals = {key: getattr(*key) for key in patches}
        default_dtype = torch.get_default_dtype()
        try:
            for (owner, name), value in patches.items():
                setattr(owner, name, value)
            torch.manual_seed(seed)  # the new rows are sampled with torch's global generator
            conversion.convert_llava_llama_to_hf(str(text), str(tower), "llava-tiny-hf", "tiny/llava-tiny-base")
        finally:
            torch.set_default_dtype(default_dtype)  # the script sets fp16 as the default and leaves it so
            for (owner, name), value in originals.items():
                setattr(owner, name, value)
    assert all(saved.values()), saved
    processor_config = {
        "image_token": "<image>",
        "num_additional_image_tokens": 1,
        "patch_size": vision.patch_size,
        "processor_class": "LlavaProcessor",
        "vision_feature_select_strategy": "default",
    }
    (folder / "processor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
    return folder


def get_model_name(path: Path) -> str:
    from llava.mm_utils import get_model_name_from_path

    return get_model_name_from_path(str(path))


def _manifest(out: Path, args) -> dict:
    files = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"):
        files[str(f.relative_to(out))] = {
            "bytes": f.stat().st_size,
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
        }
    return {
        "seed": args.seed,
        "merge_dtype": args.merge_dtype,
        "adapter_format": "bin" if args.adapter_bin else "safetensors",
        "lora_dtype": args.lora_dtype,
        "vision": VISION,
        "text": TEXT,
        "vocab_size_requested": VOCAB_SIZE,
        "lora": {"r": LORA_R, "lora_alpha": LORA_ALPHA, "lora_dropout": LORA_DROPOUT},
        "folders": {"tower": TOWER_DIR, "base": BASE_DIR, "lora": LORA_DIR, "merged": MERGED_DIR, "hf": HF_DIR},
        "versions": llava_runtime.versions(),
        "files": files,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--merge-dtype",
        choices=("fp16", "fp32"),
        default="fp16",
        help="dtype of the merge and of llava-tiny-merged's weights (fp16: as merge_lora_weights.py does)",
    )
    ap.add_argument(
        "--adapter-bin",
        action="store_true",
        help="write adapter_model.bin (peft <= 0.5's format) instead of adapter_model.safetensors",
    )
    ap.add_argument(
        "--lora-dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="dtype of the LoRA 'training' and so of adapter_model.* and non_lora_trainables.bin "
        "(bf16: as LLaVA-1.5's finetune_lora.sh, --bf16 True)",
    )
    args = ap.parse_args(argv)
    out = args.out.expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in (TOWER_DIR, BASE_DIR, LORA_DIR, MERGED_DIR, HF_DIR, TEXT_DIR):
        shutil.rmtree(out / name, ignore_errors=True)

    tower = build_tower(out, args.seed)
    base = build_base(out, tower, args.seed)
    lora = build_lora(out, base, tower, args.seed, args.adapter_bin, args.lora_dtype == "bf16")
    merged = build_merged(out, base, lora, args.merge_dtype)
    hf = build_llava_hf(out, base, tower, args.seed)
    manifest = _manifest(out, args)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name, folder in (("tower", tower), ("base", base), ("lora", lora), ("merged", merged), ("llava-hf", hf)):
        print(f"{name:7s} {folder}  ({', '.join(sorted(p.name for p in folder.iterdir()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
