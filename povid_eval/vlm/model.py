"""Load a LLaVA checkpoint (optionally with a PEFT adapter) and run it: batched generation, response log-probs.

Works the same for the embedded tiny base (models/base/) and for real checkpoints saved in the HF format
(llava-hf/llava-1.5-7b-hf, a local folder or an already-cached hub id); never downloads.

Prompts are formatted strings that contain ``<image>`` once, e.g. ``USER: <image>\\nDescribe this image.
ASSISTANT:``; the processor expands it to the vision tower's number of image tokens. Generation pads on
the left so that every row's next token sits in the last column; with the attention mask and the position
ids derived from it, greedy outputs do not depend on the batch composition.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from povid_eval.core.errors import InputError, MissingAssetError
from povid_eval.prompts import render
from povid_eval.vlm.logprobs import response_logprobs
from povid_eval.vlm.tokenizer import capitalize_sentences

_ANCHOR = "ASSISTANT:"
# What a corrupt weight or config file raises while loading (truncated safetensors, broken json).
CORRUPT = (SafetensorError, ValueError, UnicodeDecodeError)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def model_dir_problems(path: Path) -> list[str]:
    """What an HF-layout LLaVA folder lacks (empty when complete)."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        missing.append("weights (model.safetensors)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json)")
    if not any((path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
        missing.append("image processor (processor_config.json or preprocessor_config.json)")
    return missing


def adapter_problems(path: Path) -> list[str]:
    """What a PEFT adapter folder lacks (empty when complete)."""
    if not path.is_dir():
        return ["the folder"]
    missing = [] if (path / "adapter_config.json").is_file() else ["adapter_config.json"]
    if not any((path / f).is_file() for f in _ADAPTER_WEIGHTS):
        missing.append("adapter_model.safetensors")
    return missing


def _check_model_dir(path: Path) -> None:
    missing = model_dir_problems(path)
    if missing:
        raise MissingAssetError(f"{path}: not a complete LLaVA checkpoint, missing {', '.join(missing)}")


def _check_adapter_dir(path: Path) -> None:
    missing = adapter_problems(path)
    if missing == ["the folder"]:
        raise MissingAssetError(f"{path}: adapter folder not found")
    if missing:
        raise MissingAssetError(f"{path}: not a PEFT adapter folder, missing {', '.join(missing)}")


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MissingAssetError(f"device {device!r} requested but CUDA is not available on this machine")
    return device


def allow_downloads() -> bool:
    """POVID_EVAL_ALLOW_DOWNLOADS=1: hub ids that are not cached may be downloaded."""
    return os.environ.get("POVID_EVAL_ALLOW_DOWNLOADS") == "1"


def is_hub_id(path: str | Path) -> bool:
    """``org/name`` that is not a local path: a Hugging Face hub id."""
    text = str(path)
    return not Path(text).expanduser().exists() and text.count("/") == 1 and not text.startswith((".", "/", "~"))


def download_command(repo_id: str) -> str:
    """The command that puts a hub checkpoint in models/<name>/ (on a machine with internet)."""
    return f"hf download {repo_id} --local-dir models/{repo_id.split('/')[-1]}"


def detect_format(path: str | Path) -> str:
    """``llava`` for the original LLaVA repo's folders (LlavaLlamaForCausalLM, or its LoRA folders), else ``hf``."""
    from povid_eval.vlm.convert import is_original_llava

    return "llava" if Path(path).is_dir() and is_original_llava(path) else "hf"


def load_vlm(
    path: str | Path,
    adapter: str | Path | None = None,
    dtype: str = "fp32",
    device: str = "cpu",
    *,
    format: str = "auto",
    model_base: str | Path | None = None,
    vision_tower: str | Path | None = None,
) -> VLM:
    """Load model + processor from a local folder or a hub id in the local HF cache; never downloads unless
    POVID_EVAL_ALLOW_DOWNLOADS=1.

    ``format``: ``hf`` (LlavaForConditionalGeneration), ``llava`` (the original LLaVA layout, converted on load
    by vlm/convert.py; ``model_base`` / ``vision_tower`` as there) or ``auto`` (detected from config.json).
    ``adapter``: a PEFT adapter folder put on top (PeftModel.from_pretrained); ``dtype``: fp32, bf16 or fp16;
    ``device``: cpu, cuda, cuda:N or auto. A missing folder or file raises MissingAssetError naming it.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    device = _resolve_device(device)
    local = Path(path).expanduser()
    if adapter is not None:
        _check_adapter_dir(Path(adapter))
    if format == "auto":
        format = detect_format(local)
    if format == "llava":
        from povid_eval.vlm.convert import load_original_llava

        model, processor = load_original_llava(
            local, model_base=model_base, vision_tower=vision_tower, dtype=DTYPES[dtype]
        )
    else:
        if local.is_dir():
            _check_model_dir(local)
        elif not is_hub_id(path):
            raise MissingAssetError(
                f"{path}: model folder not found (models/base/ ships with the project; "
                "real checkpoints must be downloaded beforehand: see `povid-eval doctor`)"
            )
        source = str(local if local.is_dir() else path)
        offline = not allow_downloads() or local.is_dir()
        try:
            placement = {} if device == "cpu" else {"device_map": device}  # a GPU: load the weights straight there
            model = LlavaForConditionalGeneration.from_pretrained(
                source, dtype=DTYPES[dtype], local_files_only=offline, trust_remote_code=False, **placement
            )
            processor = AutoProcessor.from_pretrained(source, local_files_only=offline, trust_remote_code=False)
        except OSError as e:
            hint = (
                (
                    f"; download it first: `{download_command(str(path))}` and point the card's path there, or set "
                    "POVID_EVAL_ALLOW_DOWNLOADS=1"
                )
                if is_hub_id(path)
                else ""
            )
            raise MissingAssetError(
                f"{path}: cannot load the model offline ({e.__class__.__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'missing files'}){hint}"
            ) from None
        except CORRUPT as e:
            raise InputError(path, f"unreadable model files ({_first_line(e)}): restore or re-download them") from None
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        except (OSError, *CORRUPT) as e:
            raise InputError(
                adapter,
                f"unreadable LoRA adapter ({_first_line(e)}): retrain it (povid-eval train "
                "--overwrite) or fix the card's adapter path",
            ) from None
    model.to(device).eval()
    return VLM(
        model=model,
        processor=processor,
        path=str(path),
        adapter=None if adapter is None else str(adapter),
        device=device,
        dtype=dtype,
    )


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else 'no detail'}"


def load_vlm_card(card) -> VLM:
    """load_vlm with a model card's fields (path, adapter, format, model_base, vision_tower, dtype, device)."""

    def local(value: str) -> Path | None:
        return card.resolve(value) if value else None

    path = card.path if is_hub_id(card.path) and not card.resolve(card.path).exists() else card.resolve(card.path)
    return load_vlm(
        path,
        adapter=local(card.adapter),
        dtype=card.dtype,
        device=card.device,
        format=card.format,
        model_base=local(card.model_base),
        vision_tower=local(card.vision_tower),
    )


@dataclass
class VLM:
    """A loaded LLaVA: ``model`` (maybe a PeftModel) and its ``processor``; see the module docstring."""

    model: Any
    processor: Any
    path: str = ""
    adapter: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    _lowercases: bool | None = field(default=None, repr=False)

    def __post_init__(self):
        self.processor.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_token_id(self) -> int:
        config = self.model.config
        return getattr(config, "image_token_id", None) or config.image_token_index

    # ------------------------------------------------------------------ encoding

    def encode(self, images: Sequence, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Processor output for a batch (left-padded ``input_ids``, ``attention_mask``, ``pixel_values``) on device."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        token = getattr(self.processor, "image_token", "<image>")
        for i, p in enumerate(prompts):
            if p.count(token) != 1:
                raise ValueError(f"prompt {i} must contain {token} exactly once: {p!r}")
        images = [im.convert("RGB") for im in images]
        batch = self.processor(images=images, text=list(prompts), return_tensors="pt", padding=True)
        out = {k: v.to(self.device) for k, v in batch.items()}
        out["pixel_values"] = out["pixel_values"].to(DTYPES[self.dtype])
        return out

    def prompt(self, template: str, question: str) -> str:
        """The input text for a question under a prompt template (vlm/prompts.py)."""

        return render(template, question, self.processor)

    def response_token_ids(self, responses: Sequence[str], add_eos: bool = True) -> list[list[int]]:
        """Token ids of responses exactly as they follow a prompt ending in 'ASSISTANT:' in one tokenized
        sequence (then the end-of-sequence token): the ids of 'ASSISTANT: ' + response minus those of
        'ASSISTANT:'. Sentencepiece tokenizers (Llama) mark the word start differently inside a sequence
        than at its beginning, so tokenizing the response alone would score tokens the model never sees."""
        tok = self.tokenizer
        anchor = tok(_ANCHOR, add_special_tokens=False)["input_ids"]
        full = tok([f"{_ANCHOR} {r.strip()}" for r in responses], add_special_tokens=False)["input_ids"]
        eos = [tok.eos_token_id] if add_eos else []
        out = []
        for r, ids in zip(responses, full):
            if ids[: len(anchor)] != anchor:  # the anchor merged with the response: tokenize it alone
                ids = anchor + tok(" " + r.strip(), add_special_tokens=False)["input_ids"]
            out.append(list(ids[len(anchor) :]) + eos)
        return out

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate_ids(
        self,
        images: Sequence,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        logits_processor=None,
    ) -> list[list[int]]:
        """New token ids per prompt, up to and including the first end-of-sequence token (no padding).

        Greedy unless ``do_sample``; sampling uses temperature and nucleus top_p only (top_k off), seeded by
        ``seed`` without touching the global RNG state. The image token (and padding and <s>, when distinct
        from </s>) can never be generated: a response must be scorable after its prompt.
        """
        from transformers import LogitsProcessorList

        if not prompts:
            return []
        batch = self.encode(images, prompts)
        tok = self.tokenizer
        banned = {self.image_token_id, tok.pad_token_id, tok.bos_token_id} - {None, tok.eos_token_id}
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            suppress_tokens=sorted(banned),
        )
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if logits_processor is not None:
            kwargs["logits_processor"] = LogitsProcessorList(list(logits_processor))
        devices = [torch.device(self.device)] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.model.generate(**batch, **kwargs)
        new = out[:, batch["input_ids"].shape[1] :].tolist()
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        result = []
        for row in new:
            if eos in row:
                row = row[: row.index(eos) + 1]
            result.append([t for t in row if t != pad or pad == eos])
        return result

    def decode(self, ids: Sequence[int]) -> str:
        """Readable text of generated ids (stops at end-of-sequence, no special tokens)."""
        ids = list(ids)
        eos = self.tokenizer.eos_token_id
        if eos in ids:
            ids = ids[: ids.index(eos)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()
        if self._lowercases is None:  # a lower-casing tokenizer (the tiny base) loses capitals: restore them
            probe = self.tokenizer.decode(self.tokenizer("A", add_special_tokens=False)["input_ids"]).strip()
            self._lowercases = probe == "a"
        return capitalize_sentences(" ".join(text.split())) if self._lowercases else text

    def generate(
        self,
        images: Sequence,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        logits_processor=None,
    ) -> list[str]:
        """Decoded answers (without the prompt) for one batch of (image, formatted prompt)."""
        ids = self.generate_ids(
            images,
            prompts,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            logits_processor=logits_processor,
        )
        return [self.decode(x) for x in ids]

    # ------------------------------------------------------------------ scoring

    def prompt_token_ids(self, images: Sequence, prompts: Sequence[str]) -> tuple[torch.Tensor, list[list[int]]]:
        """(pixel_values, unpadded prompt ids with the image tokens expanded)."""
        batch = self.encode(images, prompts)
        ids = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"].cpu(), batch["attention_mask"].cpu())]
        return batch["pixel_values"], ids

    def response_ids_logprobs(
        self, images: Sequence, prompts: Sequence[str], response_ids: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """log pi(response | image, prompt) [batch] for response token ids (e.g. from generate_ids)."""
        pixel_values, prompt_ids = self.prompt_token_ids(images, prompts)
        return response_logprobs(self.model, pixel_values, prompt_ids, response_ids, self.tokenizer.pad_token_id)

    def sequence_logprobs(self, images: Sequence, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Summed log-probs [batch] of the response tokens only (prompt masked), each response tokenized as
        ``response_token_ids`` appends it. Differentiable: wrap in torch.no_grad() when no gradient is wanted."""
        return self.response_ids_logprobs(images, prompts, self.response_token_ids(responses))
