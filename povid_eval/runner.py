"""run(model, bench): items -> prompts -> generations (cached per sample) -> scores -> metrics.json.

results/<model>/<bench>/samples.jsonl is append-only: one line per finished sample, written and fsynced per
batch, keyed by the item's ``key``. A rerun skips the batches already there, so a killed run resumes exactly
(a torn last line from a kill is cut off before appending; a half-written batch is regenerated whole and
only its missing lines are added). Each line is in LLaVA's answer layout
(question_id / prompt / text), so ``povid-eval score`` reads it as it is, and scoring never needs the model.

Under ``torchrun`` (RANK / WORLD_SIZE set; gloo backend) batches are sharded by rank; each rank appends to
its own samples.rank<r>.jsonl, then rank 0 merges the new lines into samples.jsonl and scores. Batches are
fixed chunks of the item list, so every sample is generated in the same batch as in a one-process run
(with the same --batch-size), and the metrics are the same.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from povid_eval import __version__, cards, score
from povid_eval.report.stats import bootstrap_intervals
from povid_eval.errors import InputError
from povid_eval.io import atomic_write_json, atomic_write_jsonl, iter_jsonl, read_image, read_json

# generate(images, questions, decoding) -> answers; the model's prompt template is applied inside (a
# chat endpoint applies its own).
Generate = Callable[[list, list[str], cards.Decoding], list[str]]


@dataclass(frozen=True)
class Item:
    """One prompt of a bench: ``key`` is unique in the bench; ``record`` holds the LLaVA-layout ids."""

    key: str
    image: Path
    prompt: str
    record: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------- items per bench

def _chair_items(card: cards.BenchCard) -> list[Item]:
    data = read_json(card.data_path("instances"))
    images = card.data_path("images")
    return [Item(str(im["id"]), images / im["file_name"], card.prompt, {"question_id": im["id"], "image_id": im["id"]})
            for im in sorted(data["images"], key=lambda im: im["id"])]


def _pope_items(card: cards.BenchCard) -> list[Item]:
    images = card.data_path("images")
    out = []
    for line, q in iter_jsonl(card.data_path("questions")):
        if not all(k in q for k in ("question_id", "image", "text", "category")):
            raise InputError(card.data_path("questions"), "expected question_id, image, text, category", line=line)
        out.append(Item(str(q["question_id"]), images / q["image"], q["text"],
                        {"question_id": q["question_id"], "category": q["category"]}))
    return out


def _mme_items(card: cards.BenchCard) -> list[Item]:
    from povid_eval.benches import mme

    gt_dir, images = card.data_path("ground_truth"), card.data_path("images")
    out = []
    for name in mme.SUBTASKS:
        path = gt_dir / f"{name}.txt"
        if not path.is_file():
            continue
        for k, (_, (image, question, _answer)) in enumerate(score.read_mme_tsv(path, 3)):
            prompt = (question.replace(card.strip, "") if card.strip else question).strip() + card.suffix
            out.append(Item(f"{name}/{image}/{k % 2}", images / name / image, prompt,
                            {"question_id": f"{name}/{image}"}))
    return out


def _mmhal_items(card: cards.BenchCard) -> list[Item]:
    records = score.load_mmhal_template(card.data_path("template"), need_answer=False)
    root = card.data_path()
    return [Item(str(i), root / r["image_src"], r["question"] + card.suffix, {"question_id": i})
            for i, r in enumerate(records)]


ITEMS = {"chair": _chair_items, "pope": _pope_items, "mme": _mme_items, "mmhal": _mmhal_items}


def bench_items(card: cards.BenchCard, limit: int = 0) -> list[Item]:
    """The bench's items in protocol order; ``limit`` keeps the first N (MME: N image pairs, kept whole)."""
    items = ITEMS[card.bench](card)
    limit = limit or card.limit
    if limit:
        items = items[: 2 * limit] if card.bench == "mme" else items[:limit]
    return items


# ----------------------------------------------------------------------------------- scoring samples

def score_samples(card: cards.BenchCard, samples: list[tuple[int, dict]], judge=None,
                  with_units: bool = False, details: Path | None = None) -> dict:
    """Score (line, sample) pairs with the bench's reference scorer; returns {bench, variant, n, metrics}
    (plus "units" for bootstrap intervals when asked). ``details``: CHAIR's per-caption mentions, or
    MMHal's judge replies, are written there (jsonl)."""
    if card.bench == "chair":
        return score.chair_from_files(samples, coco_annotations=card.data_path("annotations"), variant=card.variant,
                                      caption_key="text", split=card.files.get("split"), with_units=with_units,
                                      save_details=details)
    if card.bench == "pope":
        return score.pope_from_files(samples, card.data_path("questions"), card.data_path("labels"), card.variant,
                                     with_units=with_units)
    if card.bench == "mme":
        return score.mme_from_llava(samples, card.data_path("ground_truth"), with_units=with_units)
    from povid_eval import judges

    records = score.load_mmhal_template(card.data_path("template"), need_answer=False)
    by_index = {int(s["question_id"]): s["text"] for _, s in samples}
    kept = [records[i] | {"model_answer": by_index[i]} for i in sorted(by_index)]
    judge = judge or judges.get(card.judge)
    replies = [judge(r) for r in kept]
    if details is not None:
        atomic_write_jsonl(details, [{"index": i, "reply": reply} for i, reply in zip(sorted(by_index), replies)])
    return score.mmhal_result(kept, replies, card.variant, with_units)


# ----------------------------------------------------------------------------------- samples file

def read_samples(path: Path, *, repair: bool = False) -> dict[str, tuple[int, dict]]:
    """key -> (line, sample) of a samples file; a torn last line (killed mid-write) is ignored, or cut
    off when ``repair`` (the writer does this before appending)."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end < len(raw) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
    out: dict[str, tuple[int, dict]] = {}
    for lineno, line in enumerate(raw[:end].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(path, "corrupt sample line (delete the file to regenerate)", line=lineno) from None
        out.setdefault(rec["key"], (lineno, rec))
    return out


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------- distributed

def dist_info() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1); initialises a gloo process group when needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _merge_shards(folder: Path, samples_path: Path, items: list[Item]) -> None:
    """Append the ranks' new lines to samples.jsonl in item order (keys already there are skipped), then
    remove the shard files."""
    seen = set(read_samples(samples_path))
    order = {it.key: i for i, it in enumerate(items)}
    for shard in sorted(folder.glob("samples.rank*.jsonl")):
        new = [rec for key, (_, rec) in read_samples(shard).items() if key not in seen]
        new.sort(key=lambda r: order.get(r["key"], len(order)))
        _append(samples_path, new)
        seen.update(r["key"] for r in new)
        shard.unlink()


# ----------------------------------------------------------------------------------- the run

def _file_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def model_fingerprint(card: cards.ModelCard) -> dict:
    """Card fields plus hashes of the adapter files and of the base's config (weights of a 7B model are
    too large to hash on every run; the config and file sizes pin the checkpoint well enough)."""
    info = {"card": card.name, "path": card.path, "adapter": card.adapter, "dtype": card.dtype,
            "template": card.template}
    base = card.resolve(card.path)
    if base.is_dir():
        sizes = {p.name: p.stat().st_size for p in sorted(base.glob("*.safetensors"))}
        config = base / "config.json"
        info["base_hash"] = hashlib.sha256(
            (config.read_text() if config.exists() else "").encode() + json.dumps(sizes).encode()).hexdigest()[:16]
    if card.adapter:
        adapter = card.resolve(card.adapter)
        info["adapter_hash"] = _file_hash([p for p in adapter.glob("*") if p.is_file()]) if adapter.is_dir() else ""
    return info


def versions() -> dict:
    import importlib.metadata as md

    out = {"povid-eval": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "nltk", "textblob", "pycocotools"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def ensure_world(bench: cards.BenchCard) -> None:
    """Build the embedded synthetic world where a bench card uses it and it is missing (under a minute),
    with the seed of the committed summary, and warn if its hash differs from the committed one."""
    root = bench.data_path()
    if not bench.world or (root / "manifest.json").is_file():
        return
    from povid_eval.world import SUMMARY_FILE, build_world

    committed = read_json(SUMMARY_FILE) if SUMMARY_FILE.is_file() else {}
    print(f"povid-eval: building the synthetic world in {root} (once, under a minute)", file=sys.stderr)
    manifest = build_world(root, seed=committed.get("seed", 0))
    if committed and manifest["sha256"] != committed.get("sha256"):
        print(f"povid-eval: warning: the world built here differs from {SUMMARY_FILE.name} (sha256 "
              f"{manifest['sha256'][:12]} != {committed['sha256'][:12]}); package versions may render differently",
              file=sys.stderr)


_LOADED: dict[tuple, Generate] = {}


def default_generate(model: cards.ModelCard, logits_processor=None) -> Generate:
    """Generation with the card's model, loaded once per process (``run --bench all`` shares it);
    ``logits_processor`` (a list of transformers LogitsProcessors) is applied at every step, on that same model."""
    key = (model.name, model.path, model.adapter, model.dtype, model.device)
    if key not in _LOADED:
        _LOADED[key] = _load_generate(model)
    if logits_processor is None:
        return _LOADED[key]
    return functools.partial(_LOADED[key], logits_processor=logits_processor)


def _load_generate(model: cards.ModelCard) -> Generate:
    import torch
    from transformers.utils import logging as hf_logging

    from povid_eval.vlm import load_vlm_card

    hf_logging.disable_progress_bar()  # the runner shows its own progress
    if model.threads:
        torch.set_num_threads(model.threads)

    vlm = load_vlm_card(model)

    def generate(images, prompts, decoding: cards.Decoding, logits_processor=None) -> list[str]:
        texts = [vlm.prompt(model.template, p) for p in prompts]
        return vlm.generate(images, texts, max_new_tokens=decoding.max_new_tokens, do_sample=decoding.do_sample,
                            temperature=decoding.temperature, top_p=decoding.top_p, seed=decoding.seed,
                            logits_processor=logits_processor)

    return generate


def run(model_name: str, bench_name: str, *, batch_size: int = 16, limit: int = 0, out: str | Path = "results",
        generate: Generate | None = None, progress: bool = True) -> dict | None:
    """Generate what is missing, then score; returns the metrics record (None on ranks other than 0)."""
    model = cards.load_model_card(model_name)
    bench = cards.load_bench_card(bench_name)
    rank, world = dist_info()
    if rank == 0:
        ensure_world(bench)
    _barrier(world)
    items = bench_items(bench, limit)
    folder = Path(out) / model.name / bench.name
    folder.mkdir(parents=True, exist_ok=True)
    samples_path = folder / "samples.jsonl"
    protocol = bench.protocol_hash()
    start = time.time()

    if rank == 0:
        read_samples(samples_path, repair=True)
    _barrier(world)
    done = dict(read_samples(samples_path))
    for shard in sorted(folder.glob("samples.rank*.jsonl")):
        done.update({k: v for k, v in read_samples(shard, repair=shard.name == f"samples.rank{rank}.jsonl").items()
                     if k not in done})
    for key, (line, rec) in done.items():
        if rec.get("protocol") != protocol:
            raise InputError(samples_path, f"sample {key!r} was made with protocol {rec.get('protocol')}, not "
                                           f"{protocol}: the bench card changed; use another --out or delete it",
                             line=line)
    # One generation per distinct (image, prompt): POPE asks each image's positive questions in all three
    # splits. Batches are fixed chunks of that list, so a batch always holds the same prompts whatever was
    # done before a kill and whichever rank runs it: outputs do not depend on resuming or the process count.
    groups: dict[tuple[Path, str], list[Item]] = {}
    for it in items:
        groups.setdefault((it.image, it.prompt), []).append(it)
    prompts_in_order = list(groups)
    batches = [prompts_in_order[b:b + batch_size] for b in range(0, len(prompts_in_order), batch_size)]
    pending = [batch for batch in batches if any(it.key not in done for pair in batch for it in groups[pair])]
    mine = pending[rank::world]
    target = samples_path if world == 1 else folder / f"samples.rank{rank}.jsonl"
    for image, _ in (pair for batch in mine for pair in batch):  # fail before any work, not half-way
        if not image.is_file():
            raise InputError(image, f"image not found (listed by bench {bench.name})")
    if mine:
        generate = generate or default_generate(model)
        from tqdm import tqdm

        bar = tqdm(total=sum(len(groups[p]) for batch in mine for p in batch), unit="sample", file=sys.stderr,
                   disable=not progress, desc=f"{model.name}/{bench.name}" + (f" rank {rank}" if world > 1 else ""))
        for batch in mine:
            images = [read_image(groups[pair][0].image, f"item {groups[pair][0].key}") for pair in batch]
            answers = generate(images, [prompt for _, prompt in batch], bench.decoding)
            rows = [it.record | {"key": it.key, "prompt": it.prompt, "text": answer, "protocol": protocol,
                                 "model": model.name}
                    for pair, answer in zip(batch, answers) for it in groups[pair] if it.key not in done]
            _append(target, rows)
            bar.update(sum(len(groups[pair]) for pair in batch))
        bar.close()
    _barrier(world)
    if rank != 0:
        return None
    if world > 1:
        _merge_shards(folder, samples_path, items)
    done = read_samples(samples_path)
    keys = {it.key for it in items}
    missing = [k for k in keys if k not in done]
    if missing:
        raise InputError(samples_path, f"{len(missing)} samples missing after generation (e.g. {missing[0]!r})")
    kept = sorted((done[k] for k in keys), key=lambda p: p[0])
    details = {"chair": folder / "details.jsonl", "mmhal": folder / "judge_replies.jsonl"}.get(bench.bench)
    result = score_samples(bench, kept, with_units=True, details=details)
    matrix, from_sums = result.pop("units")
    record = {
        **result,
        "intervals": bootstrap_intervals(matrix, from_sums, seed=bench.decoding.seed),
        "bench_card": bench.name,
        "protocol": bench.protocol(),
        "protocol_hash": protocol,
        "model": model_fingerprint(model),
        "limit": limit or bench.limit,
        "seed": bench.decoding.seed,
        "versions": versions(),
        "wall_time_s": round(time.time() - start, 3),
    }
    if bench.bench == "chair" and bench.world:
        from povid_eval.report.hallucination import prior_share

        record["hallucination_sources"] = prior_share(details, bench.data_path("instances"))
    atomic_write_json(folder / "metrics.json", record)
    return record

