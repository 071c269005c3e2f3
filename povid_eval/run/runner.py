"""run(model, bench): items -> prompts -> generations (cached per sample) -> scores -> metrics.json.

Every bench-specific step is the bench's (benches/registry.py): its items, its limit, its scorer, its extras.
The run lives in <results>/runs/<model>/<bench>/ (core/paths.py), claimed (the tool's marker) and locked for
the run: samples.jsonl (run/samples.py: append-only, one line per finished sample in LLaVA's answer layout,
question_id / prompt / text, so `povid-eval score` reads it as it is), metrics.json, and the bench's details.
A rerun skips the batches already there, so a killed run resumes exactly; scoring never needs the model.

Under ``torchrun`` (RANK / WORLD_SIZE set; gloo backend) batches are sharded by rank; each rank appends to
its own samples.rank<r>.jsonl, then rank 0 merges the new lines into samples.jsonl and scores. Batches are
fixed chunks of the item list, so every sample is generated in the same batch as in a one-process run
(with the same --batch-size), and the metrics are the same.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import platform
import sys
import time
import zlib
from pathlib import Path

from povid_eval import __version__, cards
from povid_eval.benches import registry
from povid_eval.benches.base import Item
from povid_eval.benches.common import Located
from povid_eval.core import dist, paths
from povid_eval.core.errors import InputError, PovidError
from povid_eval.core.io import atomic_write_json, read_image
from povid_eval.core.stats import bootstrap_intervals
from povid_eval.run import doctor, fingerprint, samples
from povid_eval.vlm.generate import Generate, for_card


def card_items(card: cards.BenchCard) -> list[Item]:
    """All the bench's items in protocol order, whatever its ``limit``."""
    return registry.bench_of(card).items(card)


def limit_items(card: cards.BenchCard, items: list[Item], limit: int = 0) -> list[Item]:
    """The first ``limit`` (else the card's ``limit``) items, as the bench counts them (e.g. image pairs)."""
    limit = limit or card.limit
    return registry.bench_of(card).limit(items, limit) if limit else items


def bench_items(card: cards.BenchCard, limit: int = 0) -> list[Item]:
    """The bench's items in protocol order, limited (limit_items)."""
    return limit_items(card, card_items(card), limit)


def noise_seed(card: cards.BenchCard, path: Path) -> int:
    """The seed of an image's noise: the card's seed and the image's path under the data root (its name when
    outside), so every model and every prompt of the image sees the same noise, whatever the batch."""
    try:
        name = path.relative_to(card.data_path()).as_posix()
    except ValueError:
        name = path.name
    return card.decoding.seed * 1_000_003 + zlib.crc32(name.encode())


def noised(card: cards.BenchCard, path: Path, image):
    """The image as a run with ``card.image_noise`` shows it: POVID's forward diffusion at that step
    (vlm/noise.py), seeded by noise_seed."""
    from povid_eval.vlm.noise import noisy_image

    return noisy_image(image, card.image_noise, seed=noise_seed(card, path))


def versions() -> dict:

    out = {"povid-eval": __version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "nltk", "textblob", "pycocotools"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def split_options(card: cards.BenchCard, options: dict) -> tuple[dict, dict]:
    """A run's bench options (its RunOption flags: files, resolved) as (card overrides; arguments for the
    bench's prepare / score); metrics.json records both."""
    flags = {o.dest: o for o in registry.bench_of(card).run_options}
    unknown = [k for k, v in options.items() if v is not None and k not in flags]
    if unknown:
        raise InputError(None, f"{unknown[0]} does not apply to bench {card.name} ({card.kind})")
    given = {k: str(Path(v).resolve()) for k, v in options.items() if v is not None}  # every run option is a file
    return (
        {k: v for k, v in given.items() if flags[k].override},
        {k: v for k, v in given.items() if not flags[k].override},
    )


def run(
    model_name: str,
    bench_name: str,
    *,
    batch_size: int = 16,
    limit: int = 0,
    results: str | Path | None = None,
    generate: Generate | None = None,
    progress: bool = True,
    data: str | Path | None = None,
    fresh: bool = False,
    folder: Path | None = None,
    image_noise: int = 0,
    **options,
) -> dict | None:
    """Generate what is missing, then score; returns the metrics record (None on ranks other than 0).

    ``data``: the data root instead of the card's; ``options``: the bench's own run options (its RunOption
    dests, e.g. an image list, a judge prompt); ``fresh``: discard the folder's earlier samples and
    metrics first; ``folder``: the run's folder instead of <results>/runs/<model>/<bench> (the frontier's
    bias runs); ``image_noise``: every image noised at this diffusion step first (the image-reliance
    diagnostic; its run lives in <results>/runs/<model>/noised-t<step>/<bench>). The folder is claimed
    (paths.claim) and locked for the run: a second concurrent run of the same model and bench stops at once."""
    if batch_size < 1 or limit < 0:
        raise InputError(None, f"batch_size must be >= 1 and limit >= 0, got {batch_size} and {limit}")
    model = cards.load_model_card(model_name)
    card = registry.load_card(bench_name)
    overrides, arguments = split_options(card, options)
    overrides |= {"data": str(Path(data).resolve())} if data else {}
    if image_noise:
        if not 0 < image_noise < 1000:
            raise InputError(None, f"image_noise must be a diffusion step in 1..999, got {image_noise}")
        overrides["image_noise"] = image_noise
    card = card.with_overrides(overrides)
    bench = registry.bench_of(card)
    results = paths.results_root(results)
    folder = folder or paths.run_folder(results, model.name, card.name, image_noise)
    rank, size = dist.info()
    extra = bench.prepare(card, **arguments)  # e.g. a judge: a bad setting fails first (nothing is sent)
    # The checks of `povid-eval doctor`, before any work and on every rank (a rank that stopped alone would
    # leave the others waiting at a barrier): the data files, then every image of the bench.
    doctor.require(
        doctor.data_checks(card, **arguments) + doctor.setting_checks(card, **arguments) + [doctor.disk_check(results)],
        card.name,
    )
    every_item = card_items(card)
    doctor.require([doctor.image_check(card, every_item)], card.name)
    items = limit_items(card, every_item, limit)
    with contextlib.ExitStack() as held:
        error = None
        if rank == 0:  # one writer per results folder: rank 0 holds the lock for all ranks of this run
            try:
                paths.claim(folder.parent, folder.name, kind="results")
                held.enter_context(paths.writer_lock(folder, f"the results of {model.name} on {card.name}"))
                if fresh:
                    samples.discard(folder, bench.details_file)
            except PovidError as e:
                error = e
        dist.share_error(error, size)
        return _generate_and_score(
            model,
            card,
            items,
            folder,
            rank,
            size,
            batch_size=batch_size,
            limit=limit,
            generate=generate,
            progress=progress,
            overrides=overrides,
            arguments=arguments,
            extra=extra,
        )


def _generate_and_score(
    model: cards.ModelCard,
    card: cards.BenchCard,
    items: list[Item],
    folder: Path,
    rank: int,
    size: int,
    *,
    batch_size: int,
    limit: int,
    generate: Generate | None,
    progress: bool,
    overrides: dict,
    arguments: dict,
    extra: dict,
) -> dict | None:
    """The locked part of run(): resume the samples, generate the missing batches, merge, score, write."""
    bench = registry.bench_of(card)
    samples_path = folder / "samples.jsonl"
    protocol = card.protocol_hash()
    model_info = fingerprint.fingerprint(model)
    model_fp = fingerprint.fingerprint_hash(model_info)
    start = time.time()

    if rank == 0:
        samples.read(samples_path, repair=True)
    dist.barrier(size)
    done = dict(samples.read(samples_path))
    for shard in sorted(folder.glob("samples.rank*.jsonl")):
        done.update(
            {
                k: v
                for k, v in samples.read(shard, repair=shard.name == f"samples.rank{rank}.jsonl").items()
                if k not in done
            }
        )
    samples.check(done, samples_path, protocol, model.name, model_fp)
    # One generation per distinct (image, prompt): a bench may ask one question of an image in several splits
    # (its items repeat it). Batches are fixed chunks of that list, so a batch always holds the same prompts
    # whatever was done before a kill and whichever rank runs it: outputs do not depend on resuming or the
    # process count.
    groups: dict[tuple[Path, str], list[Item]] = {}
    for it in items:
        groups.setdefault((it.image, it.prompt), []).append(it)
    prompts_in_order = list(groups)
    batch_size = card.decoding.batch_size or batch_size  # a protocol that fixes it (e.g. 1: no padding) wins
    batches = [prompts_in_order[b : b + batch_size] for b in range(0, len(prompts_in_order), batch_size)]
    pending = [batch for batch in batches if any(it.key not in done for pair in batch for it in groups[pair])]
    mine = pending[rank::size]
    target = samples_path if size == 1 else folder / f"samples.rank{rank}.jsonl"
    template = {"template": card.template} if card.template else {}  # the bench's own prompt template
    if mine:
        if generate is None:
            doctor.require(doctor.model_checks(model), f"model {model.name}")
        generate = generate or for_card(model)
        from tqdm import tqdm

        with tqdm(
            total=sum(len(groups[p]) for batch in mine for p in batch),
            unit="sample",
            file=sys.stderr,
            disable=not progress,
            desc=f"{model.name}/{card.name}" + (f" rank {rank}" if size > 1 else ""),
        ) as bar:  # closed (its line ended) before an error is printed

            def image(pair):
                first = groups[pair][0]
                loaded = read_image(first.image, f"item {first.key}")
                return noised(card, first.image, loaded) if card.image_noise else loaded

            def rows(pairs, answers):
                return [
                    it.record
                    | {
                        "key": it.key,
                        "prompt": it.prompt,
                        "text": answer,
                        "protocol": protocol,
                        "model": model.name,
                        "model_fp": model_fp,
                    }
                    for pair, answer in zip(pairs, answers)
                    for it in groups[pair]
                    if it.key not in done
                ]

            stream = getattr(generate, "stream", None)
            if stream is not None and size == 1:  # an endpoint: requests pipelined across batches
                pairs = [pair for batch in mine for pair in batch]
                requests = ((lambda pair=pair: image(pair), pair[1]) for pair in pairs)
                answered: list = []
                for pair, answer in zip(pairs, stream(requests, card.decoding, **template)):
                    answered.append((pair, answer))
                    if len(answered) == batch_size or pair == pairs[-1]:  # appended a batch at a time, in order
                        samples.append(target, rows(*zip(*answered)))
                        bar.update(sum(len(groups[p]) for p, _ in answered))
                        answered = []
            else:
                for batch in mine:
                    answers = generate(
                        [image(pair) for pair in batch], [p for _, p in batch], card.decoding, **template
                    )
                    samples.append(target, rows(batch, answers))
                    bar.update(sum(len(groups[pair]) for pair in batch))
    dist.barrier(size)
    if rank != 0:
        return None
    if size > 1:
        samples.merge_shards(folder, samples_path, {it.key: i for i, it in enumerate(items)})
    done = samples.read(samples_path)
    keys = {it.key for it in items}
    missing = [k for k in keys if k not in done]
    if missing:
        raise InputError(samples_path, f"{len(missing)} samples missing after generation (e.g. {missing[0]!r})")
    kept = Located(sorted((done[k] for k in keys), key=lambda p: p[0]), samples_path)
    details = folder / bench.details_file if bench.details_file else None
    result = bench.score(card, kept, with_units=True, details=details, **arguments, **extra)
    matrix, from_sums = result.pop("units")
    record = {
        **result,
        "intervals": bootstrap_intervals(matrix, from_sums, seed=card.decoding.seed),
        "bench_card": card.name,
        **({"overrides": overrides} if overrides else {}),
        **({"arguments": arguments} if arguments else {}),
        "protocol": card.protocol(),
        "protocol_hash": protocol,
        "model": model_info,
        "model_fp": model_fp,
        "limit": limit or card.limit,
        "seed": card.decoding.seed,
        "versions": versions(),
        "wall_time_s": round(time.time() - start, 3),
        **bench.extras(card, details),
    }
    atomic_write_json(folder / "metrics.json", record)
    return record
