"""`povid-eval perf`: speed benchmarks (speed targets live here, never in timed tests).

Measured after each one-off load (the CHAIR run is the first, cold-cache one; the bootstrap the best of 3):
- CHAIR scoring of a captions file under both variants (target: 500 captions < 3 s);
- the cluster bootstrap: 10,000 resamples of 500 units (target: well under 1 s).

``--train`` (``train_step_speed``) instead times one optimizer step on the embedded base, 16 preference records:
our DPO, our POVID (paper form) and TRL's DPOTrainer (when trl is installed), median of 5 after a warm-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from povid_eval import coco
from povid_eval.benches import chair
from povid_eval.io import read_records
from povid_eval.report import stats

DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "chair"


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def chair_speed(captions: Path, gt_objects: Path, repeat: int = 1) -> dict[str, float]:
    start = time.perf_counter()
    gt = coco.load_gt_objects(gt_objects)
    rows = [r for _, r in read_records(captions)]
    out = {"gt_load_s": time.perf_counter() - start, "captions": len(rows)}
    for variant in chair.VARIANTS:
        start = time.perf_counter()
        chair.caption_mentions("A warm-up caption with a dog.", variant)
        out[f"{variant}_warmup_s"] = time.perf_counter() - start

        def score_all(v=variant):
            chair.aggregate([chair.score_caption(chair.normalize_image_id(r["image_id"]), r["caption"],
                                                 gt[chair.normalize_image_id(r["image_id"])], v) for r in rows])

        out[f"{variant}_score_s"] = _best(score_all, repeat)
    return out


def bootstrap_speed(n_units: int = 500, n_resamples: int = 10_000, repeat: int = 3) -> dict[str, float]:
    units = np.random.default_rng(0).integers(0, 5, size=(n_units, 8)).astype(float) + 1
    return {"bootstrap_s": _best(lambda: stats.bootstrap_intervals(units, chair.from_sums, n_resamples=n_resamples),
                                 repeat), "units": n_units, "resamples": n_resamples}


def main(captions: Path | None = None, gt_objects: Path | None = None, train: bool = False) -> dict:
    if train:
        return {"train_step": train_step_speed()}
    results = {}
    captions = captions or DEFAULT_FIXTURES / "llava-1.5-7b_greedy_captions.jsonl"
    gt_objects = gt_objects or DEFAULT_FIXTURES / "coco2014_gt_objects.json.gz"
    if captions.exists() and gt_objects.exists():
        results["chair"] = chair_speed(captions, gt_objects)
    results["bootstrap"] = bootstrap_speed()
    return results


# ---------------------------------------------------------------------------------------------- training step

def _median(fn, repeat: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _our_step(vlm, scorer, prefs, cfg, opt, params):
    """One optimizer step exactly as train/loop.py's ``train`` takes it (one micro-batch, reference on the fly)."""
    import torch

    from povid_eval.train.loop import batch_loss

    opt.zero_grad(set_to_none=True)
    batch_loss(scorer, prefs, cfg)["loss"].backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    opt.step()


def _trl_trainer(card, prefs, cfg, out_dir: Path):
    """TRL's DPOTrainer on a fresh copy of the base, the same LoRA (r, alpha, target modules), fp32, sigmoid
    loss, beta, reference = adapter disabled; returns (trainer, examples builder)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from povid_eval.io import read_image
    from povid_eval.train.loop import language_model_linear_names
    from povid_eval.vlm import load_vlm

    vlm = load_vlm(card.resolve(card.path), dtype=card.dtype, device=card.device)
    tok = vlm.tokenizer

    def examples():  # the ids our Scorer scores: <s> prompt (TRL adds no special tokens), " " + text + </s>
        return [{"images": [read_image(p.image)], "prompt": tok.bos_token + card.template.replace("{prompt}", p.prompt),
                 "chosen": " " + p.chosen.strip() + tok.eos_token,
                 "rejected": " " + p.rejected_text.strip() + tok.eos_token} for p in prefs]

    args = DPOConfig(output_dir=str(out_dir), beta=cfg.beta, loss_type=["sigmoid"], bf16=False,
                     gradient_checkpointing=False, max_length=None, per_device_train_batch_size=len(prefs),
                     learning_rate=cfg.lr, max_grad_norm=cfg.max_grad_norm, report_to="none", save_strategy="no",
                     use_cpu=card.device == "cpu", dataloader_num_workers=0, seed=cfg.seed)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=language_model_linear_names(vlm.model), bias="none")
    trainer = DPOTrainer(model=vlm.model, args=args, processing_class=vlm.processor,
                         train_dataset=Dataset.from_list([dict(e) for e in examples()]), peft_config=lora)
    return trainer, examples


def _trl_step(trainer, examples, opt, params, max_grad_norm: float):
    import torch

    opt.zero_grad(set_to_none=True)
    batch = trainer._prepare_inputs(trainer.data_collator(examples()))
    trainer.compute_loss(trainer.model, batch).backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()


def train_step_speed(n_records: int = 16, repeat: int = 5, warmup: int = 1, model: str = "base",
                     world: str | Path = "data/world") -> dict:
    """Wall time of one optimizer step (forward + backward + clip + AdamW) on the base card's model for the same
    ``n_records`` preference records of the world: our DPO, our POVID (paper form: y_l^n under the noisy image),
    TRL's DPOTrainer (when trl is importable). Median of ``repeat`` steps after ``warmup``; LoRA r 16 / alpha 32."""
    import tempfile
    from dataclasses import replace

    import torch

    from povid_eval import cards
    from povid_eval.train.loop import Scorer, TrainConfig, add_lora
    from povid_eval.train.povid import RecipeConfig, world_preferences
    from povid_eval.vlm import load_vlm

    card = cards.load_model_card(model)
    torch.set_num_threads(card.threads or 1)
    world_dir = Path(world) if Path(world).is_absolute() else cards.ROOT / world
    if not (world_dir / "annotations").is_dir():
        from povid_eval.runner import ensure_world

        ensure_world(cards.load_bench_card("chair"))
    vlm = load_vlm(card.resolve(card.path), dtype=card.dtype, device=card.device)
    prefs = world_preferences(vlm, world_dir, RecipeConfig(images=2 * n_records), card.template, progress=False)
    prefs = prefs[:n_records]
    dpo = TrainConfig(loss="dpo", batch_size=n_records)
    torch.manual_seed(0)
    vlm.model = add_lora(vlm.model, dpo.lora_r, dpo.lora_alpha, dpo.lora_dropout)
    vlm.model.train()
    params = [p for p in vlm.model.parameters() if p.requires_grad]
    scorer = Scorer(vlm, card.template)
    out: dict = {"records": n_records, "repeat": repeat, "threads": torch.get_num_threads()}
    for name, cfg in (("dpo", dpo), ("povid", replace(dpo, loss="povid", noisy_form="paper"))):
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        out[f"{name}_s"] = _median(lambda: _our_step(vlm, scorer, prefs, cfg, opt, params), repeat, warmup)
    try:
        import trl  # noqa: F401  (a test dependency: the `test` extra)
    except ImportError:
        out["trl_dpo_s"] = "missing (pip install trl)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trainer, examples = _trl_trainer(card, prefs, dpo, Path(tmp))
            trainer.model.train()
            trl_params = [p for p in trainer.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(trl_params, lr=dpo.lr, weight_decay=dpo.weight_decay)
            out["trl_dpo_s"] = _median(lambda: _trl_step(trainer, examples, opt, trl_params, dpo.max_grad_norm),
                                       repeat, warmup)
    out["povid/dpo"] = out["povid_s"] / out["dpo_s"]
    if isinstance(out["trl_dpo_s"], float):
        out["trl/dpo"] = out["trl_dpo_s"] / out["dpo_s"]
    return out
