"""Load checkpoints in the original LLaVA format (haotian-liu/LLaVA, ``LlavaLlamaForCausalLM``), converted on
load into transformers' ``LlavaForConditionalGeneration`` + ``LlavaProcessor``; never downloads.

Format facts (LLaVA-1.5 and POVID's release):

* A full checkpoint folder holds config.json (Llama fields plus ``mm_vision_tower``, ``mm_hidden_size``,
  ``mm_projector_type``, ``mm_vision_select_layer``, ``mm_vision_select_feature``, ``image_aspect_ratio``,
  ``mm_use_im_start_end``, ...), weights (model.safetensors, pytorch_model.bin, or shards listed in
  model.safetensors.index.json / pytorch_model.bin.index.json) and a Llama tokenizer (tokenizer.model or
  tokenizer.json, tokenizer_config.json) that usually lacks ``<image>`` (LLaVA splices images in code).
* Weight names map onto transformers 5's as in ``_RENAMES``: ``model.mm_projector.{0,2}`` -> projector
  ``linear_{1,2}``; ``model.vision_tower.vision_tower.vision_model.*`` -> ``model.vision_tower.*``
  (transformers 5's CLIPVisionModel has no ``vision_model.`` level); ``model.{embed_tokens,layers,norm}`` ->
  ``model.language_model.*``; ``lm_head`` stays. Released LLaVA-1.5 checkpoints carry no vision-tower
  weights: they come from the CLIP folder named by ``mm_vision_tower`` (a CLIPModel's ``vision_model.*``
  keys, text keys dropped), a local folder or an already-cached hub id such as
  openai/clip-vit-large-patch14-336. A checkpoint that does carry tower weights (a merged LoRA: LLaVA's
  merge script saves them, in fp16) is read as LLaVA's builder reads it: the tower comes from
  ``mm_vision_tower`` all the same; the embedded copy is used only where that folder has no weights.
* The CLIP features of layer ``mm_vision_select_layer`` go through the ``mlp2x_gelu`` projector (Linear,
  GELU, Linear: the only type transformers' projector has); ``mm_vision_select_feature`` "patch" drops CLS
  (strategy "default"), "cls_patch" keeps it ("full").
* ``image_aspect_ratio`` "pad" (LLaVA-1.5) pads each image to a square filled with the CLIP mean colour
  (int(mean * 255) per channel, image centred) before CLIP's resize + centre crop: the model card's
  ``image_aspect_ratio`` decides it for every format (model.pad_to_square), so the processor built here does
  not pad.
* A LoRA folder (POVID's stage 2) holds adapter_config.json, adapter_model.safetensors (or .bin) with PEFT
  keys in LLaVA naming (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``), and
  non_lora_trainables.bin (projector etc., keys prefixed ``base_model.model.``), usually config.json too; it
  goes on top of ``model_base``, a full checkpoint: non-LoRA weights overwrite, then each pair merges as
  ``W += alpha / r * B @ A`` (``alpha / sqrt(r)`` with rslora), in fp32.
* ``.bin`` files are read with ``torch.load(weights_only=True)`` only; anything but a dict of tensors is refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from povid_eval.core.errors import MissingAssetError, PovidError

IMAGE_TOKEN = "<image>"
_RENAMES = (  # original LLaVA prefix -> transformers 5 LlavaForConditionalGeneration prefix (first match wins)
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
    ("model.vision_tower.vision_tower.", "model.vision_tower."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
_SKIPPED = ("rotary_emb.inv_freq", "position_ids")  # buffers old checkpoints saved; recomputed by the model
_CLIP_DROPPED = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZERS = ("tokenizer.model", "tokenizer.json")
_ADAPTERS = ("adapter_model.safetensors", "adapter_model.bin")
_NOT_LLAMA = {
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_name_or_path",
    "image_aspect_ratio",
    "image_grid_pinpoints",
    "tokenizer_padding_side",
    "tokenizer_model_max_length",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "unfreeze_mm_vision_tower",
    "use_mm_proj",
    "vision_tower",
}


def _read_json(file: Path) -> dict:
    if not file.is_file():
        raise MissingAssetError(f"{file.parent}: missing {file.name}")
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise PovidError(f"{file}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise PovidError(f"{file}: expected a JSON object")
    return data


def _is_lora(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and (folder / "non_lora_trainables.bin").is_file()


def is_original_llava(path: str | Path) -> bool:
    """True for an original-LLaVA folder: config.json with ``LlavaLlamaForCausalLM`` / model_type
    ``llava_llama`` / ``mm_vision_tower``, or a LLaVA LoRA folder (adapter_config.json + non_lora_trainables.bin)."""
    folder = Path(path).expanduser()
    if _is_lora(folder):
        return True
    try:
        cfg = _read_json(folder / "config.json")
    except PovidError:
        return False
    return (
        "LlavaLlamaForCausalLM" in (cfg.get("architectures") or [])
        or cfg.get("model_type") == "llava_llama"
        or "mm_vision_tower" in cfg
    )


def _has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and any((folder / f).is_file() for f in _TOKENIZERS)


def _llava_config(folder: Path) -> dict:
    """config.json of an original checkpoint, refusing what transformers' Llava cannot represent."""
    cfg, file = _read_json(folder / "config.json"), folder / "config.json"
    if cfg.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise PovidError(
            f"{file}: mm_projector_type {cfg.get('mm_projector_type', 'linear')!r} is not supported "
            "(only 'mlp2x_gelu', LLaVA-1.5's, maps onto transformers' Llava projector)"
        )
    if cfg.get("mm_use_im_start_end"):
        raise PovidError(f"{file}: mm_use_im_start_end = true (<im_start>/<im_end> around images) is not supported")
    if cfg.get("image_aspect_ratio") == "anyres":
        raise PovidError(f"{file}: image_aspect_ratio 'anyres' (LLaVA-NeXT tiling) is not supported")
    if cfg.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
        raise PovidError(
            f"{file}: mm_vision_select_feature {cfg['mm_vision_select_feature']!r} is not supported "
            "('patch' or 'cls_patch')"
        )
    return cfg


def _find_tower(cfg: dict, override: str | Path | None, config_file: Path) -> Path:
    """The CLIP folder: ``override``, else the config's ``mm_vision_tower`` as a folder or a cached hub id."""
    name = str(override or cfg.get("mm_vision_tower") or cfg.get("vision_tower") or "")
    if not name:
        raise PovidError(f'{config_file}: no mm_vision_tower; set vision_tower = "/path/to/clip" in the model card')
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    cached = cached_snapshot(name) if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None
    if cached is not None:
        return cached
    raise MissingAssetError(
        f"vision tower {name!r} (from {'vision_tower' if override else config_file}) is neither a "
        f"folder nor in the Hugging Face cache: download it (hf download {name} --local-dir DIR) "
        'and set vision_tower = "DIR" in the model card'
    )


def cached_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of a hub id, or None when it is not cached (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 (LocalEntryNotFoundError, or no usable cache at all)
        return None


def _tower_config(tower: Path):
    """CLIPVisionConfig from a CLIPVisionModel's config.json or a CLIPModel's ``vision_config``."""
    from transformers import CLIPVisionConfig

    raw = _read_json(tower / "config.json")
    if raw.get("model_type") not in ("clip", "clip_vision_model"):
        raise PovidError(f"{tower / 'config.json'}: model_type {raw.get('model_type')!r} is not a CLIP model")
    if not (tower / "preprocessor_config.json").is_file():
        raise MissingAssetError(f"{tower}: missing preprocessor_config.json (the CLIP image processor)")
    return CLIPVisionConfig.from_dict(raw.get("vision_config", raw))


def _weight_files(folder: Path) -> list[Path]:
    """The weight files of a folder: a single file, or the shards an index lists."""
    for name in _WEIGHTS:
        if (folder / name).is_file():
            if not name.endswith(".index.json"):
                return [folder / name]
            files = [folder / f for f in dict.fromkeys(_read_json(folder / name).get("weight_map", {}).values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing or not files:
                raise MissingAssetError(f"{folder}: shard(s) listed in {name} missing: {', '.join(missing[:3])}")
            return files
    raise MissingAssetError(f"{folder}: no weights (model.safetensors, pytorch_model.bin, or a *.index.json)")


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a torch pickle read with weights_only=True that must be a dict of tensors."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses classes, functions, ...
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise PovidError(f"{file}: refused: not a plain dict of tensors ({reason})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise PovidError(f"{file}: refused: not a plain dict of tensors")
    return dict(obj)


def _checkpoint_has_tower(files: list[Path]) -> bool | None:
    """Whether the checkpoint holds vision-tower weights, from safetensors headers; None for .bin (unknown)."""
    if any(f.suffix != ".safetensors" for f in files):
        return None
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), "pt") as f:
            if any(k.startswith("model.vision_tower.") for k in f.keys()):
                return True
    return False


def _hf_key(key: str) -> str | None:
    """The transformers 5 name of an original LLaVA weight name, None when it has none."""
    return next((hf + key[len(orig) :] for orig, hf in _RENAMES if key.startswith(orig)), None)


def _rename(state: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Original LLaVA names -> transformers 5 names; unknown names raise PovidError listing a few."""
    out, unknown = {}, []
    for key, value in state.items():
        if not key.endswith(_SKIPPED):
            new = _hf_key(key)
            unknown += [key] if new is None else []
            out[new] = value
    if unknown:
        raise PovidError(
            f"{where}: {len(unknown)} weight(s) with no transformers Llava counterpart, e.g. {', '.join(unknown[:3])}"
        )
    return out


def _tower_state(tower: Path) -> dict[str, torch.Tensor]:
    state = {}
    for file in _weight_files(tower):
        for key, value in _load_tensors(file).items():
            if not key.startswith(_CLIP_DROPPED) and not key.endswith(_SKIPPED):
                state["model.vision_tower." + key.removeprefix("vision_model.")] = value
    return state


def _merge_lora(state: dict[str, torch.Tensor], folder: Path) -> None:
    """Merge every LoRA pair of ``folder`` into ``state`` in place: W = W + scale * B @ A, in fp32."""
    acfg = _read_json(folder / "adapter_config.json")
    if any(acfg.get(k) for k in ("use_dora", "rank_pattern", "alpha_pattern", "fan_in_fan_out")):
        raise PovidError(
            f"{folder / 'adapter_config.json'}: use_dora, rank_pattern, alpha_pattern and "
            "fan_in_fan_out are not supported"
        )
    r = acfg["r"]
    scale = acfg.get("lora_alpha", r) / (math.sqrt(r) if acfg.get("use_rslora") else r)
    file = next(folder / f for f in _ADAPTERS if (folder / f).is_file())
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in _load_tensors(file).items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        target = m and _hf_key(m[1] + ".weight")
        if not m or target not in state:
            raise PovidError(f"{file}: {key} is not a LoRA A/B weight of a known linear layer")
        pairs.setdefault(target, {})[m[2]] = value
    for target, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise PovidError(f"{file}: {target} has lora_{''.join(ab)} only")
        state[target] = state[target].float() + scale * (ab["B"].float() @ ab["A"].float())


@dataclass
class _Plan:
    config: dict
    config_dir: Path
    weights: list[Path]
    tokenizer_dir: Path
    tower: Path
    lora: Path | None


def _survey(path, model_base, vision_tower) -> tuple[_Plan | None, list[PovidError]]:
    """Find every file a load needs, without reading weights: (plan, problems); plan is None on problems."""
    errors: list[PovidError] = []

    def attempt(fn, *args):
        try:
            return fn(*args)
        except PovidError as e:
            errors.append(e)

    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None, [MissingAssetError(f"{folder}: checkpoint folder not found")]
    lora, base = _is_lora(folder), folder
    if lora:
        if not any((folder / f).is_file() for f in _ADAPTERS):
            errors.append(MissingAssetError(f"{folder}: missing adapter_model.safetensors (or adapter_model.bin)"))
        base = Path(model_base).expanduser() if model_base is not None else None
        if base is None:
            errors.append(
                MissingAssetError(
                    f"{folder}: a LoRA folder goes on a stage-1 base checkpoint: set "
                    'model_base = "/path/to/base" in the model card'
                )
            )
        elif not base.is_dir():
            errors.append(MissingAssetError(f"{base}: model_base folder not found"))
            base = None
    config_dir = folder if (folder / "config.json").is_file() else base
    cfg = attempt(_llava_config, config_dir) if config_dir is not None else None
    weights = attempt(_weight_files, base) if base is not None else None
    tokenizer_dir = folder if _has_tokenizer(folder) else base
    if base is not None and not _has_tokenizer(tokenizer_dir):
        errors.append(MissingAssetError(f"{base}: missing the tokenizer (tokenizer.model or tokenizer.json)"))
    tower = attempt(_find_tower, cfg, vision_tower, config_dir / "config.json") if cfg is not None else None
    if tower is not None and attempt(_tower_config, tower) is not None and weights:
        if not any((tower / f).is_file() for f in _WEIGHTS) and _checkpoint_has_tower(weights) is False:
            errors.append(MissingAssetError(f"{tower}: no vision-tower weights here (model.safetensors) nor in {base}"))
    if errors:
        return None, errors
    return _Plan(cfg, config_dir, weights, tokenizer_dir, tower, folder if lora else None), []


def check_original_llava(
    path: str | Path, model_base: str | Path | None = None, vision_tower: str | Path | None = None
) -> list[str]:
    """The problems that would stop ``load_original_llava``, one line each with the fix; [] when loadable
    (weights are not read, so a corrupt weight file shows only at load time)."""
    return [str(e) for e in _survey(path, model_base, vision_tower)[1]]


def _tokenizer(folder: Path, text_config):
    """The folder's tokenizer (read as a Llama one, not via the original config.json) with <image> added.

    LLaVA tokenizes a prompt chunk by chunk around ``<image>`` (``tokenizer_image_token``: each chunk on its
    own, so sentencepiece puts its word-start mark at the start of the text after the image too). A whole-string
    tokenizer gives the same ids only in Llama's ``legacy`` mode (the word-start mark after a special token),
    so a sentencepiece tokenizer.model is read with ``legacy=True`` whatever its config says."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    legacy = {"legacy": True} if (folder / "tokenizer.model").is_file() else {}
    try:
        tok = AutoTokenizer.from_pretrained(
            str(folder), config=text_config, local_files_only=True, trust_remote_code=False, **legacy
        )
    except (OSError, ValueError, ImportError) as e:  # e.g. tokenizer.model alone without sentencepiece installed
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise MissingAssetError(f"{folder}: cannot load the tokenizer offline ({reason})") from None
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tok


def load_original_llava(
    path: str | Path,
    *,
    model_base: str | Path | None = None,
    vision_tower: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
):
    """``(LlavaForConditionalGeneration in eval mode, LlavaProcessor)`` from an original-format folder.

    ``path``: a full checkpoint, or a LoRA folder put on ``model_base`` (a full checkpoint); ``vision_tower``:
    a CLIP folder overriding the config's ``mm_vision_tower``. Missing files raise MissingAssetError, what
    cannot be converted PovidError (see ``check_original_llava``).
    """
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessorPil,
        LlavaProcessor,
    )
    from transformers.initialization import no_init_weights

    plan, errors = _survey(path, model_base, vision_tower)
    if errors:
        raise errors[0]
    cfg, base = plan.config, plan.weights[0].parent
    state = _rename({k: v for f in plan.weights for k, v in _load_tensors(f).items()}, base)
    if any((plan.tower / f).is_file() for f in _WEIGHTS):  # LLaVA's builder: the tower of mm_vision_tower, always
        state = {k: v for k, v in state.items() if not k.startswith("model.vision_tower.")}
        state.update(_tower_state(plan.tower))
    if plan.lora is not None:
        extra = {
            k.removeprefix("base_model.model."): v
            for k, v in _load_tensors(plan.lora / "non_lora_trainables.bin").items()
        }
        extra = {k.removeprefix("model.") if k.startswith("model.model.") else k: v for k, v in extra.items()}
        state.update(_rename(extra, plan.lora / "non_lora_trainables.bin"))
        _merge_lora(state, plan.lora)
    text = LlamaConfig(
        **{k: v for k, v in cfg.items() if k not in _NOT_LLAMA and not k.startswith("mm_") and v is not None}
    )  # e.g. rope_scaling: null
    tok = _tokenizer(plan.tokenizer_dir, text)
    vocab = max(len(tok), state["lm_head.weight"].shape[0])
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):  # zero rows for added tokens
        state[key] = torch.cat([state[key], state[key].new_zeros(vocab - state[key].shape[0], state[key].shape[1])])

    vision = _tower_config(plan.tower)
    if cfg.get("mm_hidden_size", vision.hidden_size) != vision.hidden_size:
        raise PovidError(
            f"{plan.config_dir / 'config.json'}: mm_hidden_size {cfg['mm_hidden_size']} != the vision "
            f"tower's hidden_size {vision.hidden_size} ({plan.tower})"
        )
    text.vocab_size = vocab
    strategy = "full" if cfg.get("mm_vision_select_feature", "patch") == "cls_patch" else "default"
    n_image = (vision.image_size // vision.patch_size) ** 2 + (strategy == "full")
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_seq_length=n_image,
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu",
        vision_feature_layer=cfg.get("mm_vision_select_layer", -1),
        vision_feature_select_strategy=strategy,
    )
    with no_init_weights():
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    expected = set(model.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise PovidError(
            f"{base}: weights do not match the config: missing {', '.join(missing[:3]) or '-'}; "
            f"unexpected {', '.join(extra[:3]) or '-'}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        mismatch = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e)[:200])
        raise PovidError(f"{base}: weights do not fit the config: {mismatch}") from None
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False
    )
    model.eval()

    # the padding to a square is the VLM's (model.pad_to_square, the card's image_aspect_ratio), as for every
    # format: the processor only resizes and centre-crops
    image_processor = LlavaImageProcessorPil.from_pretrained(str(plan.tower), local_files_only=True, do_pad=False)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=strategy,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    return model, processor
