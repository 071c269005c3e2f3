"""Finished runs as reports read them: a run's metrics.json (checked), the bench card as the run used it,
whether it still belongs to the model as its card is now, running what a report needs but lacks, and a run's
samples and unit rows in the bench's item order (what compare and the image-reliance report resample)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.benches.common import Located
from povid_eval.core import paths
from povid_eval.core.errors import InputError
from povid_eval.core.io import read_json
from povid_eval.run import fingerprint, runner, samples


def _number_pair(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(x is None or isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    )


def read_metrics(path: Path) -> dict:
    """A run's metrics.json, checked for what reports read: ``metrics`` (an object), ``intervals`` (name ->
    [lo, hi]), ``overrides`` (paths, and image_noise: a diffusion step), ``limit`` (an integer >= 0);
    InputError otherwise."""
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
    if not isinstance(overrides, dict) or not all(
        (type(v) is int and 0 < v < 1000) if k == "image_noise" else isinstance(v, str) for k, v in overrides.items()
    ):
        raise InputError(
            path, "expected an object of paths (data, the bench's own options) and image_noise", field="overrides"
        )
    limit = data.get("limit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InputError(path, f"expected an integer >= 0, got {json.dumps(limit)[:40]}", field="limit")
    return data


def metrics_path(results: Path, model: str, bench: str, noise: int = 0) -> Path:
    return paths.run_folder(results, model, bench, noise) / "metrics.json"


def run_card(model: str, bench_name: str, results: Path, noise: int = 0) -> cards.BenchCard:
    """The bench card as a model's finished run used it: the card plus the run's overrides (--data,
    --image-noise and the bench's own, e.g. --image-ids; recorded in its metrics.json), so reports rebuild the
    same items. ``noise``: its run on noised images (paths.run_folder)."""
    card = registry.load_card(bench_name)
    path = metrics_path(results, model, card.name, noise)
    overrides = read_metrics(path).get("overrides") if path.is_file() else None
    if overrides:
        known = cards.BENCH_KEYS + tuple(o.dest for o in registry.bench_of(card).run_options)
        unknown = [k for k in overrides if k not in known]
        if unknown:
            raise InputError(
                path, f"unknown override {unknown[0]!r} (known for {card.kind}: {', '.join(known)})", field="overrides"
            )
    return card.with_overrides(overrides) if overrides else card


def check_current(model: cards.ModelCard, bench_name: str, results: Path, noise: int = 0) -> None:
    """A finished run's metrics.json belongs to the model as its card is now, else an InputError saying how
    to rerun (reports never show a stale number)."""
    path = metrics_path(results, model.name, bench_name, noise)
    recorded = read_metrics(path).get("model_fp") if path.is_file() else None
    now = fingerprint.fingerprint_hash(fingerprint.fingerprint(model))
    if path.is_file() and recorded != now:
        raise InputError(
            path,
            f"made by another version of model {model.name!r} (fingerprint {recorded}, now {now}): "
            f"rerun `povid-eval run --model {model.name} --bench {bench_name}"
            f"{f' --image-noise {noise}' if noise else ''} --fresh`",
        )


def card_exists(model: str) -> bool:
    return (cards.models_dir() / f"{model}.toml").is_file()


def ensure_results(models: Sequence[str], benches: Sequence[str], results: Path) -> None:
    """Run (through the runner's cache) every model x bench whose metrics.json is missing; refuse results
    that an earlier version of a model made (check_current), when the model's card is still there."""
    for model in models:
        card = cards.load_model_card(model) if card_exists(model) else None
        for bench in benches:
            name = registry.load_card(bench).name
            if metrics_path(results, model, name).is_file():
                if card is not None:
                    check_current(card, name, results)
            else:
                cards.load_model_card(model)  # a model with no results and no card: a clear error
                runner.run(model, bench, results=results)


def aligned_samples(model: str, bench: str, results: Path, noise: int = 0) -> Located:
    """A model's finished samples of a bench as (line, record), in the bench's item order (``noise``: of its run
    on noised images)."""
    card = run_card(model, bench, results, noise)
    path = paths.run_folder(results, model, card.name, noise) / "samples.jsonl"
    flag = f" --image-noise {noise}" if noise else ""
    if not path.is_file():
        raise InputError(
            path,
            f"no results of model '{model}' on bench '{bench}': "
            f"run `povid-eval run --bench {bench} --model {model}{flag}` first",
        )
    done = samples.read(path)
    items = runner.bench_items(card, limit=_recorded(path.parent, "limit") or 0)
    missing = [it.key for it in items if it.key not in done]
    if missing:
        raise InputError(
            path,
            f"{len(missing)} of {len(items)} samples missing (e.g. {missing[0]!r}): "
            f"finish `povid-eval run --bench {bench} --model {model}{flag}` first",
        )
    return Located([done[it.key] for it in items], path)


def _recorded(folder: Path, key: str):
    metrics = folder / "metrics.json"
    return read_metrics(metrics).get(key) if metrics.is_file() else None


def run_arguments(model: str, card: cards.BenchCard, results: Path, noise: int = 0) -> dict:
    """The bench options a model's run was scored with (e.g. --judge-prompt), from its metrics.json."""
    folder = paths.run_folder(results, model, card.name, noise)
    recorded = _recorded(folder, "arguments") or {}
    if not isinstance(recorded, dict):
        raise InputError(folder / "metrics.json", "expected an object", field="arguments")
    return recorded


def units_of(card: cards.BenchCard, samples_: Located, arguments: dict):
    """(matrix, from_sums): the per-unit rows of samples in item order, from the bench's reference scorer with
    the run's own bench options (e.g. its judge and judge prompt, replies from the judge's cache)."""
    bench = registry.bench_of(card)
    return bench.score(card, samples_, with_units=True, **arguments, **bench.prepare(card, **arguments))["units"]


def aligned_units(model: str, bench: str, results: Path, noise: int = 0):
    """(matrix, from_sums) of a model's finished samples on a bench, rows in the bench's item order."""
    card = run_card(model, bench, results, noise)
    return units_of(card, aligned_samples(model, bench, results, noise), run_arguments(model, card, results, noise))
