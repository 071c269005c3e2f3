"""The POVID recipe (Zhou et al., "Aligning Modalities in Vision Large Language Models via Preference
Fine-tuning", 2024) as a plain script of small steps:

    data      for each training image-question: y_w = the ground-truth answer; y_l^t = y_w with an injected
              hallucination (train/inject.py offline, or an LLM); y_l^n = the base's own greedy answer under
              the diffusion-noised image (t = 500), kept as the generated token ids
    stage 1   DPO on (y_w, y_l^t)                                            (loss "dpo")
    stage 2   0.5 DPO(y_w, y_l^n) + 0.5 DPO(y_w, y_l^t), continuing the same adapter   (loss "povid")

Recipes (``--recipe``): ``povid`` (both stages), ``dpo`` (text pairs only: stage 1 for all steps),
``noise-only`` (the paper's ablation: DPO on (y_w, y_l^n) only). The result is a PEFT adapter on the base and
a model card (models/<out>.toml) so that ``povid-eval run --model <out>`` evaluates it.

The embedded default's numbers (povid.toml) were chosen by measurement on the world (README, "POVID
training"): y_w is the image's canonical caption (every visible object, in category order) with the annotators'
slips deleted, so that no absent object is ever preferred.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from povid_eval import cards
from povid_eval.core import paths
from povid_eval.core.dist import info as dist_info
from povid_eval.core.dist import share_error
from povid_eval.core.errors import InputError, PovidError
from povid_eval.core.io import atomic_write_json, read_json, require_file
from povid_eval.core.paths import cache_dir
from povid_eval.run.fingerprint import fingerprint, fingerprint_hash
from povid_eval.train.inject import DEFAULT_WEIGHTS, OPS
from povid_eval.train.loop import LOSSES, NOISY_FORMS, TrainConfig, train
from povid_eval.train.preferences import (
    Preference,
    answer_lengths,
    import_povid_release,
    length_note,
    read_preferences,
    write_preferences,
)
from povid_eval.vlm.noise import DEFAULT_STEP

RECIPES = ("povid", "dpo", "noise-only")
CHOSEN = ("reference", "corrected", "first")
CAPTION_PROMPT = "Describe this image."


@dataclass
class RecipeConfig:
    """A recipe: the preference data and the two stages. The embedded default's numbers live in povid.toml
    (RECIPE_FILE, read by default_recipe); a bare RecipeConfig() has neutral stages. Every field is recorded
    in the adapter's train_info.json."""

    images: int = 2000  # training images of the world's train split (first N by a seeded shuffle)
    chosen: str = "reference"  # y_w: "reference" (the longest reference caption), "first" (the first one minus
    #                            what the annotations contradict) or "corrected" (y_l^n minus what they
    #                            contradict: the model's words, the world's facts)
    injector_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    noise_step: int = DEFAULT_STEP
    max_new_tokens: int = 64
    gen_batch_size: int = 32
    seed: int = 0
    stage1: TrainConfig = field(default_factory=lambda: TrainConfig(loss="dpo"))
    stage2: TrainConfig = field(default_factory=lambda: TrainConfig(loss="povid"))


RECIPE_FILE = Path(__file__).with_name("povid.toml")


def default_recipe() -> RecipeConfig:
    """The embedded default's recipe: RecipeConfig() with povid.toml's values."""
    return load_recipe_config(RECIPE_FILE, RecipeConfig())


def load_recipe_config(path: str | Path, base: RecipeConfig | None = None) -> RecipeConfig:
    """A RecipeConfig from TOML laid over ``base`` (default: default_recipe()): RecipeConfig's scalar keys at
    the top, TrainConfig keys under [stage1] and [stage2]; anything not given keeps the base's value. Unknown
    keys and values out of range are errors naming the file and the key."""

    path = require_file(path, "recipe config")
    data = cards.read_toml(path)
    stages = {key: data.pop(key) for key in ("stage1", "stage2") if key in data}
    cards.check_table(path, data, RecipeConfig, (), rules=RECIPE_RULES)
    cfg = replace(base if base is not None else default_recipe())
    for key, value in data.items():
        setattr(cfg, key, value)
    for key, value in stages.items():
        if not isinstance(value, dict):
            raise InputError(path, f"expected a table, got {type(value).__name__}", field=key)
        cards.check_table(path, value, TrainConfig, (), prefix=f"{key}.", rules=TRAIN_RULES)
        stage = replace(getattr(cfg, key), **value)
        if stage.batch_size % stage.grad_accum:
            raise InputError(
                path,
                f"batch_size {stage.batch_size} is not a multiple of grad_accum {stage.grad_accum}",
                field=f"{key}.grad_accum",
            )
        setattr(cfg, key, stage)
    return cfg


_unit = lambda v: None if 0 <= v <= 1 else f"expected a number in [0, 1], got {v!r}"  # noqa: E731
RECIPE_RULES = {
    "images": cards.at_least(1),
    "chosen": cards.one_of(CHOSEN),
    "noise_step": lambda v: None if 1 <= v <= 1000 else f"expected an integer in 1..1000, got {v!r}",
    "max_new_tokens": cards.at_least(1),
    "gen_batch_size": cards.at_least(1),
    "seed": cards.at_least(0),
    "injector_weights": lambda v: (
        f"unknown injection op(s) {', '.join(sorted(set(v) - set(OPS)))} (known: {', '.join(OPS)})"
        if set(v) - set(OPS)
        else None
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v.values())
        else "expected a table of weights >= 0"
    ),
}
TRAIN_RULES = {
    "loss": cards.one_of(LOSSES),
    "beta": cards.above(0),
    "noisy_weight": _unit,
    "noisy_form": cards.one_of(NOISY_FORMS),
    "sft_weight": cards.at_least(0, integer=False),
    "steps": cards.at_least(1),
    "batch_size": cards.at_least(1),
    "grad_accum": cards.at_least(1),
    "lr": cards.above(0),
    "projector_lr": cards.above(0),
    "warmup": cards.at_least(0),
    "weight_decay": cards.at_least(0, integer=False),
    "max_grad_norm": cards.at_least(0, integer=False),
    "lora_r": cards.at_least(1),
    "lora_alpha": cards.above(0),
    "lora_dropout": lambda v: None if 0 <= v < 1 else f"expected a number in [0, 1), got {v!r}",
    "checkpoint_every": cards.at_least(1),
    "seed": cards.at_least(0),
}


# ------------------------------------------------------------------------------------------ data


def world_preferences(
    vlm, world_dir: Path, cfg: RecipeConfig, template: str, injector=None, progress: bool = True, noisy: bool = True
) -> list[Preference]:
    """Preference records for ``cfg.images`` train images of the synthetic world (a seeded shuffle):

    y_l^n  the base's greedy answer under the noised image (add_noisy_rejections); only when ``noisy`` (a recipe
           without the noisy term skips the generation) or when y_w is made from it ("corrected")
    y_w    ``cfg.chosen == "corrected"``: y_l^n with every object the annotations contradict deleted
           (inject.correct_answer): the ground truth in the model's own words; records where nothing
           sensible is left are dropped. ``"reference"``: the image's longest reference caption. ``"first"``:
           its first reference caption (a COCO image's first annotator's) with every object the annotations
           contradict deleted, so annotators' slips do not become preferred answers.
    y_l^t  y_w with one injected hallucination (the co-occurrence injector unless one is given)
    """
    from povid_eval.benches.coco import load_split
    from povid_eval.train.inject import CooccurrenceInjector, correct_answer

    if cfg.chosen not in CHOSEN:
        raise InputError(None, f"chosen must be one of {', '.join(CHOSEN)}, got {cfg.chosen!r}")
    records, _ = load_split(world_dir, "train")
    order = list(range(len(records)))
    random.Random(f"povid-data:{cfg.seed}").shuffle(order)
    picked = [records[i] for i in order[: cfg.images]]
    injector = injector or CooccurrenceInjector.from_instances(
        world_dir / "annotations" / "instances_train.json", weights=cfg.injector_weights, seed=cfg.seed
    )
    stubs = []
    for r in picked:
        longest = max(r.captions, key=lambda c: (len(c), c))
        stubs.append(
            Preference(
                id=str(r.image_id),
                image=str(Path(r.path).resolve()),
                prompt=CAPTION_PROMPT,
                chosen=longest,
                rejected_text=longest,
            )
        )
    if noisy or cfg.chosen == "corrected":
        stubs = recipe_noisy_rejections(vlm, stubs, template, cfg, progress=progress)
    out = []
    for p, r in zip(stubs, picked):
        if cfg.chosen == "corrected":
            chosen = correct_answer(p.rejected_noisy, r.counts)
        elif cfg.chosen == "first":
            chosen = correct_answer(r.captions[0], r.counts)
        else:
            chosen = p.chosen
        injected = injector(chosen, r.counts, p.id) if chosen else None
        if injected is not None:
            out.append(replace(p, chosen=chosen, rejected_text=injected.text))
    return out


def add_noisy_rejections(
    vlm,
    prefs: Sequence[Preference],
    template: str,
    *,
    step: int = DEFAULT_STEP,
    seed: int = 0,
    batch_size: int = 32,
    max_new_tokens: int = 64,
    progress: bool = True,
) -> list[Preference]:
    """y_l^n for each record: the model's greedy answer to the prompt under the noised image
    (noise seed = seed + position in the list), with its generated token ids."""
    from tqdm import tqdm

    from povid_eval.train.loop import load_image

    out = []
    for b in tqdm(
        range(0, len(prefs), batch_size), desc="y_l^n (noisy-image answers)", disable=not progress, file=sys.stderr
    ):
        chunk = [replace(p, noise_step=step, noise_seed=seed + b + j) for j, p in enumerate(prefs[b : b + batch_size])]
        images = [load_image((p.image, p.noise_step, p.noise_seed)) for p in chunk]
        prompts = [vlm.prompt(template, p.prompt) for p in chunk]
        ids = vlm.generate_ids(images, prompts, max_new_tokens=max_new_tokens, scorable=True)
        out += [
            replace(p, rejected_noisy=vlm.decode(x) or "<empty>", rejected_noisy_ids=tuple(x))
            for p, x in zip(chunk, ids)
        ]
    return out


def recipe_noisy_rejections(
    vlm, prefs: Sequence[Preference], template: str, cfg: RecipeConfig, progress: bool = True
) -> list[Preference]:
    """add_noisy_rejections with the recipe's noise step, seed, batch size and answer length."""
    return add_noisy_rejections(
        vlm,
        prefs,
        template,
        step=cfg.noise_step,
        seed=cfg.seed,
        batch_size=cfg.gen_batch_size,
        max_new_tokens=cfg.max_new_tokens,
        progress=progress,
    )


def _project_path(path: Path) -> str:
    """Relative to the project root when inside it (cards stay valid in a moved checkout), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(cards.ROOT)) if path.is_relative_to(cards.ROOT) else str(path)


def _base_path(card: cards.ModelCard) -> str:
    local = card.resolve(card.path)
    return _project_path(local) if local.exists() else card.path  # a hub id stays a hub id


def load_preference_file(path: str, image_root: str | None) -> list[Preference]:
    """A preference jsonl (our records), or the POVID release's json (LLaVA conversations)."""

    if str(path).endswith(".json"):
        if image_root is None:
            raise InputError(path, "the POVID release json needs --image-root (the COCO train2014 image folder)")
        return import_povid_release(path, image_root)
    return read_preferences(path, image_root)


def llm_injector(
    base_url: str | None, model: str | None, key_env: str | None, *, world: str | Path = "data/world", seed: int = 0
):
    """The ``llm`` injector on an OpenAI-compatible endpoint (answers cached in $POVID_EVAL_CACHE/llm)."""
    from povid_eval.core.http import ChatClient
    from povid_eval.train.inject import CooccurrenceInjector, LLMInjection
    from povid_eval.train.llm_inject import LLMInjector

    if not base_url or not model:
        raise InputError(None, "--injector llm needs --llm-base-url and --llm-model")
    client = ChatClient(base_url, model, api_key_env=key_env, cache_dir=cache_dir() / "llm")
    stats = CooccurrenceInjector.from_instances(
        cards.resolve_path(world) / "annotations" / "instances_train.json", seed=seed
    )
    return LLMInjection(LLMInjector(client), stats)


# ------------------------------------------------------------------------------------------ the recipe


def stages_for(recipe: str, cfg: RecipeConfig, stages: Sequence[int] | None = None) -> list[tuple[str, TrainConfig]]:
    """The (name, TrainConfig) stages a recipe runs; ``stages`` (povid only) picks some of POVID's two."""
    if recipe not in RECIPES:
        raise InputError(None, f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    if stages is not None and recipe != "povid":
        raise InputError(None, f"--stages picks POVID's stages; --recipe {recipe} has one stage of its own")
    if stages is not None and len(set(stages)) != len(stages):
        raise InputError(None, f"--stages names a stage twice: {','.join(map(str, stages))}")
    stages = (1, 2) if stages is None else stages
    if recipe == "dpo":
        return [("stage1", replace(cfg.stage1, steps=cfg.stage1.steps + cfg.stage2.steps))]
    if recipe == "noise-only":
        return [("noise", replace(cfg.stage2, loss="noise", steps=cfg.stage1.steps + cfg.stage2.steps))]
    if not stages or set(stages) - {1, 2}:
        raise InputError(None, f"--stages must name stages 1 and/or 2, got {','.join(map(str, stages)) or 'none'}")
    chosen = [("stage1", cfg.stage1), ("stage2", cfg.stage2)]
    plan = [chosen[s - 1] for s in stages]
    if plan[0][1].projector_lr is None and any(c.projector_lr is not None for _, c in plan[1:]):
        raise InputError(
            None,
            "stage2.projector_lr needs stage1.projector_lr: stage 2 continues stage 1's adapter, and a projector "
            "that stage 1 kept frozen has no trainable copy in it",
        )
    return plan


def _rank0_group(world: int):
    """A gloo group whose collectives wait up to a day (the default 30 min is too short for rank 0 making a
    large preference set while the others wait); None in one process. Every rank must call it, in step."""
    if world == 1:
        return None

    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=timedelta(days=1))


def _from_rank0(obj, world: int, group):
    """Rank 0's ``obj`` on every rank (a barrier too: the others wait until rank 0 has it)."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def written_by_train(path: Path) -> bool:
    """Is the card at ``path`` one that `povid-eval train` wrote (its ``[info] command``)?"""
    try:
        info = cards.read_toml(path).get("info", {})
    except (cards.InputError, OSError):
        return False
    return isinstance(info, dict) and str(info.get("command", "")).startswith("povid-eval train ")


def _planned_card(
    base: str, base_card: cards.ModelCard, out: str, recipe: str, seed: int, run_dir: Path, adapter: Path, merge: bool
) -> cards.ModelCard:
    """The card ``train`` writes: the base card's settings, the adapter (or the merged folder) and provenance."""
    local = lambda value: _project_path(base_card.resolve(value)) if value else ""  # noqa: E731
    card = replace(
        base_card,
        name=out,
        path=_base_path(base_card),
        adapter=_project_path(adapter),
        model_base=local(base_card.model_base),
        vision_tower=local(base_card.vision_tower),
        info={
            "command": f"povid-eval train --base {base} --out {out} --recipe {recipe}",
            "recipe": recipe,
            "seed": seed,
            "train_info": _project_path(run_dir / "train_info.json"),
        },
    )
    if merge:  # saved in the transformers layout, whatever the base's format
        card = replace(
            card, path=_project_path(run_dir / "merged"), adapter="", format="hf", model_base="", vision_tower=""
        )
    return card


def _file_sha256(path: str | Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path and Path(path).is_file() else None


def check_outputs(card_path: Path, card: cards.ModelCard, run_dir: Path, request: dict, overwrite: bool) -> None:
    """Never overwrite what train did not write, nor (without ``overwrite``) what an earlier train with other
    settings wrote: the card models/<out>.toml and the training folder <results>/train/<out>. With
    ``overwrite`` the earlier training folder (which carries the tool's marker) is emptied."""

    if card_path.exists() and not written_by_train(card_path):
        raise InputError(
            card_path,
            "this model card was not written by `povid-eval train`: refusing to overwrite it; choose another --out",
        )
    paths.require_ours(run_dir, "training folder")
    previous = run_dir / "request.json"
    earlier = read_json(previous) if previous.is_file() else None
    if earlier is not None and not isinstance(earlier, dict):
        raise InputError(previous, "corrupt training request (expected a JSON object): delete it, or pass --overwrite")
    retrain = earlier is not None and earlier != request and _has_state(run_dir)
    changed = []
    if retrain:
        changed.append(
            f"{run_dir} was trained with other settings "
            f"({', '.join(k for k in request if earlier.get(k) != request[k]) or 'format'})"
        )
    if card_path.exists() and card_path.read_text() != cards.to_toml(asdict(card)):
        changed.append(f"{card_path} differs from the card this training writes")
    if changed and not overwrite:
        raise InputError(None, f"{'; '.join(changed)}: pass --overwrite to replace them, or choose another --out")
    if run_dir.is_dir() and (retrain or not _has_state(run_dir)):  # the earlier training's files go now (the card
        for child in run_dir.iterdir():  # is replaced at the end)
            if child.name not in (paths.MARKER, paths.LOCK):
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def run_recipe(
    base: str,
    out: str,
    *,
    recipe: str = "povid",
    stages: Sequence[int] | None = None,
    config: RecipeConfig | None = None,
    preferences: str | None = None,
    image_root: str | None = None,
    world: str | Path | None = None,
    results: str | Path | None = None,
    merge: bool = False,
    prepare_world: Callable[[], object] | None = None,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> Path:
    """Train ``out`` from the base card ``base`` into <results>/train/<out>/ (resumable: the preference data
    and every stage's checkpoints are kept there); write models/<out>.toml; return the card's path.
    ``world`` and ``results`` default to the project's data/world and results/. A second run with the same
    settings resumes (or does nothing); other settings need ``overwrite`` (see check_outputs). The training
    folder is locked while a run writes it. ``prepare_world`` is called on rank 0 just before the world's
    preference data is made, after the output checks (a refused run writes nothing, builds nothing): it readies
    the world (the CLI builds the synthetic one where missing) and returns the hallucination injector (None:
    the world's co-occurrence injector).

    Under torchrun (WORLD_SIZE > 1; loop.train is data parallel) every rank runs this with the same arguments:
    rank 0 alone makes (or reads) the preference records and writes the data file, the other ranks receive
    rank 0's records (waiting until they are made); rank 0 alone logs and writes train_info.json, the merged
    model and the card; every rank returns the card's path."""

    rank, n_ranks = dist_info()
    if rank:
        log = lambda line: None  # noqa: E731  (rank 0 prints)
    paths.check_name(out, "--out")
    cfg = config or default_recipe()
    base_card = cards.load_model_card(base)
    if base_card.backend != "hf":
        raise InputError(
            cards.models_dir() / f"{base}.toml",
            'an API model (backend = "openai") cannot be trained here: give a card with local weights',
        )
    if base_card.adapter:
        raise InputError(
            cards.models_dir() / f"{base}.toml",
            "the base card already has an adapter; train from a card without one (or merge it first)",
        )
    world = Path(world) if world is not None else paths.project("data/world")
    results = paths.results_root(results)
    run_dir = paths.inside(results, "train", out)
    card_path = paths.inside(cards.models_dir(), f"{out}.toml")
    plan = stages_for(recipe, cfg, stages)
    card = _planned_card(base, base_card, out, recipe, cfg.seed, run_dir, run_dir / plan[-1][0] / "adapter", merge)

    request = {
        "base": base,
        "base_fp": fingerprint_hash(fingerprint(base_card)),
        "recipe": recipe,
        "stages": [n for n, _ in plan],
        "config": json.loads(json.dumps(asdict(cfg))),
        "preferences": _file_sha256(preferences),
        "image_root": str(image_root or ""),
        "world": str(world) if not preferences else "",
        "merge": merge,
    }
    error, given = None, None
    if rank == 0 and preferences:  # a bad preference file stops us before anything is written
        try:
            given = load_preference_file(preferences, image_root)
        except PovidError as e:
            error = e
    share_error(error, n_ranks)
    new = [p for p in (results / "train", run_dir) if not p.exists()]
    with ExitStack() as held:
        error = None
        if rank == 0:
            try:
                check_outputs(card_path, card, run_dir, request, overwrite)
                paths.claim(results, "train", out, kind="train")
                held.enter_context(paths.writer_lock(run_dir, f"the training of {out}"))
                atomic_write_json(run_dir / "request.json", request)
            except PovidError as e:
                error = e
        share_error(error, n_ranks)
        try:
            _train(
                base,
                base_card,
                card,
                card_path,
                recipe,
                plan,
                cfg,
                run_dir,
                world=world,
                given=given,
                merge=merge,
                prepare_world=prepare_world,
                log=log,
                rank=rank,
                n_ranks=n_ranks,
            )
        except BaseException:
            if rank == 0:
                _roll_back(run_dir, new)
            raise
    return card_path


STATE = ("preferences.*.jsonl", "*/checkpoints/step-*", "*/adapter", "merged", "train_info.json")


def _has_state(run_dir: Path) -> bool:
    """Does a training folder hold anything a resume would use: the world's preference data, a checkpoint,
    an adapter, a merged model? (A stage folder with a log but no checkpoint starts again from its step 0.)"""
    return run_dir.is_dir() and any(next(run_dir.glob(pattern), None) is not None for pattern in STATE)


def _roll_back(run_dir: Path, new: list[Path]) -> None:
    """A training that failed before it kept anything leaves nothing behind: its request.json goes, and so do
    the folders this call made (``new``: <results>/train and <results>/train/<out>) once they hold only markers."""

    if _has_state(run_dir):
        return
    for child in run_dir.iterdir() if run_dir.is_dir() else ():
        if child.name not in (paths.MARKER, paths.LOCK):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for folder in (run_dir, run_dir.parent):
        if folder in new and all(p.name in (paths.MARKER, paths.LOCK) for p in folder.iterdir()):
            shutil.rmtree(folder)


def _train(
    base: str,
    base_card: cards.ModelCard,
    card: cards.ModelCard,
    card_path: Path,
    recipe: str,
    plan,
    cfg: RecipeConfig,
    run_dir: Path,
    *,
    world: Path,
    given: list[Preference] | None,
    merge: bool,
    prepare_world,
    log,
    rank: int,
    n_ranks: int,
) -> None:
    """The locked part of run_recipe: preference data, the stages, train_info.json, the merged model, the card."""
    import torch
    from transformers.utils import logging as hf_logging

    from povid_eval.vlm import load_vlm_card

    if base_card.threads:
        torch.set_num_threads(base_card.threads)
    t0 = time.time()
    needs_noisy = any(c.loss in ("povid", "noise") for _, c in plan)
    data_key = hashlib.sha256(
        json.dumps(
            [
                base_card.path,
                str(world),
                cfg.images,
                cfg.chosen,
                cfg.injector_weights,
                cfg.noise_step,
                cfg.max_new_tokens,
                cfg.seed,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:12]
    data_path = run_dir / f"preferences.{data_key}.jsonl"  # the world's data, made once per data config
    hf_logging.disable_progress_bar()
    group = _rank0_group(n_ranks)
    prefs = None
    if rank == 0:
        if given is not None:
            prefs = given
        elif data_path.is_file():
            prefs = read_preferences(data_path, image_root=cards.ROOT)
    vlm = load_vlm_card(base_card)
    if rank == 0:
        if prefs is None:
            injector = prepare_world() if prepare_world else None
            prefs = world_preferences(vlm, world, cfg, base_card.template, injector, noisy=needs_noisy)
        if needs_noisy and any(p.rejected_noisy_ids is None and p.rejected_noisy is None for p in prefs):
            prefs = recipe_noisy_rejections(vlm, prefs, base_card.template, cfg)
        if given is None:
            # image paths written relative to the project root (paths.py), read back with image_root = ROOT
            write_preferences(data_path, [replace(p, image=_project_path(p.image)) for p in prefs])
    prefs = _from_rank0(prefs, n_ranks, group)
    log(f"{len(prefs)} preference records ({time.time() - t0:.0f}s)")
    lengths = answer_lengths(prefs)
    log(length_note(lengths))
    infos = {}
    for name, stage_cfg in plan:
        infos[name] = train(vlm, prefs, stage_cfg, run_dir / name, template=base_card.template, log=log)
        if not infos[name]["complete"]:
            raise InputError(run_dir / name, "training stopped before the last step")
    info = {
        "recipe": recipe,
        "base": base,
        "stages": [n for n, _ in plan],
        "config": asdict(cfg),
        "answer_lengths": lengths,
        "train": infos,
        "wall_s": round(time.time() - t0, 1),
    }
    if rank:  # rank 0 writes train_info.json, the merged model and the card; the others wait for it
        import torch.distributed as dist

        dist.barrier(group=group)
        return
    atomic_write_json(run_dir / "train_info.json", info)
    if merge:
        from povid_eval.train.loop import merge_adapter

        merge_adapter(vlm, run_dir / "merged")
    cards.save_model_card(card, card_path.parent)
    log(f"wrote {card_path} ({time.time() - t0:.0f}s in all)")
    if n_ranks > 1:  # the others return once the card is there
        import torch.distributed as dist

        dist.barrier(group=group)
