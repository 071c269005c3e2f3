"""The PEFT DPO loop: LoRA on the language model, adapter-disabled reference, checkpoints that resume.

One optimizer step (``train``), for a batch of preference records (train/preferences.py):

 1. images: the clean image of every record, and for POVID's noisy term the diffusion-noised copy
    (vlm/noise.py, seeded per record); the vision tower and projector run ONCE per distinct image per
    step, without gradient (they are frozen: LoRA is on the language model only), and their features are
    spliced in place of the ``<image>`` tokens for every response that shares the image.
 2. responses, right-padded after their prompts: y_w and y_l^t under the clean image; y_l^n under the noisy
    image (the paper's pi(y_l^n | x^n), ``noisy_form="paper"``) or under the clean one (the release's,
    ``noisy_form="release"``). y_l^n is scored from its generated token ids when the record has them.
 3. log pi = summed log-probs of the response tokens (prompt masked; vlm/logprobs.py), once with the adapter
    (policy, with gradient) and once with the adapter disabled (reference, no gradient): the reference is
    the same network, not a second copy in memory. ``precompute_reference`` computes all reference log-probs
    once before training instead (they never change).
 4. the loss (train/dpo.py): ``dpo`` (y_w vs y_l^t), ``noise`` (y_w vs y_l^n: the noise-only ablation) or
    ``povid`` (0.5 / 0.5 of both); optional ``sft_weight`` * mean token NLL of y_w (an anchor on the chosen
    answer as in RPO, Pang et al. 2024; not part of POVID, 0 by default).
 5. gradient accumulation over ``grad_accum`` micro-batches, clipping, AdamW, linear warm-up then cosine.

Determinism: batch k is a fixed function of (seed, k) (a seeded permutation per epoch), so a run resumed
from a checkpoint takes exactly the steps an uninterrupted run takes. Checkpoints are PEFT adapter folders
(adapter_model.safetensors) plus the optimizer state in safetensors and a json state, written to a temp
folder and renamed.

Data parallel under ``torchrun`` (WORLD_SIZE > 1, gloo; povid_eval.core.dist): the semantics of DDP, done by hand
(an explicit all-reduce rather than a DistributedDataParallel wrapper, which would hide the PeftModel's
``disable_adapter`` and ``get_input_embeddings`` that the reference pass and the Scorer use). Every step takes
the same global batch as one process; each micro-batch is cut into WORLD_SIZE equal contiguous shards, rank r
runs forward/backward on shard r, and after the ``grad_accum`` backward passes the LoRA gradients are
all-reduced and averaged (the mean of equal shards' means is the micro-batch mean; the SFT term divides by the
whole micro-batch's token count), then every rank clips and steps identically. The logged statistics are
all-reduced means, so train_log.jsonl is a one-process run's. The initial adapter is broadcast from rank 0;
precomputed reference log-probs are computed in shards and gathered. Rank 0 alone prints and writes
train_log.jsonl, checkpoints/, adapter/ and train_info.json; the others wait at a barrier after each
checkpoint and all ranks resume from the same one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from povid_eval.core.dist import barrier as _barrier
from povid_eval.core.dist import info as _dist_info
from povid_eval.core.errors import InputError
from povid_eval.core.io import (
    STORAGE_ERRNOS,
    atomic_write_json,
    atomic_write_text,
    iter_jsonl,
    read_image,
    read_json,
    writing,
)
from povid_eval.train.dpo import PreferenceStats, combine, dpo_loss, ipo_loss
from povid_eval.train.preferences import Preference
from povid_eval.vlm.logprobs import pack_right, pack_shared, shared_logprobs, token_logprobs
from povid_eval.vlm.model import DTYPES, quiet_peft
from povid_eval.vlm.noise import DEFAULT_STEP, noisy_image

LOSSES = ("dpo", "ipo", "noise", "povid")
NOISY_FORMS = ("paper", "release")
# The language model's linear layers in LLaVA-family checkpoints (HF layout): LoRA goes here and nowhere else.
LM_PREFIXES = ("language_model.", "model.language_model.")
PROJECTOR = "multi_modal_projector"  # HF LLaVA's name for LLaVA's mm_projector


@dataclass
class TrainConfig:
    """Everything that decides the adapter (recorded in train_info.json and every checkpoint)."""

    loss: str = "dpo"
    beta: float = 0.1
    noisy_weight: float = 0.5  # POVID: L = (1 - w) DPO(y_w, y_l^t) + w DPO(y_w, y_l^n)
    noisy_form: str = "paper"
    sft_weight: float = 0.0
    steps: int = 100
    batch_size: int = 16  # preference records per optimizer step
    grad_accum: int = 1  # micro-batches per step (batch_size must divide evenly)
    lr: float = 5e-5
    warmup: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # LLaVA's LoRA training (and so POVID's: run_dpo.sh / run_povid.sh, --mm_projector_lr 2e-5) also trains
    # the multimodal projector in full, at its own learning rate: initialize_vision_modules re-enables its
    # gradients after get_peft_model froze them. None keeps the projector frozen (LoRA only); a float trains
    # it at that peak rate (same warm-up and cosine as lr), saved in the adapter as a PEFT modules_to_save
    projector_lr: float | None = None
    precompute_reference: bool = False
    # y_w and y_l^t of a record share the image + prompt prefix: one packed sequence (Scorer.logprobs); the
    # numbers are the same either way, only the cost differs
    prefix_sharing: bool = True
    # bf16 autocast of the forward passes (weights and LoRA stay in their dtype, log-softmax in fp32), as a
    # trainer's bf16 mixed precision; activation checkpointing of the language model's layers (recomputed in
    # the backward: less memory, about a third more compute)
    bf16: bool = False
    gradient_checkpointing: bool = False
    checkpoint_every: int = 50
    seed: int = 0

    def check(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.noisy_form not in NOISY_FORMS:
            raise ValueError(f"noisy_form must be one of {', '.join(NOISY_FORMS)}, got {self.noisy_form!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of grad_accum {self.grad_accum}")


# ---------------------------------------------------------------------------------------------- LoRA


def language_model_linear_names(model) -> list[str]:
    """Qualified names of every nn.Linear inside the language model (not the vision tower, projector, lm_head)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return [
        name
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(LM_PREFIXES)
    ]


def projector_of(model) -> torch.nn.Module:
    """The model's multimodal projector: a PEFT modules_to_save wrapper (``modules_to_save`` holds the trained
    copy) when the adapter carries its own (add_lora(projector=True)), else the base's module."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.model, PROJECTOR)


def add_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0, projector: bool = False):
    """Wrap a LLaVA model in a fresh PEFT LoRA adapter on the language model's linear layers; with
    ``projector``, the multimodal projector also becomes a trainable full copy (PEFT modules_to_save: the
    adapter disabled runs the original, as the reference must)."""
    from peft import LoraConfig, get_peft_model

    targets = language_model_linear_names(model)
    if not targets:
        raise ValueError("no linear layer under 'language_model' found: is this a LLaVA-family model?")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        modules_to_save=[PROJECTOR] if projector else None,
    )
    with quiet_peft():
        return get_peft_model(model, config)


def parameter_breakdown(model) -> dict[str, dict[str, int]]:
    """{submodule: {trainable, total}} for vision_tower, multi_modal_projector, language_model, lm_head."""
    out: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        part = next(
            (k for k in ("vision_tower", "multi_modal_projector", "language_model", "lm_head") if k in name), "other"
        )
        row = out.setdefault(part, {"trainable": 0, "total": 0})
        row["total"] += p.numel()
        row["trainable"] += p.numel() if p.requires_grad else 0
    return out


def format_breakdown(breakdown: dict[str, dict[str, int]]) -> str:
    lines = [f"{'submodule':<22} {'trainable':>11} {'total':>11}"]
    for part, row in breakdown.items():
        lines.append(f"{part:<22} {row['trainable']:>11,} {row['total']:>11,}")
    total = sum(r["total"] for r in breakdown.values())
    trainable = sum(r["trainable"] for r in breakdown.values())
    lines.append(f"{'all':<22} {trainable:>11,} {total:>11,}  ({100 * trainable / max(total, 1):.2f}% trainable)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class Row:
    """One response to score: which image (key into the step's features), prompt ids, response ids."""

    image: tuple
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]


def image_key(pref: Preference, noisy: bool) -> tuple:
    if not noisy:
        return (pref.image,)
    return (
        pref.image,
        pref.noise_step if pref.noise_step is not None else DEFAULT_STEP,
        pref.noise_seed if pref.noise_seed is not None else 0,
    )


def load_image(key: tuple):
    """The clean image ``(path,)`` or its diffusion-noised copy ``(path, step, seed)``."""
    image = read_image(key[0], "preference image")
    return image if len(key) == 1 else noisy_image(image, step=key[1], seed=key[2])


class Scorer:
    """Turns preference records into rows and rows into summed response log-probs, with the image features
    of each distinct image computed once per call (see the module docstring)."""

    def __init__(self, vlm, template: str):
        self.vlm = vlm
        self.template = template
        self._prompt_ids: dict[str, tuple[int, ...]] = {}
        self._response_ids: dict[str, tuple[int, ...]] = {}

    def prompt_ids(self, prompt: str, image) -> tuple[int, ...]:
        if prompt not in self._prompt_ids:  # the image-token expansion does not depend on the image itself
            _, ids = self.vlm.prompt_token_ids([image], [self.vlm.prompt(self.template, prompt)])
            self._prompt_ids[prompt] = tuple(ids[0])
        return self._prompt_ids[prompt]

    def response_ids(self, text: str) -> tuple[int, ...]:
        if text not in self._response_ids:
            self._response_ids[text] = tuple(self.vlm.response_token_ids([text])[0])
        return self._response_ids[text]

    def rows(
        self, prefs: Sequence[Preference], kinds: Sequence[str], noisy_form: str = "paper", images: dict | None = None
    ) -> list[Row]:
        """Rows grouped by kind: all 'chosen' rows, then all 'rejected_text', then all 'rejected_noisy'."""
        images = {} if images is None else images
        out = []
        for kind in kinds:
            for p in prefs:
                noisy = kind == "rejected_noisy" and noisy_form == "paper"
                key = image_key(p, noisy)
                if key not in images:
                    images[key] = load_image(key)
                if kind == "rejected_noisy":
                    if p.rejected_noisy_ids is None and p.rejected_noisy is None:
                        raise InputError(None, f"record {p.id!r} has no rejected_noisy answer (needed by this loss)")
                    ids = p.rejected_noisy_ids or self.response_ids(p.rejected_noisy)
                else:
                    ids = self.response_ids(getattr(p, kind))
                out.append(Row(key, self.prompt_ids(p.prompt, images[key]), tuple(ids)))
        return out

    def encode(self, prefs: Sequence[Preference], kinds: Sequence[str], noisy_form: str = "paper"):
        """(rows, image features) of a batch: the images loaded once, each through the tower once."""
        images: dict = {}
        rows = self.rows(prefs, kinds, noisy_form, images)
        return rows, self.image_features(list(dict.fromkeys(r.image for r in rows)), images)

    def projector_in_adapter(self) -> bool:
        """Whether the adapter holds its own projector (add_lora(projector=True): a PEFT modules_to_save
        wrapper, which runs the original under disable_adapter). Then the cached image features stop before
        the projector and every forward runs it (by structure, not requires_grad: PEFT's disable_adapter
        switches that off)."""
        return hasattr(self.projector(), "modules_to_save")

    def projector(self) -> torch.nn.Module:
        return projector_of(self.vlm.model)

    @torch.no_grad()
    def image_features(self, keys: Sequence[tuple], images: dict) -> dict[tuple, torch.Tensor]:
        """Image features [n_image_tokens, dim] per distinct image key, computed once: projected (tower +
        projector), or the tower's selected features when the adapter holds its own projector (_embeds then
        runs it, with gradient, or the original under disable_adapter for the reference)."""
        model = self.vlm.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config
        prepared = self.vlm.prepare_images([images[k] for k in keys])
        pixels = self.vlm.processor.image_processor(prepared, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.vlm.device, DTYPES[self.vlm.dtype])
        projector = self.projector()
        skip = self.projector_in_adapter()
        if skip:  # the tower's selected features only: LlavaModel.get_image_features with an identity projector
            setattr(base.model, PROJECTOR, torch.nn.Identity())
        try:
            feats = base.get_image_features(
                pixel_values=pixels,
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
            )
        finally:
            if skip:
                setattr(base.model, PROJECTOR, projector)
        feats = getattr(feats, "pooler_output", feats)
        return {k: f for k, f in zip(keys, feats)}

    def logprobs(
        self,
        rows: Sequence[Row],
        features: dict[tuple, torch.Tensor],
        *,
        with_token_counts: bool = False,
        share_prefix: bool = True,
    ):
        """Summed response log-probs [len(rows)] under the model as it is now (adapter on or off). With
        ``share_prefix``, rows of the same image and prompt (a record's y_w and y_l^t) run as one packed
        sequence behind one copy of the image + prompt prefix (vlm/logprobs.pack_shared); else one padded
        sequence per row. The two give the same log-probs (to float rounding) and gradients."""
        if share_prefix:
            return self._shared_logprobs(rows, features, with_token_counts)
        model = self.vlm.model
        pad = self.vlm.tokenizer.pad_token_id
        input_ids, attention_mask, response_mask = pack_right(
            [r.prompt_ids for r in rows], [r.response_ids for r in rows], pad
        )
        device = self.vlm.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        embeds = self._embeds(input_ids, [features[r.image] for r in rows])
        out = model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        logps = token_logprobs(out.logits, input_ids, response_mask.to(device))
        if with_token_counts:
            return logps, response_mask[:, 1:].sum(-1).to(device)
        return logps

    def _embeds(self, input_ids: torch.Tensor, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token embeddings of ``input_ids`` with each sequence's image tokens replaced by its image's features
        (``images``: one [n_image_tokens, hidden] tensor per sequence, in order)."""
        embeds = self.vlm.model.get_input_embeddings()(input_ids)
        image_mask = (input_ids == self.vlm.image_token_id).unsqueeze(-1)
        feats = torch.cat(list(images))
        if self.projector_in_adapter():
            feats = self.projector()(feats)
        return embeds.masked_scatter(image_mask, feats.to(embeds.dtype))

    def _shared_logprobs(self, rows: Sequence[Row], features: dict[tuple, torch.Tensor], with_token_counts: bool):
        model = self.vlm.model
        pack = pack_shared(
            [(r.image, r.prompt_ids) for r in rows],
            [r.prompt_ids for r in rows],
            [r.response_ids for r in rows],
            self.vlm.tokenizer.pad_token_id,
        )
        device = self.vlm.device
        input_ids = pack.input_ids.to(device)
        embeds = self._embeds(input_ids, [features[rows[g[0]].image] for g in pack.groups])
        keep = input_ids.shape[1] - pack.first_pred  # logits only from the first predicting position on
        out = model(
            inputs_embeds=embeds,
            attention_mask=pack.additive_mask(embeds.dtype).to(device),
            position_ids=pack.position_ids.to(device),
            use_cache=False,
            logits_to_keep=keep,
        )
        logps = shared_logprobs(out.logits, pack, len(rows), offset=input_ids.shape[1] - keep)
        if with_token_counts:
            counts = torch.tensor([len(r.response_ids) for r in rows], device=device)
            return logps, counts
        return logps


def kinds_for(loss: str) -> tuple[str, ...]:
    return {
        "dpo": ("chosen", "rejected_text"),
        "ipo": ("chosen", "rejected_text"),
        "noise": ("chosen", "rejected_noisy"),
        "povid": ("chosen", "rejected_text", "rejected_noisy"),
    }[loss]


def preference_loss(cfg: TrainConfig, policy: torch.Tensor, reference: torch.Tensor, n: int) -> dict:
    """The configured loss on log-probs laid out as rows() lays them out (blocks of n per kind)."""
    blocks = [policy[i * n : (i + 1) * n] for i in range(len(policy) // n)]
    refs = [reference[i * n : (i + 1) * n] for i in range(len(reference) // n)]
    parts: dict[str, PreferenceStats] = {}
    if cfg.loss in ("dpo", "noise"):
        parts[cfg.loss] = dpo_loss(blocks[0], blocks[1], refs[0], refs[1], cfg.beta)
        total = parts[cfg.loss].loss
    elif cfg.loss == "ipo":
        parts["ipo"] = ipo_loss(blocks[0], blocks[1], refs[0], refs[1], cfg.beta)
        total = parts["ipo"].loss
    else:
        parts["text"] = dpo_loss(blocks[0], blocks[1], refs[0], refs[1], cfg.beta)
        parts["noise"] = dpo_loss(blocks[0], blocks[2], refs[0], refs[2], cfg.beta)
        total = combine(parts["text"], parts["noise"], cfg.noisy_weight).loss
    return {"loss": total, "parts": parts}


def autocast(vlm, cfg: TrainConfig):
    """The forward passes' autocast context: bf16 when ``cfg.bf16``, else a no-op."""
    return torch.autocast(torch.device(vlm.device).type, dtype=torch.bfloat16, enabled=cfg.bf16)


def batch_loss(
    scorer: Scorer,
    prefs: Sequence[Preference],
    cfg: TrainConfig,
    reference: dict[str, list[float]] | None = None,
    *,
    sft_tokens: float | None = None,
) -> dict:
    """One micro-batch: rows, image features once per image, policy log-probs (with gradient), reference
    log-probs (adapter disabled, or the precomputed ``reference``), the configured loss plus the optional
    SFT term. Returns preference_loss's {"loss", "parts"} with "rows", "policy", "reference" (and "sft_nll").
    ``sft_tokens``: the SFT term's token count to divide by (default: this batch's chosen tokens; a data
    parallel shard passes its micro-batch's total / WORLD_SIZE, so that the ranks' mean is the whole's)."""
    kinds = kinds_for(cfg.loss)
    rows, feats = scorer.encode(prefs, kinds, cfg.noisy_form)
    with autocast(scorer.vlm, cfg):
        policy, counts = scorer.logprobs(rows, feats, with_token_counts=True, share_prefix=cfg.prefix_sharing)
    if reference is not None:
        ref = torch.tensor(
            [reference[p.id][k] for k in range(len(kinds)) for p in prefs], dtype=policy.dtype, device=policy.device
        )
    else:
        with torch.no_grad(), scorer.vlm.model.disable_adapter(), autocast(scorer.vlm, cfg):
            ref = scorer.logprobs(rows, feats, share_prefix=cfg.prefix_sharing)
    result = preference_loss(cfg, policy, ref, len(prefs))
    result.update(rows=rows, policy=policy, reference=ref)
    if cfg.sft_weight:
        n = len(prefs)
        result["sft_nll"] = -(policy[:n].sum() / (counts[:n].sum() if sft_tokens is None else sft_tokens))
        result["loss"] = result["loss"] + cfg.sft_weight * result["sft_nll"]
    return result


# ---------------------------------------------------------------------------------------------- schedule


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Records of optimizer step ``step``: consecutive slices of a seeded permutation per epoch."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(f"povid-train:{seed}:{epoch}").shuffle(order)
    return order[k * batch_size : (k + 1) * batch_size]


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------- checkpoints


def _save_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import save_file

    state = opt.state_dict()
    tensors = {
        f"{idx}.{name}": value.detach().cpu().contiguous()
        for idx, s in state["state"].items()
        for name, value in s.items()
        if torch.is_tensor(value)
    }
    save_file(tensors, str(folder / "optimizer.safetensors"))
    atomic_write_json(folder / "optimizer_groups.json", state["param_groups"])


def _load_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = read_json(folder / "optimizer_groups.json")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise InputError(folder / "optimizer_groups.json", "expected a list of parameter groups")
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_adapter(model, folder: Path) -> None:
    """The PEFT adapter (safetensors) into ``folder``, byte-identical for the same weights: PEFT writes
    ``target_modules`` from a set, in an order that changes from process to process, so it is sorted."""
    model.save_pretrained(str(folder), safe_serialization=True)
    config_path = folder / "adapter_config.json"
    config = read_json(config_path)
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_checkpoint(model, opt, folder: Path, state: dict) -> None:
    """adapter + optimizer + state.json into ``folder`` (via a temp folder renamed at the end)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_adapter(model, tmp)
    _save_optimizer(opt, tmp)
    atomic_write_json(tmp / "state.json", state)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def latest_checkpoint(folder: Path) -> Path | None:
    done = [
        p
        for p in folder.glob("step-*")
        if p.is_dir() and p.name.split("-", 1)[1].isdigit() and (p / "state.json").is_file()
    ]  # not step-N.tmp: a kill between writing and renaming
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_checkpoint(model, opt, folder: Path) -> dict:
    """Restore the adapter and the optimizer from a checkpoint; its state.json ({step, config}). A checkpoint
    that cannot be read (truncated by a full disk, edited) is an InputError naming it."""
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state = read_json(folder / "state.json")
    if (
        not isinstance(state, dict)
        or isinstance(state.get("step"), bool)
        or not isinstance(state.get("step"), int)
        or state["step"] < 1
        or not isinstance(state.get("config"), dict)
    ):
        raise InputError(
            folder / "state.json",
            "corrupt checkpoint state (expected {step >= 1, config}): delete "
            f"{folder} to train this stage again from its start",
        )
    for name, restore in (
        ("adapter_model.safetensors", lambda f: set_peft_model_state_dict(model, load_file(str(f)))),
        ("optimizer.safetensors", lambda f: _load_optimizer(opt, folder)),
    ):
        try:
            restore(folder / name)
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
            if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
                raise
            raise InputError(
                folder / name,
                f"corrupt checkpoint ({type(e).__name__}: {str(e).strip()[:160]}): "
                f"delete {folder} to train this stage again from its start",
            ) from None
    return state


def read_log(path: Path, before: int) -> list[str]:
    """The lines of a train_log.jsonl whose step is below ``before`` (the steps a checkpoint holds)."""
    kept = []
    for line, rec in iter_jsonl(path):
        if not isinstance(rec, dict) or isinstance(rec.get("step"), bool) or not isinstance(rec.get("step"), int):
            raise InputError(
                path,
                "corrupt training log line (expected an object with an integer 'step'): "
                "delete the file (it is only the log)",
                line=line,
            )
        if rec["step"] < before:
            kept.append(json.dumps(rec))
    return kept


# ---------------------------------------------------------------------------------------------- data parallel


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One float32 CPU vector of ``tensors`` (gloo reduces CPU tensors; LoRA weights are small)."""
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float32) for t in tensors])


def _unflat(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def _broadcast_parameters(params: Sequence[torch.nn.Parameter]) -> None:
    """Rank 0's values on every rank (the same seed gives the same LoRA init; this makes it certain)."""
    import torch.distributed as dist

    flat = _flat(params)
    dist.broadcast(flat, src=0)
    with torch.no_grad():
        _unflat(flat, params)


def _average_gradients(params: Sequence[torch.nn.Parameter], n_ranks: int) -> None:
    """Every gradient := its mean over the ranks (one all-reduce of a flat buffer, as DDP's buckets do)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = _flat([p.grad for p in params])
    dist.all_reduce(flat)
    flat /= n_ranks
    _unflat(flat, [p.grad for p in params])


def _mean_over_ranks(values: dict[str, float], n_ranks: int) -> dict[str, float]:
    """{key: mean over the ranks}; every rank has the same keys in the same order."""
    import torch.distributed as dist

    t = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(values, (t / n_ranks).tolist()))


def _sharded_reference(
    scorer: Scorer, prefs: Sequence[Preference], cfg: TrainConfig, rank: int, n_ranks: int, batch_size: int = 32
) -> dict[str, list[float]]:
    """reference_logprobs over the ranks: the same chunks of ``batch_size`` records as one process (so the
    same values), chunk c on rank c % n_ranks, then gathered on every rank."""
    import torch.distributed as dist

    mine: dict[str, list[float]] = {}
    for c, i in enumerate(range(0, len(prefs), batch_size)):
        if c % n_ranks == rank:
            mine.update(reference_logprobs(scorer, prefs[i : i + batch_size], cfg, batch_size))
    parts: list = [None] * n_ranks
    dist.all_gather_object(parts, mine)
    return {k: v for part in parts for k, v in part.items()}


# ---------------------------------------------------------------------------------------------- the loop


@torch.no_grad()
def reference_logprobs(
    scorer: Scorer, prefs: Sequence[Preference], cfg: TrainConfig, batch_size: int = 32
) -> dict[str, list[float]]:
    """log ref(y | x) of every record and kind, adapter disabled: {record id: [one value per kind]}."""
    kinds = kinds_for(cfg.loss)
    out: dict[str, list[float]] = {}
    with scorer.vlm.model.disable_adapter(), autocast(scorer.vlm, cfg):
        for i in range(0, len(prefs), batch_size):
            chunk = prefs[i : i + batch_size]
            values = scorer.logprobs(
                *scorer.encode(chunk, kinds, cfg.noisy_form), share_prefix=cfg.prefix_sharing
            ).tolist()
            for j, p in enumerate(chunk):
                out[p.id] = [values[k * len(chunk) + j] for k in range(len(kinds))]
    return out


def train(
    vlm,
    prefs: Sequence[Preference],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    template: str,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict:
    """Train a LoRA adapter on ``vlm`` (a loaded base; it is wrapped in place) and write ``out_dir``:
    adapter/ (final PEFT adapter), checkpoints/step-N/, train_log.jsonl, train_info.json. Resumes from the
    last complete checkpoint in out_dir. ``stop_after``: stop (as if killed) after that many steps.

    Under torchrun (WORLD_SIZE > 1) every rank calls this with the same arguments: data parallel as in the
    module docstring (hand-written DDP: shards of each micro-batch, gradients all-reduced and averaged; no
    DistributedDataParallel wrapper); rank 0 alone logs and writes; every rank returns the same info."""
    cfg.check()
    rank, n_ranks = _dist_info()
    if cfg.batch_size % (cfg.grad_accum * n_ranks):
        raise InputError(
            None,
            f"batch_size {cfg.batch_size} is not a multiple of grad_accum {cfg.grad_accum} "
            f"x {n_ranks} processes (each micro-batch is split evenly over the processes)",
        )
    if rank:
        log = lambda line: None  # noqa: E731  (rank 0 prints)
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if not hasattr(vlm.model, "disable_adapter"):
        vlm.model = add_lora(vlm.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.projector_lr is not None)
    model = vlm.model
    projector = projector_of(model)
    own = list(projector.modules_to_save.parameters()) if hasattr(projector, "modules_to_save") else []
    if cfg.projector_lr is not None and not own:
        raise InputError(None, "projector_lr is set but the adapter being continued has no trainable projector")
    for p in own:  # a stage without projector_lr keeps the adapter's copy as it is
        p.requires_grad_(cfg.projector_lr is not None)
    own_ids = {id(p) for p in own}
    if cfg.gradient_checkpointing:
        model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
    breakdown = parameter_breakdown(model)
    log(format_breakdown(breakdown))
    params = [p for p in model.parameters() if p.requires_grad]
    if n_ranks > 1:
        _broadcast_parameters(params)
    groups = [{"params": [p for p in params if id(p) not in own_ids]}]
    if cfg.projector_lr is not None:  # the projector's own rate, as LLaVA's trainer gives mm_projector_lr
        groups.append({"params": [p for p in params if id(p) in own_ids]})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    peaks = [cfg.lr, cfg.projector_lr][: len(groups)]
    scorer = Scorer(vlm, template)
    ckpt_dir = out / "checkpoints"
    log_path = out / "train_log.jsonl"
    start = 0
    last = latest_checkpoint(ckpt_dir)
    if last is not None:
        state = load_checkpoint(model, opt, last)
        if state.get("config") != asdict(cfg):
            raise InputError(
                last / "state.json",
                "checkpoint was made with another training config; use another --out or delete the checkpoints",
            )
        start = state["step"]
        log(f"resuming from {last} (step {start})")
        if rank == 0 and log_path.is_file():  # keep the log lines of the steps the checkpoint holds, drop later ones
            atomic_write_text(log_path, "".join(ln + "\n" for ln in read_log(log_path, start)))
    elif rank == 0 and log_path.is_file():
        log_path.unlink()
    _barrier(n_ranks)  # every rank has read the checkpoint before rank 0 may replace it
    if cfg.precompute_reference:
        reference = (
            _sharded_reference(scorer, prefs, cfg, rank, n_ranks)
            if n_ranks > 1
            else reference_logprobs(scorer, prefs, cfg)
        )
    else:
        reference = None
    micro = cfg.batch_size // cfg.grad_accum
    shard = micro // n_ranks  # this rank's records of each micro-batch: [rank * shard, (rank + 1) * shard)
    t0 = time.time()
    model.train()
    for step in range(start, cfg.steps):
        if stop_after is not None and step - start >= stop_after:
            break
        for group, peak in zip(opt.param_groups, peaks):
            group["lr"] = lr_at(step, cfg) * peak / cfg.lr
        batch = [prefs[i] for i in batch_indices(len(prefs), cfg.batch_size, step, cfg.seed)]
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for m in range(cfg.grad_accum):
            part = batch[m * micro : (m + 1) * micro]
            sft_tokens = None
            if n_ranks > 1 and cfg.sft_weight:  # the whole micro-batch's chosen tokens, shared out over the ranks
                sft_tokens = sum(len(scorer.response_ids(p.chosen)) for p in part) / n_ranks
            result = batch_loss(scorer, part[rank * shard : (rank + 1) * shard], cfg, reference, sft_tokens=sft_tokens)
            loss = result["loss"]
            if "sft_nll" in result:
                sums["sft_nll"] = sums.get("sft_nll", 0.0) + result["sft_nll"].item() / cfg.grad_accum
            (loss / cfg.grad_accum).backward()
            sums["loss"] = sums.get("loss", 0.0) + loss.item() / cfg.grad_accum
            for name, stats in result["parts"].items():
                prefix = "" if len(result["parts"]) == 1 else f"{name}/"
                for f in ("reward_chosen", "reward_rejected", "margin", "accuracy"):
                    key = prefix + f
                    sums[key] = sums.get(key, 0.0) + getattr(stats, f).item() / cfg.grad_accum
        if n_ranks > 1:
            _average_gradients(params, n_ranks)
            sums = _mean_over_ranks(sums, n_ranks)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        record = {"step": step, "lr": lr_at(step, cfg), **{k: round(v, 6) for k, v in sums.items()}}
        if cfg.projector_lr is not None:
            record["projector_lr"] = opt.param_groups[1]["lr"]
        if rank == 0:
            with writing(log_path), open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        done = step + 1
        if done % max(1, cfg.steps // 20) == 0 or done == cfg.steps:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k not in ("step", "lr", "projector_lr"))
            log(f"[{cfg.loss}] step {done}/{cfg.steps} {shown} ({time.time() - t0:.0f}s)")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            if rank == 0:
                save_checkpoint(model, opt, ckpt_dir / f"step-{done}", {"step": done, "config": asdict(cfg)})
                for old in ckpt_dir.glob("step-*"):
                    if old.name != f"step-{done}":
                        shutil.rmtree(old, ignore_errors=True)
            _barrier(n_ranks)  # nobody goes on (or resumes) before the checkpoint is whole
    model.eval()
    finished = latest_checkpoint(ckpt_dir)
    complete = finished is not None and int(finished.name.split("-")[1]) == cfg.steps
    info = {
        "config": asdict(cfg),
        "records": len(prefs),
        "parameters": breakdown,
        "complete": complete,
        "wall_s": round(time.time() - t0, 1),
    }
    if rank == 0:
        if complete:
            save_adapter(model, out / "adapter.tmp")
            shutil.rmtree(out / "adapter", ignore_errors=True)
            (out / "adapter.tmp").rename(out / "adapter")
        atomic_write_json(out / "train_info.json", info)
    _barrier(n_ranks)
    return info


def merge_adapter(vlm, out_dir: str | Path) -> Path:
    """Merge the LoRA weights into the base and save a full HF model folder (+ processor) to ``out_dir``."""
    out = Path(out_dir)
    merged = vlm.model.merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    vlm.processor.save_pretrained(str(out))
    print(f"merged model written to {out}", file=sys.stderr)
    return out
