"""`povid-eval doctor`: before a long run, check in seconds every asset it will need, and say how to get
what is missing.

Each check is a ``Check(asset, ok, detail, fix)``: the asset kind (model weights, tokenizer, images, ...), the
verdict, what was found or is missing (with the path), and the exact command or download that fixes it.
Checks never load weights, never send a model request (an endpoint is probed with ``GET {base_url}/models``,
5 s timeout) and never print a key. ``povid-eval run`` calls the same checks first (bench data always, the
model only when something must be generated) and stops with one line per problem.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.core.checks import Check
from povid_eval.core.errors import MissingAssetError
from povid_eval.core.http import probe_endpoint

MIN_FREE_GB = 1.0


def _images(asset: str, paths: list[Path], fix: str) -> Check:
    missing = [p for p in dict.fromkeys(paths) if not p.is_file()]
    total = len(set(paths))
    if missing:
        return Check(asset, False, f"{len(missing)} of {total} images missing (e.g. {missing[0]})", fix)
    return Check(asset, True, f"{total} images under {os.path.commonpath([str(p) for p in paths]) if paths else '-'}")


# ----------------------------------------------------------------------------------------------- model


def _device_check(device: str) -> Check | None:
    if not device.startswith("cuda"):
        return None
    import torch

    ok = torch.cuda.is_available()
    return Check(
        "device",
        ok,
        f"{device}: " + ("CUDA available" if ok else "CUDA is not available here"),
        'run on a GPU node, or set device = "cpu" (slow for 7B models)',
    )


def model_checks(card: cards.ModelCard) -> list[Check]:
    if card.backend == "openai":
        return probe_endpoint(card.base_url, card.api_key_env, "model")
    from povid_eval.vlm.convert import cached_snapshot
    from povid_eval.vlm.model import (
        adapter_problems,
        allow_downloads,
        detect_format,
        download_command,
        is_hub_id,
        model_dir_problems,
    )

    out = []
    path = card.resolve(card.path)
    if not path.exists() and is_hub_id(card.path):
        cached = cached_snapshot(card.path)
        name = card.path.split("/")[-1]
        fix = f'{download_command(card.path)} and set path = "models/{name}" in the card'
        if cached is None:
            allowed = allow_downloads()
            out.append(
                Check(
                    "model weights",
                    allowed,
                    f"{card.path}: not in the local HF cache"
                    + (" (will be downloaded: POVID_EVAL_ALLOW_DOWNLOADS=1)" if allowed else ""),
                    fix,
                )
            )
            return out
        path = cached
    if not path.is_dir():
        return [
            Check(
                "model weights",
                False,
                f"{path}: folder not found",
                f"download the checkpoint there, or fix `path` in models/{card.name}.toml",
            )
        ]
    fmt = detect_format(path) if card.format == "auto" else card.format
    if fmt == "llava":
        from povid_eval.vlm.convert import check_original_llava

        problems = check_original_llava(
            path,
            model_base=card.resolve(card.model_base) if card.model_base else None,
            vision_tower=card.resolve(card.vision_tower) if card.vision_tower else None,
        )
        out += [Check("model (original LLaVA format)", False, p) for p in problems]
        if not problems:
            out.append(Check("model (original LLaVA format)", True, f"{path}: converted on load"))
    else:
        missing = model_dir_problems(path)
        kinds = {
            "weights": "model weights",
            "tokenizer": "tokenizer",
            "image processor": "processor",
            "config.json": "model config",
        }
        for key, asset in kinds.items():
            gone = [m for m in missing if m.startswith(key)]
            out.append(
                Check(
                    asset,
                    not gone,
                    f"{path}: " + (f"missing {gone[0]}" if gone else "present"),
                    "re-download the checkpoint folder completely",
                )
            )
    if card.adapter:
        adapter = card.resolve(card.adapter)
        missing = adapter_problems(adapter)
        out.append(
            Check(
                "adapter",
                not missing,
                f"{adapter}: " + (f"missing {', '.join(missing)}" if missing else "PEFT adapter"),
                "train it (povid-eval train) or fix `adapter` in the card",
            )
        )
    device = _device_check(card.device)
    return out + ([device] if device else [])


# ----------------------------------------------------------------------------------------------- bench


def _world_pending(card: cards.BenchCard) -> bool:
    return card.world and not (card.data_path() / "manifest.json").is_file()


def data_checks(card: cards.BenchCard, **options) -> list[Check]:
    """The files a bench's items are built from and what it scores with (the bench's own checks, given the
    run's bench options); images are ``image_check``'s."""
    if _world_pending(card):
        return [Check("synthetic world", True, f"{card.data_path()}: built on first use (under a minute)")]
    return registry.bench_of(card).data_checks(card, **options)


def image_check(card: cards.BenchCard, items) -> Check:
    """Every image the bench's items name is there."""
    fix = f"povid-eval world build --out {card.data}" if card.world else registry.bench_of(card).image_fix(card)
    return _images("images", [it.image for it in items], fix)


def setting_checks(card: cards.BenchCard, **options) -> list[Check]:
    """The bench's settings beyond its data (e.g. a judge), given the run's bench options."""
    return registry.bench_of(card).setting_checks(card, **options)


def bench_checks(card: cards.BenchCard, **options) -> list[Check]:
    """data_checks, then (when they pass) image_check of the bench's items, then setting_checks."""
    out = data_checks(card, **options)
    if all(c.ok for c in out) and not _world_pending(card):
        out.append(image_check(card, registry.bench_of(card).items(card)))
    return out + setting_checks(card, **options)


def disk_check(out: str | Path, need_gb: float = MIN_FREE_GB) -> Check:
    folder = Path(out).resolve()
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        why = "a read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else "no write permission"
        return Check("disk", False, f"{folder} is not writable ({why})", "give a folder you can write to with --out")
    free = shutil.disk_usage(folder).free / 1e9
    return Check(
        "disk",
        free >= need_gb,
        f"{free:.1f} GB free under {folder} ({need_gb:g} GB wanted for results)",
        "free some space or pass --out on a larger disk",
    )


def checks(
    model: str | None = None,
    bench: str | None = None,
    *,
    results: str | Path = "results",
    data: str | None = None,
    **options,
) -> list[Check]:
    """Every check for a model card and/or bench cards (``bench`` may be a set: all, real); ``options``: the
    benches' own run options (each bench gets those it takes)."""
    found = []
    if model:
        found += model_checks(cards.load_model_card(model))
    for name in cards.bench_names(bench) if bench else []:
        card = registry.load_card(name)
        if data:
            card = dataclasses.replace(card, data=str(Path(data).resolve()))
        own = {o.dest: options[o.dest] for o in registry.bench_of(card).run_options if options.get(o.dest)}
        found += [dataclasses.replace(c, asset=f"{card.name}: {c.asset}") for c in bench_checks(card, **own)]
    return found + [disk_check(results)]


def require(found: list[Check], what: str) -> None:
    """Raise MissingAssetError naming every failed check with its fix, on one line."""
    failed = [c for c in found if not c.ok]
    if failed:
        raise MissingAssetError(f"{what}: " + "; ".join(c.line() for c in failed) + " (`povid-eval doctor` checks all)")


def report(found: list[Check]) -> str:
    width = max((len(c.asset) for c in found), default=0)
    lines = []
    for c in found:
        lines.append(f"{'ok' if c.ok else 'MISSING':<8} {c.asset:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':<8} {'':<{width}}  fix: {c.fix}")
    failed = sum(not c.ok for c in found)
    lines.append(f"{len(found) - failed} ok, {failed} missing" + ("" if failed else ": ready to run"))
    return "\n".join(lines)


def as_json(found: list[Check]) -> str:
    return json.dumps([c.__dict__ for c in found])
