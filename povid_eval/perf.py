"""`povid-eval perf`: speed benchmarks (speed targets live here, never in timed tests).

Measured after each one-off load (the CHAIR run is the first, cold-cache one; the bootstrap the best of 3):
- CHAIR scoring of a captions file under both variants (target: 500 captions < 3 s);
- the cluster bootstrap: 10,000 resamples of 500 units (target: well under 1 s).

``--train`` (``train_step_speed``) instead times one optimizer step on the embedded base, 16 preference records:
our DPO, our POVID (paper form) and TRL's DPOTrainer (when trl is installed), median of 5 after a warm-up.

``--generate llava-1.5-7b`` (``generation_speed``) times batched greedy generation of a randomly initialised
LLaVA-1.5-7B-shaped model in bf16 on a GPU (batch 16, 617-token prompts, 64 new tokens): tokens/s and peak
memory, without downloading weights. ``--generate tiny --device cpu`` runs the same code at toy size.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from datasets import Dataset

from povid_eval import cards
from povid_eval.benches import coco
from povid_eval.benches.chair import scorer as chair
from povid_eval.core import stats
from povid_eval.core.io import read_image, read_records
from povid_eval.train.preferences import Preference
from povid_eval.vlm import generate as generate_module
from povid_eval.vlm.build import build_tiny_llava
from povid_eval.world import text as world_text

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
            chair.aggregate(
                [
                    chair.score_caption(
                        chair.normalize_image_id(r["image_id"]),
                        r["caption"],
                        gt[chair.normalize_image_id(r["image_id"])],
                        v,
                    )
                    for r in rows
                ]
            )

        out[f"{variant}_score_s"] = _best(score_all, repeat)
    return out


def bootstrap_speed(n_units: int = 500, n_resamples: int = 10_000, repeat: int = 3) -> dict[str, float]:
    units = np.random.default_rng(0).integers(0, 5, size=(n_units, 8)).astype(float) + 1
    return {
        "bootstrap_s": _best(
            lambda: stats.bootstrap_intervals(units, chair.from_sums, n_resamples=n_resamples), repeat
        ),
        "units": n_units,
        "resamples": n_resamples,
    }


def llava_shape_generation_speed(
    prompts: int = 16, new_tokens: int = 32, run_items: int = 32, threads: int = 0, world: str | Path = "data/world"
) -> dict:
    """Greedy generation with the LLAVA_MINI model (random weights, LLaVA-1.5's 576 image tokens) through
    povid-eval's own path (VLM.generate: padding to square, the processor, left-padded batches): tokens/s at batch
    1 and at batch ``prompts`` over the same ``prompts`` questions of unequal lengths, and whether both give the
    same outputs; then a real `povid-eval run` of the world's CHAIR card (its first ``run_items`` images, batch
    16) with a model card for that model: the runner's wall time and its overhead, everything outside the
    model's generate calls (reading images, caching samples, scoring, the doctor's checks, the bootstrap)."""
    import torch

    from povid_eval import world as synthetic_world
    from povid_eval.run import runner
    from povid_eval.vlm import load_vlm

    torch.set_num_threads(threads or torch.get_num_threads())
    synthetic_world.ensure(cards.resolve_path(world))
    template = "USER: <image>\n{prompt} ASSISTANT:"
    out: dict = {"shape": "llava-1.5-mini", "threads": torch.get_num_threads(), "new_tokens": new_tokens}
    saved = {k: os.environ.get(k) for k in ("POVID_EVAL_MODELS", "POVID_EVAL_CACHE")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = llava_mini(Path(tmp) / "model")
        (Path(tmp) / "images").mkdir()
        prefs = llava_mini_preferences(Path(tmp) / "images", prompts)
        vlm = load_vlm(folder)
        images = [read_image(p.image) for p in prefs]
        texts = [template.replace("{prompt}", " ".join(p.prompt.split()[: 5 + i % 20])) for i, p in enumerate(prefs)]
        timings, outputs = {}, {}
        for batch in (1, prompts):
            start = time.perf_counter()
            ids = []
            for b in range(0, prompts, batch):
                ids += vlm.generate_ids(images[b : b + batch], texts[b : b + batch], max_new_tokens=new_tokens)
            timings[batch] = time.perf_counter() - start
            outputs[batch] = ids
            out[f"batch_{batch}_tokens_per_s"] = round(sum(map(len, ids)) / timings[batch], 1)
        out["identical_outputs"] = outputs[1] == outputs[prompts]
        out[f"batch_{prompts}/batch_1_speedup"] = round(timings[1] / timings[prompts], 2)
        # the runner around the same model
        os.environ["POVID_EVAL_MODELS"] = str(Path(tmp) / "models")
        os.environ["POVID_EVAL_CACHE"] = str(Path(tmp) / "cache")
        (Path(tmp) / "models").mkdir()
        (Path(tmp) / "models" / "mini.toml").write_text(cards.to_toml({"path": str(folder), "template": template}))
        try:
            inner = generate_module.for_card(cards.load_model_card("mini"))
            spent = [0.0]

            def timed(*args, **kwargs):
                t0 = time.perf_counter()
                answers = inner(*args, **kwargs)
                spent[0] += time.perf_counter() - t0
                return answers

            start = time.perf_counter()
            runner.run("mini", "chair", results=Path(tmp) / "results", limit=run_items, generate=timed, progress=False)
            wall = time.perf_counter() - start
        finally:
            generate_module._LOADED.clear()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    out["run_items"] = run_items
    out["run_wall_s"] = round(wall, 2)
    out["run_generate_s"] = round(spent[0], 2)
    out["runner_overhead_s_per_sample"] = round((wall - spent[0]) / run_items, 4)
    out["runner_overhead_share"] = round((wall - spent[0]) / wall, 4)
    return out


# ---------------------------------------------------------------------------------------------- 7B memory

GPUS = (("RTX 4090 / L4", 24), ("A100 40GB", 40), ("L40S / A6000", 48), ("A100 / H100 80GB", 80), ("H200", 141))


def llava_7b_memory(
    batches=(1, 2, 4, 8),
    lora_r: int = 128,
    prompt_tokens: int = 40,
    response_tokens: int = 100,
    shape: str = "llava-1.5-7b",
) -> list[dict]:
    """GPU memory of one LoRA POVID step on LLaVA-1.5-7B, derived from the model's shapes on the meta device
    (no weights, no GPU): the language model's forward runs on meta tensors as the trainer runs it (prefix
    sharing: per record [576 image + ``prompt_tokens`` prompt, y_w, y_l^t] and [noisy prefix, y_l^n], responses
    of ``response_tokens``), and the bytes autograd saves for backward are counted (parameters excluded, each
    storage once). Per batch: weights (bf16), LoRA (r = ``lora_r`` on every linear layer of the language model)
    with its gradients and AdamW states in fp32, saved activations in bf16, the fp32 logits of the response
    tokens (and their log-softmax), and the total; with activation checkpointing, the saved activations shrink
    to each layer's input plus one layer's activations (recomputed in the backward). On meta tensors SDPA takes
    its math path, which keeps each layer's attention matrix for the backward (reported apart): a GPU's
    memory-efficient or flash kernel keeps only a log-sum-exp per row, so the totals are upper bounds."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from povid_eval.train.loop import add_lora
    from povid_eval.vlm.logprobs import pack_shared, shared_logprobs

    config = shape_config(shape)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model = add_lora(model, r=lora_r, alpha=2 * lora_r)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    n_image = config.image_seq_length
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = config.text_config
    layers, hidden, vocab = text.num_hidden_layers, text.hidden_size, text.vocab_size
    rows = []
    for batch in batches:
        prefix = [config.image_token_index] * n_image + [5] * prompt_tokens
        keys = [("clean", i) for i in range(batch) for _ in range(2)] + [("noisy", i) for i in range(batch)]
        responses = [[7] * response_tokens] * (3 * batch)
        pack = pack_shared(keys, [prefix] * len(keys), responses, 0)
        embeds = torch.empty(*pack.input_ids.shape, hidden, device="meta", dtype=torch.bfloat16)
        keep = pack.input_ids.shape[1] - pack.first_pred
        with SavedActivations(model) as counted:
            out = model(
                inputs_embeds=embeds,
                attention_mask=pack.additive_mask(torch.bfloat16).to("meta"),
                position_ids=pack.position_ids.to("meta"),
                use_cache=False,
                logits_to_keep=keep,
            )
            shared_logprobs(out.logits, pack, len(keys), offset=pack.input_ids.shape[1] - keep).sum()
        saved = counted.bytes
        width = pack.input_ids.shape[1]
        attention = sum(b for shape, b in counted.tensors if len(shape) == 4 and shape[-2:] == (width, width))
        tokens = len(pack.token_target)
        logits = 2 * tokens * vocab * 4  # fp32 logits of the scored tokens and their log-softmax
        per_layer_input = pack.input_ids.numel() * hidden * 2
        checkpointed = layers * per_layer_input + saved / layers
        gb = lambda b: round(b / 1e9, 1)  # noqa: E731
        base = weights + lora * 16  # LoRA in fp32: weights, gradients, AdamW's two moments
        total = base + saved + logits
        fused = total - attention  # what a memory-efficient / flash SDPA kernel needs
        fused_ckpt = base + checkpointed - attention / layers + logits
        fits = lambda b: next((name for name, cap in GPUS if b / 1e9 < 0.9 * cap), "none of these")  # noqa: E731
        rows.append(
            {
                "batch": batch,
                "sequence": pack.input_ids.shape[1],
                "weights_gb": gb(weights),
                "lora_and_adamw_gb": gb(lora * 16),
                "saved_activations_gb": gb(saved),
                "of_which_attention_matrices_gb": gb(attention),
                "logits_gb": gb(logits),
                "total_math_sdpa_gb": gb(total),
                "total_gb": gb(fused),
                "fits": fits(fused),
                "checkpointed_total_gb": gb(fused_ckpt),
                "checkpointed_fits": fits(fused_ckpt),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------- API runs


class _SlowChat:
    """A loopback OpenAI-compatible endpoint (stdlib HTTP on 127.0.0.1) that answers "Yes" after ``latency``
    seconds per request, counting requests and the most in flight at once."""

    def __init__(self, latency: float):
        outer = self
        self.requests, self.in_flight, self.max_in_flight = 0, 0, 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.requests += 1
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                time.sleep(latency)
                with outer._lock:
                    outer.in_flight -= 1
                body = b'{"choices": [{"message": {"role": "assistant", "content": "Yes"}}]}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the listen backlog (socketserver's default 5 resets a burst of connections)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def api_pipeline_speed(
    items: int = 640,
    latency: float = 0.2,
    concurrency: int = 32,
    batch_size: int = 16,
    world: str | Path = "data/world",
) -> dict:
    """A `povid-eval run` of the world's POPE card (its first ``items`` items; one request per distinct image and
    question) against a loopback endpoint answering after ``latency`` s, with the card's ``concurrency``:
    pipelined (the runner's stream: the next request starts when one returns) and batched (one ``--batch-size``
    group at a time, the runner before pipelining), each against the ideal requests / concurrency x latency."""
    from povid_eval import world as synthetic_world
    from povid_eval.run import runner

    synthetic_world.ensure(cards.resolve_path(world))
    out: dict = {"items": items, "latency_s": latency, "concurrency": concurrency, "batch_size": batch_size}
    saved = {k: os.environ.get(k) for k in ("POVID_EVAL_MODELS", "POVID_EVAL_CACHE")}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["POVID_EVAL_MODELS"] = str(Path(tmp) / "models")
        (Path(tmp) / "models").mkdir()
        try:
            for mode in ("pipelined", "batched"):
                os.environ["POVID_EVAL_CACHE"] = str(Path(tmp) / f"cache-{mode}")  # every answer asked anew
                with _SlowChat(latency) as server:
                    card = {"backend": "openai", "base_url": server.url, "api_model": "m", "concurrency": concurrency}
                    (Path(tmp) / "models" / "api.toml").write_text(cards.to_toml(card))
                    generate = generate_module.for_card(cards.load_model_card("api"))
                    if mode == "batched":
                        generate = lambda *a, g=generate, **k: g(*a, **k)  # noqa: E731  (no .stream)
                    start = time.perf_counter()
                    runner.run(
                        "api",
                        "pope",
                        results=Path(tmp) / mode,
                        batch_size=batch_size,
                        limit=items,
                        generate=generate,
                        progress=False,
                    )
                    wall = time.perf_counter() - start
                    generate_module._LOADED.clear()
                ideal = server.requests / concurrency * latency
                out[f"{mode}_s"] = round(wall, 3)
                out[f"{mode}_requests"] = server.requests
                out[f"{mode}_max_in_flight"] = server.max_in_flight
                out[f"{mode}/ideal"] = round(wall / ideal, 3)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return out


def main(
    captions: Path | None = None,
    gt_objects: Path | None = None,
    train: bool = False,
    generate: str | None = None,
    device: str = "cuda",
    batch: int = 16,
    shape: str = "tiny",
    api: bool = False,
    memory: bool = False,
) -> dict:
    if train:
        if shape == "llava-1.5":
            return {"train_step_llava_1.5": llava_shape_train_speed()}
        return {"train_step": train_step_speed()}
    if generate == "llava-1.5-mini":
        return {"generation_llava_1.5_mini": llava_shape_generation_speed()}
    if generate:
        return {"generation": generation_speed(generate, device=device, batch=batch)}
    if api:
        return {"api_run": api_pipeline_speed()}
    if memory:
        return {f"llava-1.5-7b_lora_povid_batch_{r['batch']}": r for r in llava_7b_memory()}
    results = {}
    captions = captions or DEFAULT_FIXTURES / "llava-1.5-7b_greedy_captions.jsonl"
    gt_objects = gt_objects or DEFAULT_FIXTURES / "coco2014_gt_objects.json.gz"
    if captions.exists() and gt_objects.exists():
        results["chair"] = chair_speed(captions, gt_objects)
    results["bootstrap"] = bootstrap_speed()
    return results


# ---------------------------------------------------------------------------------------------- training step


def _interleaved_medians(steps: dict, repeat: int, warmup: int) -> dict[str, float]:
    """Median wall time of each step, the steps taken in turn (round ``r`` times every step once), so that a
    change of load on a shared machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def _our_step(vlm, scorer, prefs, cfg, opt, params):
    """One optimizer step exactly as train/loop.py's ``train`` takes it (one micro-batch, reference on the fly)."""
    import torch

    from povid_eval.train.loop import batch_loss

    opt.zero_grad(set_to_none=True)
    batch_loss(scorer, prefs, cfg)["loss"].backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    opt.step()


def _trl_trainer(path: Path, template: str, prefs, cfg, out_dir: Path, dtype: str = "fp32", device: str = "cpu"):
    """TRL's DPOTrainer on a fresh copy of the model at ``path``, the same LoRA (r, alpha, target modules),
    sigmoid loss, beta, reference = adapter disabled; returns (trainer, examples builder)."""
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from povid_eval.train.loop import language_model_linear_names
    from povid_eval.vlm import load_vlm

    vlm = load_vlm(path, dtype=dtype, device=device)
    tok = vlm.tokenizer

    def examples():  # the ids our Scorer scores: <s> prompt (TRL adds no special tokens), " " + text + </s>
        return [
            {
                "images": [read_image(p.image)],
                "prompt": tok.bos_token + template.replace("{prompt}", p.prompt),
                "chosen": " " + p.chosen.strip() + tok.eos_token,
                "rejected": " " + p.rejected_text.strip() + tok.eos_token,
            }
            for p in prefs
        ]

    args = DPOConfig(
        output_dir=str(out_dir),
        beta=cfg.beta,
        loss_type=["sigmoid"],
        bf16=False,
        gradient_checkpointing=False,
        max_length=None,
        per_device_train_batch_size=len(prefs),
        learning_rate=cfg.lr,
        max_grad_norm=cfg.max_grad_norm,
        report_to="none",
        save_strategy="no",
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        seed=cfg.seed,
    )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=language_model_linear_names(vlm.model),
        bias="none",
    )
    trainer = DPOTrainer(
        model=vlm.model,
        args=args,
        processing_class=vlm.processor,
        train_dataset=Dataset.from_list([dict(e) for e in examples()]),
        peft_config=lora,
    )
    return trainer, examples


def _trl_step(trainer, examples, opt, params, max_grad_norm: float):
    import torch

    opt.zero_grad(set_to_none=True)
    batch = trainer._prepare_inputs(trainer.data_collator(examples()))
    trainer.compute_loss(trainer.model, batch).backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()


def train_step_speed(
    n_records: int = 16, repeat: int = 5, warmup: int = 1, model: str = "base", world: str | Path = "data/world"
) -> dict:
    """Wall time of one optimizer step (forward + backward + clip + AdamW) on the base card's model for the same
    ``n_records`` preference records of the world: our DPO, our POVID (paper form: y_l^n under the noisy image),
    TRL's DPOTrainer (when trl is importable). Median of ``repeat`` steps after ``warmup``; LoRA r 16 / alpha 32."""

    import torch

    from povid_eval.train.loop import Scorer, TrainConfig, add_lora
    from povid_eval.train.povid import RecipeConfig, world_preferences
    from povid_eval.vlm import load_vlm

    card = cards.load_model_card(model)
    torch.set_num_threads(card.threads or 1)
    world_dir = cards.resolve_path(world)
    from povid_eval import world as synthetic_world

    synthetic_world.ensure(world_dir)
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
    steps = {}
    for name, cfg in (("dpo", dpo), ("povid", replace(dpo, loss="povid", noisy_form="paper"))):
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps[name] = lambda cfg=cfg, opt=opt: _our_step(vlm, scorer, prefs, cfg, opt, params)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        try:
            import trl  # noqa: F401  (a test dependency: the `test` extra)
        except ImportError:
            out["trl_dpo_s"] = "missing (pip install trl)"
        else:
            path = card.resolve(card.path)
            trainer, examples = _trl_trainer(path, card.template, prefs, dpo, Path(tmp), card.dtype, card.device)
            trainer.model.train()
            trl_params = [p for p in trainer.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(trl_params, lr=dpo.lr, weight_decay=dpo.weight_decay)
            steps["trl_dpo"] = lambda: _trl_step(trainer, examples, opt, trl_params, dpo.max_grad_norm)
        out |= {f"{name}_s": seconds for name, seconds in _interleaved_medians(steps, repeat, warmup).items()}
    out["povid/dpo"] = out["povid_s"] / out["dpo_s"]
    if isinstance(out["trl_dpo_s"], float):
        out["trl/dpo"] = out["trl_dpo_s"] / out["dpo_s"]
    return out


# LLaVA-1.5's sequence structure at a width a CPU step can afford: a 336-px, patch-14 tower (576 image tokens),
# the 32,064-row vocabulary, a ~40-token prompt and ~100-token responses; a 4-layer, 256-wide Llama.
LLAVA_MINI = dict(
    image_size=336,
    patch_size=14,
    vision_hidden=128,
    vision_layers=2,
    vision_heads=4,
    vision_intermediate=512,
    text_hidden=256,
    text_layers=4,
    text_heads=4,
    text_intermediate=688,
    max_positions=2048,
)
LLAVA_VOCAB = 32064


class SavedActivations:
    """Bytes of the tensors autograd saves for backward while active, each storage counted once and the
    ``model``'s parameters left out: the activation memory of a training step's forward, on any device (the
    meta device included)."""

    def __init__(self, model=None):
        self.bytes = 0
        self.tensors: list[tuple[tuple[int, ...], int]] = []  # (shape, bytes) of each storage counted
        self._seen = {p.untyped_storage()._cdata for p in model.parameters()} if model is not None else set()

    def __enter__(self):
        import torch

        def pack(t):
            key = t.untyped_storage()._cdata
            if key not in self._seen:
                self._seen.add(key)
                self.bytes += t.untyped_storage().nbytes()
                self.tensors.append((tuple(t.shape), t.untyped_storage().nbytes()))
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def llava_mini(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised LLaVA of LLAVA_MINI's shape with the world's word-level tokenizer, its embeddings
    padded to LLaVA-1.5's 32,064 rows, saved to ``folder`` (a model card's layout)."""
    model, processor = build_tiny_llava(world_text.vocabulary(), seed=seed, **LLAVA_MINI)
    model.resize_token_embeddings(LLAVA_VOCAB, mean_resizing=False)
    processor.tokenizer.model_max_length = LLAVA_MINI["max_positions"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def llava_mini_preferences(folder: Path, n: int, seed: int = 0, prompt_words: int = 30, response_words: int = 100):
    """``n`` preference records over random 500x375 images (saved in ``folder``): a ~40-token question and
    ~100-token y_w, y_l^t and y_l^n of the world's words (LLaVA-1.5's lengths, random text)."""
    from PIL import Image

    rng = random.Random(seed)
    words = [w for w in world_text.vocabulary() if w.isalpha()]
    say = lambda k: " ".join(rng.choice(words) for _ in range(k)) + "."  # noqa: E731
    prefs = []
    for i in range(n):
        pixels = np.random.default_rng(seed + i).integers(0, 256, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        n_resp = response_words + rng.randint(-10, 10)  # unequal lengths, as real answers
        prefs.append(
            Preference(
                str(i), str(folder / f"{i}.png"), say(prompt_words), say(n_resp), say(n_resp - 3), say(n_resp + 5)
            )
        )
    return prefs


def llava_shape_train_speed(records: int = 2, repeat: int = 3, warmup: int = 1, threads: int = 1) -> dict:
    """One optimizer step (forward + backward + clip + AdamW, LoRA r 16 on the language model, fp32, reference
    computed inside the step) at LLaVA-1.5's sequence structure (LLAVA_MINI): our DPO and POVID steps with and
    without prefix sharing, our DPO with precomputed reference log-probs, and TRL DPOTrainer's step on the same
    model, LoRA and records. Median of ``repeat`` after ``warmup``, the variants interleaved; ``threads`` torch
    threads (1: steady on a shared machine); memory = bytes autograd saves for backward."""
    import torch

    from povid_eval.train.loop import Scorer, TrainConfig, add_lora, batch_loss
    from povid_eval.vlm import load_vlm

    torch.set_num_threads(threads or torch.get_num_threads())
    template = "USER: <image>\n{prompt} ASSISTANT:"
    out: dict = {"shape": "llava-1.5-mini", "records": records, "repeat": repeat, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = llava_mini(Path(tmp) / "model")
        (Path(tmp) / "images").mkdir()
        prefs = llava_mini_preferences(Path(tmp) / "images", records)
        vlm = load_vlm(folder)
        dpo = TrainConfig(loss="dpo", batch_size=records)
        torch.manual_seed(0)
        vlm.model = add_lora(vlm.model, dpo.lora_r, dpo.lora_alpha, dpo.lora_dropout)
        vlm.model.train()
        params = [p for p in vlm.model.parameters() if p.requires_grad]
        scorer = Scorer(vlm, template)
        rows, _ = scorer.encode(prefs, ("chosen", "rejected_text", "rejected_noisy"))
        out["prefix_tokens"] = len(rows[0].prompt_ids)
        out["response_tokens"] = round(float(np.mean([len(r.response_ids) for r in rows])), 1)
        with torch.no_grad(), vlm.model.disable_adapter():
            reference = {
                p.id: values
                for p, values in zip(
                    prefs,
                    scorer.logprobs(*scorer.encode(prefs, ("chosen", "rejected_text"))).view(2, -1).T.tolist(),
                )
            }
        variants = {
            "dpo": (dpo, None),
            "dpo_unshared": (replace(dpo, prefix_sharing=False), None),
            "dpo_precomputed_ref": (dpo, reference),
            "povid": (replace(dpo, loss="povid"), None),
            "povid_unshared": (replace(dpo, loss="povid", prefix_sharing=False), None),
        }
        steps = {}
        for name, (cfg, ref) in variants.items():
            opt = torch.optim.AdamW(params, lr=cfg.lr)

            def step(cfg=cfg, ref=ref, opt=opt, name=name):
                opt.zero_grad(set_to_none=True)
                with SavedActivations(vlm.model) as saved:
                    loss = batch_loss(scorer, prefs, cfg, ref)["loss"]
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                out[f"{name}_saved_mb"] = round(saved.bytes / 2**20, 1)

            steps[name] = step
        try:
            import trl  # noqa: F401  (a test dependency: the `test` extra)
        except ImportError:
            out["trl_dpo_s"] = "missing (pip install trl)"
        else:
            trainer, examples = _trl_trainer(folder, template, prefs, dpo, Path(tmp) / "trl")
            trainer.model.train()
            trl_params = [p for p in trainer.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(trl_params, lr=dpo.lr)

            def trl_step():
                opt.zero_grad(set_to_none=True)
                batch = trainer._prepare_inputs(trainer.data_collator(examples()))
                with SavedActivations(trainer.model) as saved:
                    loss = trainer.compute_loss(trainer.model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trl_params, dpo.max_grad_norm)
                opt.step()
                out["trl_dpo_saved_mb"] = round(saved.bytes / 2**20, 1)

            steps["trl_dpo"] = trl_step
        for name, seconds in _interleaved_medians(steps, repeat, warmup).items():
            out[f"{name}_s"] = round(seconds, 3)
    if isinstance(out["trl_dpo_s"], float):
        out["dpo/trl"] = round(out["dpo_s"] / out["trl_dpo_s"], 3)
        out["dpo_memory/trl"] = round(out["dpo_saved_mb"] / out["trl_dpo_saved_mb"], 3)
        out["dpo_precomputed_ref/trl"] = round(out["dpo_precomputed_ref_s"] / out["trl_dpo_s"], 3)
    out["povid/povid_unshared"] = round(out["povid_s"] / out["povid_unshared_s"], 3)
    out["dpo/dpo_unshared"] = round(out["dpo_s"] / out["dpo_unshared_s"], 3)
    return out


# ---------------------------------------------------------------------------------------------- generation

# LLaVA-1.5-7B's shapes: CLIP ViT-L/14 at 336 px (576 patches, features of layer -2), a 2-layer GELU projector,
# Llama-2-7B / Vicuna-7B (32 layers, hidden 4096, vocab 32064 as llava-hf pads it).
SHAPES = {
    "llava-1.5-7b": dict(
        vision=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
        ),
        text=dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
            max_position_embeddings=4096,
        ),
    ),
    "tiny": dict(
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        text=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=128,
            max_position_embeddings=256,
        ),
    ),
}


def shape_config(shape: str):
    """LlavaConfig of a SHAPES entry (the image token is the last id of the vocabulary)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    s = SHAPES[shape]
    vision = CLIPVisionConfig(**s["vision"])
    return LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**s["text"]),
        image_token_index=s["text"]["vocab_size"] - 1,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
    )


def generation_speed(
    shape: str = "llava-1.5-7b",
    dtype: str = "bf16",
    device: str = "cuda",
    batch: int = 16,
    prompt_tokens: int = 40,
    new_tokens: int = 64,
    seed: int = 0,
) -> dict:
    """Batched greedy generation of a randomly initialised LLaVA of ``shape`` (no weights needed): every row
    is an image (its patches as image tokens) + ``prompt_tokens`` text tokens and generates exactly
    ``new_tokens``. Reports prefill time, decode tokens/s (all rows), and peak GPU memory."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from povid_eval.vlm.model import DTYPES

    config = shape_config(shape)
    vision, image_token, n_image = config.vision_config, config.image_token_index, config.image_seq_length
    torch.manual_seed(seed)
    start = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    build_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(3, image_token, (batch, prompt_tokens), generator=gen)
    ids = torch.cat([torch.full((batch, 1), 1), torch.full((batch, n_image), image_token), text], dim=1).to(device)
    pixels = torch.randn(batch, 3, vision.image_size, vision.image_size, generator=gen).to(device, DTYPES[dtype])
    cuda = torch.device(device).type == "cuda"

    def run(n: int) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=pixels,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=2,
            )
        if cuda:
            torch.cuda.synchronize()
        assert out.shape[1] == ids.shape[1] + n
        return time.perf_counter() - t0

    run(2)  # warm-up (kernels, allocator)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    prefill = run(1)
    total = run(new_tokens)
    decode_tokens = batch * (new_tokens - 1)
    return {
        "shape": shape,
        "dtype": dtype,
        "device": device,
        "batch": batch,
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
        "prompt_tokens": ids.shape[1],
        "new_tokens": new_tokens,
        "build_s": round(build_s, 2),
        "prefill_s": round(prefill, 4),
        "generate_s": round(total, 3),
        "decode_tokens_per_s": round(decode_tokens / max(total - prefill, 1e-9), 1),
        "tokens_per_s": round(batch * new_tokens / total, 1),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
    }
