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
import sys
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
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
ASPECT_RATIOS = ("pad", "square")
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
    image_aspect_ratio: str = "pad",
) -> VLM:
    """Load model + processor from a local folder or a hub id in the local HF cache; never downloads unless
    POVID_EVAL_ALLOW_DOWNLOADS=1.

    ``format``: ``hf`` (LlavaForConditionalGeneration), ``llava`` (the original LLaVA layout, converted on load
    by vlm/convert.py; ``model_base`` / ``vision_tower`` as there) or ``auto`` (detected from config.json).
    ``adapter``: a PEFT adapter folder put on top (PeftModel.from_pretrained); ``dtype``: fp32, bf16 or fp16;
    ``device``: cpu, cuda, cuda:N or auto; ``image_aspect_ratio``: "pad" (LLaVA-1.5: every image padded to a
    square of the image processor's mean colour first, pad_to_square) or "square" (the processor as shipped:
    resize the shortest edge, centre-crop). A missing folder or file raises MissingAssetError naming it.
    """
    if image_aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown image_aspect_ratio {image_aspect_ratio!r} (known: {', '.join(ASPECT_RATIOS)})")
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
            with quiet_peft():
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
        image_aspect_ratio=image_aspect_ratio,
    )


@contextmanager
def quiet_peft():
    """PEFT asks transformers 5 a deprecated question (is_gradient_checkpointing) when it wraps a model: a
    FutureWarning on stderr that is not ours to fix, silenced around the wrapping only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def pad_to_square(image, fill: tuple[int, int, int]):
    """LLaVA-1.5's ``expand2square``: the image centred on a square canvas of side max(width, height) filled
    with ``fill`` (the image processor's mean colour, int(mean * 255) per channel); a square image as it is."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else 'no detail'}"


def load_vlm_card(card) -> VLM:
    """load_vlm with a model card's fields (path, adapter, format, model_base, vision_tower, dtype, device,
    image_aspect_ratio); its tokenization is checked against LLaVA's (VLM.check_tokenization) under the card's
    template."""

    def local(value: str) -> Path | None:
        return card.resolve(value) if value else None

    path = card.path if is_hub_id(card.path) and not card.resolve(card.path).exists() else card.resolve(card.path)
    vlm = load_vlm(
        path,
        adapter=local(card.adapter),
        dtype=card.dtype,
        device=card.device,
        format=card.format,
        model_base=local(card.model_base),
        vision_tower=local(card.vision_tower),
        image_aspect_ratio=card.image_aspect_ratio,
    )
    vlm.check_tokenization(card.template)
    return vlm


@dataclass
class VLM:
    """A loaded LLaVA: ``model`` (maybe a PeftModel) and its ``processor``; see the module docstring."""

    model: Any
    processor: Any
    path: str = ""
    adapter: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    image_aspect_ratio: str = "pad"
    chunked: bool = False  # prompts tokenized LLaVA's way (check_tokenization)
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
        prepared = self.prepare_images(images)
        batch = self.processor(images=prepared, text=list(prompts), return_tensors="pt", padding=True)
        if self.chunked:  # LLaVA's own ids (check_tokenization found the processor's different)
            batch = {**batch, **self._chunked_batch(prompts, batch["input_ids"])}
        out = {k: v.to(self.device) for k, v in batch.items()}
        out["pixel_values"] = out["pixel_values"].to(DTYPES[self.dtype])
        return out

    def llava_prompt_ids(self, prompt: str) -> list[int]:
        """LLaVA's ``tokenizer_image_token``: the text around ``<image>`` is tokenized chunk by chunk, each
        chunk on its own (with <s>); the first chunk's <s> is kept, the others' dropped, and one image token
        goes between the chunks. (A sentencepiece tokenizer marks a word start after ``<image>`` differently
        than a processor that tokenizes the whole prompt at once.)"""
        tok = self.tokenizer
        token = getattr(self.processor, "image_token", "<image>")
        chunks = [tok(chunk)["input_ids"] for chunk in prompt.split(token)]
        offset = 1 if chunks[0] and chunks[0][0] == tok.bos_token_id else 0
        ids = chunks[0][:offset]
        for k, chunk in enumerate(chunks):
            ids += ([self.image_token_id] if k else []) + chunk[offset:]
        return ids

    def processor_prompt_ids(self, prompt: str) -> list[int]:
        """The processor's ids of one prompt, its run of image tokens collapsed to one (LLaVA's form)."""
        from PIL import Image

        size = self.processor.image_processor.crop_size or self.processor.image_processor.size
        side = int(size.get("height") or size.get("shortest_edge") or 336)
        ids = self.processor(images=[Image.new("RGB", (side, side))], text=[prompt])["input_ids"][0]
        ids = [int(i) for i in ids]
        return [t for k, t in enumerate(ids) if t != self.image_token_id or k == 0 or ids[k - 1] != t]

    def check_tokenization(self, template: str, questions: Sequence[str] = ("Describe this image.",)) -> bool:
        """Compare the processor's prompt ids with LLaVA's chunked ones (llava_prompt_ids) for ``questions``
        under ``template``; where they differ, warn once on stderr and encode prompts LLaVA's way from now on
        (the fix). Returns whether they were equal."""
        prompts = [self.prompt(template, q) for q in questions]
        if all(self.processor_prompt_ids(p) == self.llava_prompt_ids(p) for p in prompts):
            return True
        print(
            f"povid-eval: warning: {self.path}: the processor tokenizes prompts differently from LLaVA's "
            "tokenizer_image_token (the text after <image> is a chunk of its own there); using LLaVA's "
            "tokenization",
            file=sys.stderr,
        )
        self.chunked = True
        return False

    def _chunked_batch(self, prompts: Sequence[str], processed: torch.Tensor) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask of LLaVA's chunked ids, the image token expanded as the processor does,
        left-padded."""
        n_image = int((processed[0] == self.image_token_id).sum())
        rows = []
        for p in prompts:
            ids = []
            for t in self.llava_prompt_ids(p):
                ids += [t] * n_image if t == self.image_token_id else [t]
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return {"input_ids": input_ids, "attention_mask": mask}

    def prepare_images(self, images: Sequence) -> list:
        """RGB images as the model's image policy wants them before its image processor (image_aspect_ratio:
        "pad" pads each to a square of the processor's mean colour, as LLaVA-1.5 does)."""
        images = [im.convert("RGB") for im in images]
        if self.image_aspect_ratio != "pad":
            return images
        fill = tuple(int(x * 255) for x in self.processor.image_processor.image_mean)
        return [pad_to_square(im, fill) for im in images]

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
        scorable: bool = False,
    ) -> list[list[int]]:
        """New token ids per prompt, up to and including the first end-of-sequence token (no padding).

        Greedy unless ``do_sample``; sampling uses temperature and nucleus top_p only (top_k off), seeded by
        ``seed`` without touching the global RNG state. Like LLaVA's own generation, any token may come out;
        with ``scorable`` (training's y_l^n, which is scored again after its prompt) the image token, padding
        and <s> (when distinct from </s>) are suppressed.
        """
        from transformers import LogitsProcessorList

        if not prompts:
            return []
        batch = self.encode(images, prompts)
        tok = self.tokenizer
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if scorable:
            banned = {self.image_token_id, tok.pad_token_id, tok.bos_token_id} - {None, tok.eos_token_id}
            kwargs["suppress_tokens"] = sorted(banned)
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
        return capitalize_sentences(" ".join(text.split())) if self._lowercases else text  # else: as LLaVA does

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
