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

import contextlib
import dataclasses
import functools
import json
import os
import platform
import random
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from povid_eval import __version__, cards, score
from povid_eval.core import dist, paths
from povid_eval.run import fingerprint
from povid_eval.core.stats import bootstrap_intervals
from povid_eval.core.errors import InputError, PovidError
from povid_eval.core.io import (atomic_write_json, atomic_write_jsonl, iter_jsonl, read_image, read_json, read_lines,
                           writing)

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

def read_image_ids(path: Path) -> list[int]:
    """Image ids, one per line ('#' starts a comment; blank lines skipped)."""
    out = []
    for n, line in read_lines(path):
        text = line.split("#", 1)[0].strip()
        if text:
            if not text.isdigit():
                raise InputError(path, f"expected an image id (an integer), got {text!r}", line=n)
            out.append(int(text))
    if not out:
        raise InputError(path, "no image ids")
    return out


def chair_image_ids(card: cards.BenchCard, all_ids: list[int]) -> list[int]:
    """The CHAIR image list: the card's ``image_ids`` file (kept in file order), or ``sample`` ids drawn with
    ``sample_seed`` from the annotations' sorted ids, or all of them (the synthetic world's val split)."""
    if card.image_ids:
        path = cards.resolve_path(card.image_ids)
        if not path.is_file():
            raise InputError(path, f"image-id list of bench {card.name} not found")
        ids, known = read_image_ids(path), set(all_ids)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise InputError(path, f"{len(unknown)} image ids are not in {card.data_path('instances').name} "
                                   f"(e.g. {unknown[0]})")
        return list(dict.fromkeys(ids))
    if card.sample:
        return random.Random(card.sample_seed).sample(sorted(all_ids), min(card.sample, len(all_ids)))
    return sorted(all_ids)


def _chair_items(card: cards.BenchCard) -> list[Item]:
    data = read_json(card.data_path("instances"))
    images = card.data_path("images")
    by_id = {im["id"]: im for im in data["images"]}
    return [Item(str(i), images / by_id[i]["file_name"], card.prompt, {"question_id": i, "image_id": i})
            for i in chair_image_ids(card, list(by_id))]


def _question(card: cards.BenchCard, text: str) -> str:
    """A question as the bench card asks it: its ``strip`` text removed, its ``suffix`` appended."""
    if not card.strip and not card.suffix:
        return text
    return (text.replace(card.strip, "") if card.strip else text).strip() + card.suffix


def _pope_items(card: cards.BenchCard) -> list[Item]:
    images = card.data_path("images")
    out = []
    for line, q in iter_jsonl(card.data_path("questions")):
        if not all(k in q for k in ("question_id", "image", "text", "category")):
            raise InputError(card.data_path("questions"), "expected question_id, image, text, category", line=line)
        out.append(Item(str(q["question_id"]), images / q["image"], _question(card, q["text"]),
                        {"question_id": q["question_id"], "category": q["category"]}))
    return out


def _mme_items(card: cards.BenchCard) -> list[Item]:
    from povid_eval.benches.mme import scorer as mme

    gt_dir, images = card.data_path("ground_truth"), card.data_path("images")
    out = []
    for name in mme.SUBTASKS:
        path = gt_dir / f"{name}.txt"
        if not path.is_file():
            continue
        for k, (_, (image, question, _answer)) in enumerate(score.read_mme_tsv(path, 3)):
            out.append(Item(f"{name}/{image}/{k % 2}", mme_image(images, name, image), _question(card, question),
                            {"question_id": f"{name}/{image}"}))
    return out


def mme_image(root: Path, subtask: str, image: str) -> Path:
    """An MME image: <subtask>/<image>, or <subtask>/images/<image> as the release ships five subtasks
    (artwork, celebrity, landmark, posters, scene)."""
    flat = root / subtask / image
    nested = root / subtask / "images" / image
    return nested if not flat.exists() and nested.exists() else flat


def mmhal_image(card: cards.BenchCard, record: dict) -> Path:
    """An MMHal image: with an ``images`` folder in the card, the file named as the last part of the record's
    ``image_src`` URL (the release's images/ folder), else ``image_src`` relative to the data root (the world)."""
    if "images" in card.files:
        return card.data_path("images") / urllib.parse.urlparse(record["image_src"]).path.rsplit("/", 1)[-1]
    return card.data_path() / record["image_src"]


def _mmhal_items(card: cards.BenchCard) -> list[Item]:
    records = score.load_mmhal_template(card.data_path("template"), need_answer=False)
    return [Item(str(i), mmhal_image(card, r), r["question"] + card.suffix, {"question_id": i})
            for i, r in enumerate(records)]


ITEMS = {"chair": _chair_items, "pope": _pope_items, "mme": _mme_items, "mmhal": _mmhal_items}


def card_items(card: cards.BenchCard) -> list[Item]:
    """All the bench's items in protocol order, whatever its ``limit``."""
    return ITEMS[card.bench](card)


def bench_items(card: cards.BenchCard, limit: int = 0) -> list[Item]:
    """The bench's items in protocol order; ``limit`` keeps the first N (MME: N image pairs, kept whole)."""
    return limit_items(card, card_items(card), limit)


def limit_items(card: cards.BenchCard, items: list[Item], limit: int = 0) -> list[Item]:
    """The first ``limit`` (else the card's ``limit``) items; MME's limit counts image pairs."""
    limit = limit or card.limit
    if limit:
        items = items[: 2 * limit] if card.bench == "mme" else items[:limit]
    return items


# ----------------------------------------------------------------------------------- scoring samples

def score_samples(card: cards.BenchCard, samples: list[tuple[int, dict]], judge=None,
                  with_units: bool = False, details: Path | None = None,
                  judge_prompt: str | Path | None = None) -> dict:
    """Score (line, sample) pairs with the bench's reference scorer; returns {bench, variant, n, metrics}
    (plus "units" for bootstrap intervals when asked). ``details``: CHAIR's per-caption mentions, or
    MMHal's judge replies, are written there (jsonl). MMHal: ``judge`` (a judges.Judge or any
    callable(record) -> reply), else the card's judge (judges.make_judge; ``judge_prompt`` overrides the card's
    prompt; replies cached in $POVID_EVAL_CACHE/judge); the result gets "judge": {kind, model, prompt_sha256}."""
    if card.bench == "chair":
        return score.chair_from_files(samples, coco_annotations=card.data_path("annotations"), variant=card.variant,
                                      caption_key="text", split=card.files.get("split"), with_units=with_units,
                                      save_details=details)
    if card.bench == "pope":
        return score.pope_from_files(samples, card.data_path("questions"), card.data_path("labels"), card.variant,
                                     with_units=with_units)
    if card.bench == "mme":
        return score.mme_from_llava(samples, card.data_path("ground_truth"), with_units=with_units)
    from povid_eval.benches.mmhal import judges

    records = score.load_mmhal_template(card.data_path("template"), need_answer=False)
    by_index = {int(s["question_id"]): s["text"] for _, s in samples}
    kept = [records[i] | {"model_answer": by_index[i]} for i in sorted(by_index)]
    judge = judge or judges.make_judge(card, judge_prompt=judge_prompt)
    replies = judges.judge_all(judge, kept)
    if details is not None:
        atomic_write_jsonl(details, [{"index": i, "reply": reply} for i, reply in zip(sorted(by_index), replies)])
    return score.mmhal_result(kept, replies, card.variant, with_units, judge=judges.describe(judge))


# ----------------------------------------------------------------------------------- samples file

def _number_pair(value) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(x is None or isinstance(x, (int, float)) and not isinstance(x, bool) for x in value))


def read_metrics(path: Path) -> dict:
    """A run's metrics.json, checked for what reports read: ``metrics`` (an object), ``intervals`` (name ->
    [lo, hi]), ``overrides`` (data / image_ids paths), ``limit`` (an integer >= 0); InputError otherwise."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise InputError(path, "no 'metrics' object (not a `povid-eval run` metrics.json?)")
    intervals = data.get("intervals", {})
    if not isinstance(intervals, dict):
        raise InputError(path, "expected an object of [lo, hi] pairs", field="intervals")
    for key, pair in intervals.items():
        if not _number_pair(pair):
            raise InputError(path, f"expected [lo, hi] numbers, got {json.dumps(pair)[:60]}", field=f"intervals.{key}")
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict) or not all(k in ("data", "image_ids") and isinstance(v, str)
                                                  for k, v in overrides.items()):
        raise InputError(path, "expected an object with 'data' and/or 'image_ids' paths", field="overrides")
    limit = data.get("limit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InputError(path, f"expected an integer >= 0, got {json.dumps(limit)[:40]}", field="limit")
    return data


def run_card(model: str, bench_name: str, out: str | Path = "results") -> cards.BenchCard:
    """The bench card as a model's finished run used it: the card plus the run's ``--data`` / ``--image-ids``
    (recorded in its metrics.json), so reports rebuild the same items."""
    card = cards.load_bench_card(bench_name)
    metrics = Path(out) / model / card.name / "metrics.json"
    overrides = read_metrics(metrics).get("overrides") if metrics.is_file() else None
    return dataclasses.replace(card, **overrides) if overrides else card


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
    for lineno, line in enumerate(raw[:end].split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(path, "corrupt sample line (not JSON): delete the file, or run with --fresh, to "
                                   "regenerate", line=lineno) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
            raise InputError(path, "sample line without a string 'key' (hand-edited?): delete the file, or run with "
                                   "--fresh, to regenerate", line=lineno)
        out.setdefault(rec["key"], (lineno, rec))
    return out


def _append(path: Path, rows: list[dict]) -> None:
    """Append rows, one json line each, and fsync. A write cut short (a kill, a full disk) leaves whole lines
    and at most one torn last line, which read_samples(repair=True) cuts off before the next append."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------------- distributed

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

def model_fingerprint(card: cards.ModelCard) -> dict:
    """fingerprint.fingerprint (what decides the model's answers), for metrics.json."""
    return fingerprint.fingerprint(card)


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
    paths.require_ours(root, f"data folder of bench {bench.name} (no world manifest.json in it)")
    from povid_eval.world import build_world, SUMMARY_FILE

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
    key = (model.name, model.backend, model.path, model.adapter, model.format, model.model_base, model.dtype,
           model.device, model.base_url, model.api_model)
    if key not in _LOADED:
        _LOADED[key] = _load_generate(model)
    if logits_processor is None:
        return _LOADED[key]
    return functools.partial(_LOADED[key], logits_processor=logits_processor)


def _load_generate(model: cards.ModelCard) -> Generate:
    if model.backend == "openai":  # an OpenAI-compatible chat endpoint: no torch, no weights
        from povid_eval.vlm import api as api_model

        return api_model.openai_generate(model)
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


SAMPLE_FILES = ("samples.jsonl", "metrics.json", "details.jsonl", "judge_replies.jsonl")


def discard(folder: Path) -> None:
    """``--fresh``: remove the run's own files from a results folder (which carries the tool's marker)."""
    for name in SAMPLE_FILES:
        (folder / name).unlink(missing_ok=True)
    for shard in folder.glob("samples.rank*.jsonl"):
        shard.unlink()


def check_samples(done: dict[str, tuple[int, dict]], path: Path, protocol: str, model: str, model_fp: str) -> None:
    """Every cached sample was made under this protocol by this model (fingerprint), else an InputError that
    says how to start fresh."""
    for key, (line, rec) in done.items():
        if rec.get("protocol") != protocol:
            raise InputError(path, f"sample {key!r} was made with protocol {rec.get('protocol')}, not "
                                   f"{protocol}: the bench card changed; use another --out, or --fresh to discard "
                                   f"the old samples", line=line)
        if rec.get("model_fp") != model_fp:
            raise InputError(path, f"sample {key!r} was generated by another version of model {model!r} "
                                   f"(fingerprint {rec.get('model_fp')}, now {model_fp}: its weights, adapter, "
                                   f"template or decoding changed); rerun with --fresh to discard the old answers, "
                                   f"or use another --out", line=line)


def check_current(model: cards.ModelCard, bench_name: str, out: Path) -> None:
    """A finished run's metrics.json belongs to the model as its card is now, else an InputError saying how
    to rerun (reports never show a stale number)."""
    path = Path(out) / model.name / bench_name / "metrics.json"
    recorded = read_metrics(path).get("model_fp") if path.is_file() else None
    now = fingerprint.fingerprint_hash(fingerprint.fingerprint(model))
    if path.is_file() and recorded != now:
        raise InputError(path, f"made by another version of model {model.name!r} (fingerprint {recorded}, now {now}): "
                               f"rerun `povid-eval run --model {model.name} --bench {bench_name} --fresh`")


def run(model_name: str, bench_name: str, *, batch_size: int = 16, limit: int = 0, out: str | Path | None = None,
        generate: Generate | None = None, progress: bool = True, image_ids: str | Path | None = None,
        data: str | Path | None = None, judge_prompt: str | Path | None = None, fresh: bool = False) -> dict | None:
    """Generate what is missing, then score; returns the metrics record (None on ranks other than 0).
    ``image_ids``: a file of image ids replacing the CHAIR card's list; ``data``: the data root instead of the
    card's; ``judge_prompt``: MMHal's judge prompt file instead of the card's (metrics.json's ``judge``
    records its sha256; the protocol hash, which ties the samples, does not change); ``fresh``: discard the
    folder's earlier samples and metrics first. The results folder is out/<model>/<bench>, claimed (see
    paths.claim) and locked for the run: a second concurrent run of the same model and bench stops at once."""
    if batch_size < 1 or limit < 0:
        raise InputError(None, f"batch_size must be >= 1 and limit >= 0, got {batch_size} and {limit}")
    model = cards.load_model_card(model_name)
    overrides = {k: str(Path(v).resolve()) for k, v in (("data", data), ("image_ids", image_ids)) if v}
    bench = dataclasses.replace(cards.load_bench_card(bench_name), **overrides)
    out = paths.results_root(out)
    rank, world = dist.info()
    judge = None
    if bench.bench == "mmhal":  # a bad judge setting or prompt fails first (no request is sent here)
        from povid_eval.benches.mmhal import judges

        judge = judges.make_judge(bench, judge_prompt=judge_prompt)
    error = None
    if rank == 0:
        try:
            ensure_world(bench)
        except PovidError as e:
            error = e
    dist.share_error(error, world)
    # The checks of `povid-eval doctor`, before any work and on every rank (a rank that stopped alone would
    # leave the others waiting at a barrier): the data files and the judge, then every image of the bench.
    from povid_eval.run import doctor

    doctor.require(doctor.data_checks(bench) + doctor.judge_checks(bench, judge_prompt) + [doctor.disk_check(out)],
                   bench.name)
    every_item = card_items(bench)
    doctor.require([doctor.image_check(bench, every_item)], bench.name)
    items = limit_items(bench, every_item, limit)
    folder = paths.inside(out, model.name, bench.name)
    with contextlib.ExitStack() as held:
        error = None
        if rank == 0:  # one writer per results folder: rank 0 holds the lock for all ranks of this run
            try:
                paths.claim(out, model.name, bench.name, kind="results")
                held.enter_context(paths.writer_lock(folder, f"the results of {model.name} on {bench.name}"))
                if fresh:
                    discard(folder)
            except PovidError as e:
                error = e
        dist.share_error(error, world)
        return _generate_and_score(model, bench, items, folder, rank, world, batch_size=batch_size, limit=limit,
                                   generate=generate, progress=progress, judge=judge, overrides=overrides)


def _generate_and_score(model: cards.ModelCard, bench: cards.BenchCard, items: list[Item], folder: Path, rank: int,
                        world: int, *, batch_size: int, limit: int, generate: Generate | None, progress: bool,
                        judge, overrides: dict) -> dict | None:
    """The locked part of run(): resume the samples, generate the missing batches, merge, score, write."""
    from povid_eval.run import doctor

    samples_path = folder / "samples.jsonl"
    protocol = bench.protocol_hash()
    model_info = model_fingerprint(model)
    model_fp = fingerprint.fingerprint_hash(model_info)
    start = time.time()

    if rank == 0:
        read_samples(samples_path, repair=True)
    dist.barrier(world)
    done = dict(read_samples(samples_path))
    for shard in sorted(folder.glob("samples.rank*.jsonl")):
        done.update({k: v for k, v in read_samples(shard, repair=shard.name == f"samples.rank{rank}.jsonl").items()
                     if k not in done})
    check_samples(done, samples_path, protocol, model.name, model_fp)
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
    if mine:
        if generate is None:
            doctor.require(doctor.model_checks(model), f"model {model.name}")
        generate = generate or default_generate(model)
        from tqdm import tqdm

        with tqdm(total=sum(len(groups[p]) for batch in mine for p in batch), unit="sample", file=sys.stderr,
                  disable=not progress, desc=f"{model.name}/{bench.name}" + (f" rank {rank}" if world > 1 else "")
                  ) as bar:  # closed (its line ended) before an error is printed
            for batch in mine:
                images = [read_image(groups[pair][0].image, f"item {groups[pair][0].key}") for pair in batch]
                answers = generate(images, [prompt for _, prompt in batch], bench.decoding)
                rows = [it.record | {"key": it.key, "prompt": it.prompt, "text": answer, "protocol": protocol,
                                     "model": model.name, "model_fp": model_fp}
                        for pair, answer in zip(batch, answers) for it in groups[pair] if it.key not in done]
                _append(target, rows)
                bar.update(sum(len(groups[pair]) for pair in batch))
    dist.barrier(world)
    if rank != 0:
        return None
    if world > 1:
        _merge_shards(folder, samples_path, items)
    done = read_samples(samples_path)
    keys = {it.key for it in items}
    missing = [k for k in keys if k not in done]
    if missing:
        raise InputError(samples_path, f"{len(missing)} samples missing after generation (e.g. {missing[0]!r})")
    kept = score.Located(sorted((done[k] for k in keys), key=lambda p: p[0]), samples_path)
    details = {"chair": folder / "details.jsonl", "mmhal": folder / "judge_replies.jsonl"}.get(bench.bench)
    result = score_samples(bench, kept, judge=judge, with_units=True, details=details)
    matrix, from_sums = result.pop("units")
    record = {
        **result,
        "intervals": bootstrap_intervals(matrix, from_sums, seed=bench.decoding.seed),
        "bench_card": bench.name,
        **({"overrides": overrides} if overrides else {}),
        "protocol": bench.protocol(),
        "protocol_hash": protocol,
        "model": model_info,
        "model_fp": model_fp,
        "limit": limit or bench.limit,
        "seed": bench.decoding.seed,
        "versions": versions(),
        "wall_time_s": round(time.time() - start, 3),
    }
    if bench.bench == "chair" and bench.world:
        from povid_eval.benches.chair.sources import prior_share

        record["hallucination_sources"] = prior_share(details, bench.data_path("instances"))
    atomic_write_json(folder / "metrics.json", record)
    return record
