"""Train the embedded tiny base (models/base/) from the synthetic world, the way LLaVA-1.5 is made.

    stage 0  vision   the CLIP tower learns to see (stands in for CLIP's own pretraining, which sees far more
                      images than the instruction data): on ``vision_images`` freshly rendered scenes of the
                      world (their own stream, not the train split; 0 = the train split's images) each patch
                      feature of layer -2 (the one LLaVA reads) predicts which visible categories and which
                      colours the patch shows, multi-label BCE through a throw-away linear head. What a patch
                      shows comes from the render's pixel masks (``patch_targets``: a category holding 20% of
                      its visible pixels there, or 10% of the patch), not from the boxes, whose margins and
                      covered parts would teach the tower to name what it cannot see. Read out per image
                      (max over patches > 0.5; 1,000 fresh renders; 3,000 steps on 40,000 renders), present
                      core / absent core named / present extras: box targets 0.879 / 0.201 / 0.432, mask
                      targets 0.895 / 0.166 / 0.545, and with every glyph at least 14 pixels tall (catalog)
                      0.914 / 0.147 / 0.720; after 6,000 steps on 50,000 renders 0.942 / 0.132 / 0.793. A base
                      built on the latter (everything else as here) against this stage's 9,000 steps on 75,000
                      renders: POPE mean F1 0.829 -> 0.854, grounding gap 0.603 -> 0.624, CHAIR_i 0.209 ->
                      0.199. On the 8,000 train images alone the tower overfit (absent core named 28%).
    stage 1  text     the Llama model alone on canonical captions of many freshly sampled scenes
                      (``sampled_scenes``), after the chat template with the image left out (loss on
                      the caption; ``text_format="plain"``: "<s> caption</s>"). This is where the object
                      co-occurrence prior comes from, as a real LLM brings it from web text.
                      ``text_context`` > 0 (off by default) puts, in that share of the rows, the word of what
                      each patch shows (``patch_words``) in the slots the image tokens fill later (one per
                      patch), so the language model also learns to copy objects from its context; ``reading``
                      > 0 then pulls the projector's output at each patch to that word's embedding in stages 2
                      and 3 (``reading_loss``). Measured (val, 200 images, the words of the true patches as the
                      context): after 1,000 text steps the copier named 38% of the missing core objects, after
                      3,000 10% (present core 97%, present others 87%): the skill appears late. A base built
                      on it (text 0.5 / 3,000 steps, reading 1, the box-target tower and small glyphs of
                      cb4a8ac's base) reads its image tokens less well than words (present others named
                      53-60%) and POVID from it still trades recall:
                      CHAIR_i -45% at recall -13.7 points (that base: -40% at -18.7), so it stays off.
    stage 2  align    projector only (tower and LLM frozen), image-caption pairs, "Describe this image."
                      (the image's canonical reference caption, every object in category order with count
                      and colour, ``canonical_caption`` of the time, else a random one; also in stage 3: a
                      deterministic target that depends on the image makes the captioner look at it)
    stage 3  tune     projector + LLM (tower frozen) on a mixture of the train split and ``tune_images`` fresh
                      renders (stream "tune", with the world's reference captions, as noisy as the train
                      split's; they serve stage 2 too): captions, "Is there a
                      {object} in the image?" -> Yes/No (``existence_sampling``: "image", 50/50 a visible
                      category of the image or any absent one, as LLaVA's data; "object", balanced per object
                      with ``partner_negatives`` of the negatives an absent usual partner: left the tiny model
                      at chance on POPE) and short answers
                      (count, colour, place), half of the short questions with LLaVA-1.5's "Answer the
                      question using a single word or phrase."
                      ``grounding`` > 0 adds, here and in stage 2, a dense loss at the image positions
                      (``grounding_loss``): the language model's head, over the category words, predicts what the
                      patches up to each image token show. Off by default: on cb4a8ac's base, at weight 5 the
                      answers read the pixels a little more (Yes to the val images' missing core objects 96% ->
                      89%, POPE mean F1 0.794 -> 0.824) but the captions do not (CHAIR_i 0.2585 -> 0.235), and
                      POVID from it trades recall as before. In stage 3 alone it cost the answers their Yes to
                      visible objects (87% -> 64%, POPE mean F1 0.676).

Every image-grounded training sequence is ``format_prompt(question)`` + `` {answer}</s>`` with the loss on the
answer tokens only. The tower is frozen after stage 0, so its features are computed once per image. AdamW,
linear warm-up then cosine decay to 10%, per stage. Deterministic given the seed and the thread count.
``tower`` (``--tower DIR``) takes another base's tower instead of stage 0, as LLaVA starts from CLIP's. The
committed base is b3a0d6e's tower (stage 0: 548 s at one thread) with stages 1-3 retrained at two threads
(``--tower models/base --threads 2``): 1,261 s, of which 1,058 s are the 9,000 tuning steps. A base from
nothing at two threads: about 29 minutes (stage 0 about 300 s, measured on 200 steps, and 170 s of renders in
two processes). Two threads run 1.5x faster than one on an idle 2-core machine (0.095 against 0.143 s per
tuning step) and up to 10x slower when another job shares the cores; the weights depend on the thread count.
Run: ``python -m povid_eval.world.pretrain --world data/world --out models/base --threads 2``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from povid_eval.benches.coco import ImageRecord, image_records, load_split
from povid_eval.core.entry import count, run_reporting
from povid_eval.core.errors import InputError, MissingAssetError
from povid_eval.core.io import atomic_write_json, read_json, staging_dir
from povid_eval.vlm.build import DEFAULT_SIZES, build_tiny_llava
from povid_eval.vlm.tokenizer import CAPTION_QUESTION, format_prompt, vocab_from_texts
from povid_eval.world import text as world_text
from povid_eval.world.catalog import IMAGE_SIZE, SCENE_BY_NAME, SCENES
from povid_eval.world.generate import canonical_rank
from povid_eval.world.sampling import sample_layout
from povid_eval.world.text import (
    LLAVA_SUFFIX,
    MME_SUFFIX,
    MME_TEMPLATES,
    NUMBERS,
    PALETTE,
    RELATIONS,
    article,
    capitalize,
    plural,
    scene_a,
)

EXISTENCE_QUESTION = "Is there a {object} in the image?"


@dataclass(frozen=True)
class StageConfig:
    steps: int
    lr: float
    batch_size: int
    warmup: int = 30


@dataclass
class PretrainConfig:
    """Everything that decides the weights (recorded in train_info.json)."""

    seed: int = 0
    text_scenes: int = 30000  # captions of freshly sampled scenes for stage 1
    vision_images: int = 75000  # freshly rendered scenes for stage 0 (0: the train split's images)
    vision: StageConfig = field(default_factory=lambda: StageConfig(steps=9000, lr=3e-3, batch_size=64))
    text: StageConfig = field(default_factory=lambda: StageConfig(steps=300, lr=3e-3, batch_size=64))
    align: StageConfig = field(default_factory=lambda: StageConfig(steps=300, lr=2e-3, batch_size=32))
    tune: StageConfig = field(default_factory=lambda: StageConfig(steps=9000, lr=1e-3, batch_size=32))
    mix: tuple[float, ...] = (0.4, 0.35, 0.1, 0.15)  # tune: captions, yes/no, short answers, MME-style yes/no
    canonical_caption: float = 1.0  # align/tune: share of caption targets that are the canonical caption
    existence_sampling: str = "image"  # tune yes/no: "object" (yes_no_example) | "image" (yes_no_by_image)
    partner_negatives: float = 0.5  # tune yes/no: share of "No" questions about an absent usual partner
    # align/tune: weight of the image-token grounding loss (0: off): at every image position the language model's
    # head predicts, over the category words, what the patches up to it show (``grounding_targets``)
    grounding: float = 0.0
    # stage 1: share of scene captions whose prompt holds, in the image's slots (one per patch), the word of what
    # each patch shows (``patch_words``): the language model learns to copy objects from its context (0: off)
    text_context: float = 0.0
    # align/tune: weight of the reading loss (0: off): the projector's output at each patch is pulled to the
    # input embedding of that patch's word (``reading_loss``), the tokens the stage-1 copier reads
    reading: float = 0.0
    text_format: str = "chat"  # stage 1 text: "chat" (template without image, loss on the caption) | "plain"
    # build_tiny_llava sizes: a wider vision tower than DEFAULT_SIZES (it must tell 33 categories and 10 colours
    # apart in 16 x 16 patches) and a fourth language-model layer (with three, the yes/no answers depended on
    # the object asked about, not on the image: POPE mean F1 0.62; with four, 0.76-0.81 in three trials of four)
    sizes: dict = field(default_factory=lambda: {"vision_hidden": 128, "vision_intermediate": 384, "text_layers": 4})
    # stages 2 and 3: freshly rendered images (stream "tune") added to the train split's, with the world's noisy
    # reference captions (0: the train split alone, which the base learned by heart: d' 2.30 on 500 train
    # images, 1.86 on val)
    tune_images: int = 56000
    render_workers: int = 2  # processes that render the fresh images of stages 0 and 3 (the result is the same)
    threads: int = 1  # on a shared 2-core machine, 2 intra-op threads ran 10x slower than 1 (oversubscription)


# ---------------------------------------------------------------- the world's train split


def world_hash(world_dir: str | Path) -> str:
    """The world's identity: its manifest's own hash field if it has one, else sha256 of manifest.json."""
    manifest = Path(world_dir) / "manifest.json"
    if not manifest.is_file():
        raise MissingAssetError(
            f"{manifest}: not found (build the world first: povid-eval world build --out {manifest.parent})"
        )
    data = read_json(manifest)
    for key in ("hash", "world_hash", "sha256"):
        if isinstance(data, dict) and isinstance(data.get(key), str):
            return data[key]
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]


def sampled_scenes(n: int, seed: int) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    """One canonical caption for each of ``n`` freshly sampled scenes of the world, text only (nothing is
    rendered).

    Scenes come from the world's own sampler (same co-occurrence, counts, colours and layout as its images,
    from a random stream of their own); captions are the world's canonical ones (every object in category
    order, with count and colour). Unlike reference captions, which only name what stays visible, these name what
    the scene holds: the way people write about kitchens in general, not about one picture. Each comes with the
    boxes of its visible (not hidden) instances, (category, (x, y, w, h)) in pixels of the world's image.
    """
    rng = random.Random(f"povid-pretrain-text:{seed}")
    out = []
    for _ in range(n):
        layout = sample_layout(rng)
        centres: dict[str, list[tuple[float, float]]] = {}
        colours = {}
        for inst in layout.instances:
            x, y, w, h = inst.bbox
            centres.setdefault(inst.category, []).append((x + w / 2, y + h / 2))
            colours[inst.category] = inst.colour
        mean = {c: (sum(p[0] for p in v) / len(v), sum(p[1] for p in v) / len(v)) for c, v in centres.items()}
        order = sorted(mean, key=canonical_rank)
        mentions = [world_text.mention(c, len(centres[c]), colours[c], world_text.position_of(*mean[c])) for c in order]
        scene = next(s for s in SCENES if s.name == layout.scene)
        boxes = [(inst.category, inst.bbox) for inst in layout.instances if not inst.hidden]
        out.append((world_text.canonical_caption(scene.phrase, mentions), boxes))
    return out


# first image id of the fresh language-stage renders: above any split's ids, so that their captions' random
# streams (keyed by image id) are not the train split's
FRESH_TUNE_ID = 1_000_000


def _render_chunk(seed: int, stream: str, ids: range, image_processor) -> tuple[list[ImageRecord], torch.Tensor]:
    """fresh_images' work for the image ids ``ids``: a pure function of its arguments (run in a worker)."""
    from povid_eval.world.export import instances_json
    from povid_eval.world.generate import captions, make_image

    images = [make_image(seed, stream, i) for i in ids]
    pixels = image_processor([im.pixels for im in images], return_tensors="pt")["pixel_values"]
    records = image_records(instances_json(images, first_ann_id=1), Path("."))[0]
    for record, image in zip(records, images):
        if stream == "tune":
            record.captions = captions(image, seed)
        else:
            record.masks = {c: np.packbits(image.visible_mask(c)) for c in record.seen}
    return records, pixels


_NO_SIGINT = (signal.SIGINT, signal.SIG_IGN)


def fresh_images(
    n: int, seed: int, processor, stream: str = "tower", workers: int = 1
) -> tuple[list[ImageRecord], torch.Tensor]:
    """``n`` freshly rendered world images (their own ``stream``: no image of any split) as annotation records,
    read from their COCO instances as a split's are (``image_records``: boxes, colours, visible categories, what
    patch_targets reads), and their [n, 3, H, W] pixel values. Stream "tower": with the visible pixel masks;
    "tune": with the world's reference captions, as noisy as the train split's (``generate.captions``).
    ``workers`` > 1 renders chunks in that many processes; the result is the same."""
    first = FRESH_TUNE_ID if stream == "tune" else 0
    chunks = [
        (seed, stream, range(a, min(first + n, a + 256)), processor.image_processor)
        for a in range(first, first + n, 256)
    ]
    if workers > 1 and len(chunks) > 1:
        # Ctrl-C is the parent's to handle: it stops the pool as it leaves the block
        with multiprocessing.get_context("spawn").Pool(workers, initializer=signal.signal, initargs=_NO_SIGINT) as pool:
            done = pool.starmap(_render_chunk, chunks)
    else:
        done = [_render_chunk(*chunk) for chunk in chunks]
    return [r for records, _ in done for r in records], torch.cat([pixels for _, pixels in done])


# ---------------------------------------------------------------- tensors


def pixel_tensor(processor, records: Sequence[ImageRecord]) -> torch.Tensor:
    """[N, 3, H, W] pixel values exactly as the processor makes them at inference."""
    from PIL import Image

    out = []
    for i in range(0, len(records), 256):
        images = [Image.open(r.path).convert("RGB") for r in records[i : i + 256]]
        out.append(processor.image_processor(images, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def visible_boxes(record: ImageRecord) -> list[tuple[str, tuple[float, ...]]]:
    """The record's boxes of categories not hidden (in ``seen``; all of them where visibility is not annotated):
    what the tower can be asked to see."""
    return [(name, box) for name, box in record.boxes if not record.seen or name in record.seen]


# A patch shows a category (mask rule) when it holds this share of the category's visible pixels, or when they
# cover this share of the patch: a few stray pixels at a patch's edge are no target.
MASK_SHARE, PATCH_SHARE = 0.2, 0.1


def mask_patches(packed, width: int, height: int, grid: int) -> torch.Tensor:
    """Bool [grid, grid]: the patches that show a category, from np.packbits of its visible pixels (mask rule)."""
    mask = np.unpackbits(packed, count=width * height).reshape(height, width).astype(np.int32)
    rows = [round(k * height / grid) for k in range(grid)]
    cols = [round(k * width / grid) for k in range(grid)]
    counts = np.add.reduceat(np.add.reduceat(mask, rows, axis=0), cols, axis=1)
    on = (counts > 0) & (counts >= MASK_SHARE * counts.sum()) | (counts >= PATCH_SHARE * width * height / grid**2)
    return torch.from_numpy(on)


def patch_targets(records: Sequence[ImageRecord], categories: list[str], grid: int) -> torch.Tensor:
    """[N, grid*grid, C + K] float: 1 where a patch shows a category (first C columns) and where it shows an
    object of that colour (K = the palette's colours), row-major as CLIP orders patches. Where a record has
    visible-pixel masks (fresh renders), a patch shows what holds MASK_SHARE of its visible pixels or covers
    PATCH_SHARE of the patch (``mask_patches``); otherwise, what a box overlaps. Hidden objects (not in
    ``seen``) are no target: the tower cannot see them."""
    index = {c: i for i, c in enumerate(categories)}
    colour_index = {c: len(categories) + i for i, c in enumerate(PALETTE)}
    target = torch.zeros(len(records), grid, grid, len(categories) + len(PALETTE))
    for n, r in enumerate(records):
        sx, sy = grid / r.width, grid / r.height
        shown = [(name, mask_patches(packed, r.width, r.height, grid)) for name, packed in r.masks.items()]
        for name, (x, y, w, h) in visible_boxes(r):
            if name not in r.masks:
                on = torch.zeros(grid, grid, dtype=torch.bool)
                x0, y0 = int(x * sx), int(y * sy)
                on[y0 : max(y0 + 1, math.ceil((y + h) * sy)), x0 : max(x0 + 1, math.ceil((x + w) * sx))] = True
                shown.append((name, on))
        for name, on in shown:
            target[n, on, index[name]] = 1.0
            if r.colours.get(name) in colour_index:
                target[n, on, colour_index[r.colours[name]]] = 1.0
    return target.reshape(len(records), grid * grid, -1)


def vision_features(model, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The tower's layer-``vision_feature_layer`` patch features without CLS, [N, patches, vision_hidden]."""
    layer = model.config.vision_feature_layer
    tower = model.model.vision_tower
    out = []
    with torch.no_grad():
        for i in range(0, len(pixel_values), batch_size):
            hs = tower(pixel_values[i : i + batch_size], output_hidden_states=True).hidden_states[layer]
            out.append(hs[:, 1:])
    return torch.cat(out)


def lm_hidden(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor | None = None
) -> torch.Tensor:
    """Last hidden states of the Llava model with the image tokens' embeddings given (the projector's output of
    the tower's cached features, [B, P, D]) instead of pixels: same maths as LlavaForConditionalGeneration.forward
    (they replace the <image> token embeddings)."""
    embeds = model.model.get_input_embeddings()(input_ids)
    if image_embeds is not None:
        mask = (input_ids == model.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(mask, image_embeds.to(embeds.dtype))
    return model.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state


def lm_logits(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor | None = None
) -> torch.Tensor:
    """Next-token logits of ``lm_hidden``."""
    return model.lm_head(lm_hidden(model, input_ids, attention_mask, image_embeds))


def grounding_targets(patch: torch.Tensor) -> torch.Tensor:
    """[N, P, C] what the patches up to each one (CLIP's row-major order) show: the running maximum of the
    category columns of ``patch_targets``. The last image token's target is the image's visible categories."""
    return patch.cummax(1).values


def grounding_loss(
    model, hidden: torch.Tensor, input_ids: torch.Tensor, word_ids: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """BCE of the language-model head's logits of the category words (``word_ids``, one per category) at the image
    positions against ``targets`` [B, P, C] (``grounding_targets``): the image tokens learn to say which objects
    they show. Measured on the committed base, retrained on yes/no questions alone (1,500 steps) with the loss at
    weight 5: the image positions' own readout (max over patches) names 13% of the val images' missing core
    objects at 90% of the present ones; the answers still say Yes to 34% of them (24% with the running
    targets), against 41% without the loss: what the answer fails at is gathering it from the image tokens."""
    image = hidden[input_ids == model.config.image_token_id].view(len(targets), targets.shape[1], -1)
    return F.binary_cross_entropy_with_logits(model.lm_head(image)[..., word_ids], targets)


def patch_words(
    boxes: Sequence[tuple[str, Sequence[float]]], width: float, height: float, grid: int
) -> list[str | None]:
    """What each patch shows, one category (or None) per patch in CLIP's row-major order: the category whose
    boxes cover most of the patch; then every category that won no patch takes, among the patches its boxes
    overlap, the one it covers most whose word is repeated elsewhere or empty (so a mouse beside a laptop is
    still read). ``boxes``: (category, (x, y, w, h)) of the visible instances."""
    pw, ph = width / grid, height / grid
    area: list[dict[str, float]] = [{} for _ in range(grid * grid)]
    for name, (x, y, w, h) in boxes:
        for row in range(grid):
            oy = min(y + h, (row + 1) * ph) - max(y, row * ph)
            for col in range(grid):
                ox = min(x + w, (col + 1) * pw) - max(x, col * pw)
                if ox > 0 and oy > 0:
                    cell = area[row * grid + col]
                    cell[name] = cell.get(name, 0.0) + ox * oy
    words = [max(cell, key=lambda n: (cell[n], n)) if cell else None for cell in area]
    totals: dict[str, float] = {}
    for cell in area:
        for name, a in cell.items():
            totals[name] = totals.get(name, 0.0) + a
    for name in sorted(totals, key=lambda n: (totals[n], n)):
        if name in words:
            continue
        free = [p for p, cell in enumerate(area) if name in cell and (words[p] is None or words.count(words[p]) > 1)]
        if free:
            words[max(free, key=lambda p: (area[p][name], -p))] = name
    return words


def category_word_ids(categories: Sequence[str], ids: Callable[[str], list[int]]) -> dict[str, int]:
    """One token id per category: its name's last word ("stop sign" -> "sign")."""
    return {c: ids(" " + c)[-1] for c in categories}


def reading_loss(model, projected: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Relative squared distance of the projector's output at each patch (``projected`` [B, P, D]) to the
    (detached) input embedding of that patch's word, ``target_ids`` [B, P] (the image token's own id where the
    patch shows nothing): sum ||proj - emb||^2 / sum ||emb||^2. The image tokens become the words the stage-1
    copier learned to read."""
    target = model.model.get_input_embeddings()(target_ids).detach()
    return (projected - target).pow(2).sum() / target.pow(2).sum()


def pack(rows: Sequence[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded input_ids, attention_mask and labels (-100 outside the response) from (prompt, response) ids."""
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
        mask[i, : len(p) + len(r)] = 1
    return ids, mask, labels


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the labelled tokens (labels[t] predicted from position t - 1)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


# ---------------------------------------------------------------- the loop


def _lr_at(step: int, cfg: StageConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def run_stage(
    name: str,
    params: list[torch.nn.Parameter],
    cfg: StageConfig,
    loss_fn: Callable[[int], torch.Tensor],
    log: Callable[[str], None] = print,
) -> dict:
    """AdamW on ``params`` for cfg.steps steps of ``loss_fn(step)``; returns steps, wall time, losses."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    losses, t0, every = [], time.time(), max(1, cfg.steps // 20)
    running = None
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % every == 0 or step == cfg.steps - 1:
            losses.append([step, round(running, 4)])
            log(f"[{name}] step {step}/{cfg.steps} loss {running:.4f} ({time.time() - t0:.0f}s)")
    return {
        "steps": cfg.steps,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "wall_s": round(time.time() - t0, 1),
        "losses": losses,
    }


def _set_trainable(model, parts: Sequence[str]) -> list[torch.nn.Parameter]:
    modules = {
        "vision": model.model.vision_tower,
        "projector": model.model.multi_modal_projector,
        "llm": torch.nn.ModuleList([model.model.language_model, model.lm_head]),
    }
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for part in parts:
        for p in modules[part].parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def _plural(name: str) -> str:

    return plural(name)


def short_suffix() -> str:
    """LLaVA-1.5's short-answer instruction (also the one of the world's POPE and MME questions)."""

    return LLAVA_SUFFIX


class ExistenceIndex:
    """Which train images hold each category (visible), and which lack it though their scene usually has it."""

    def __init__(self, records: Sequence[ImageRecord], categories: list[str]):
        self.categories = list(categories)
        self.present: dict[str, list[int]] = {c: [] for c in categories}
        self.absent: dict[str, list[int]] = {c: [] for c in categories}
        self.partner_absent: dict[str, list[int]] = {c: [] for c in categories}
        for i, r in enumerate(records):
            scene = SCENE_BY_NAME.get(r.scene)
            usual = set(scene.core + scene.extras) if scene else set()
            for c in categories:
                if c in r.seen:
                    self.present[c].append(i)
                elif c not in r.counts:
                    self.absent[c].append(i)
                    if c in usual:
                        self.partner_absent[c].append(i)


def yes_no_by_image(records: Sequence[ImageRecord], index: ExistenceIndex, rng: random.Random) -> tuple[int, str, str]:
    """(image, 'Is there a {object} in the image?', Yes/No), the image drawn first: a visible category of it
    (Yes) or any category it lacks (No), 50/50 (LLaVA-style data: frequent objects are asked about, and
    answered Yes, more often). Half the time with the short-answer instruction."""
    i = rng.randrange(len(records))
    present = sorted(records[i].seen)
    absent = [c for c in index.categories if c not in records[i].counts]
    if present and (rng.random() < 0.5 or not absent):
        name, answer = rng.choice(present), "Yes"
    else:
        name, answer = rng.choice(absent), "No"
    question = EXISTENCE_QUESTION.format(object=name)
    return (i, question + short_suffix(), answer) if rng.random() < 0.5 else (i, question, f"{answer}.")


def yes_no_example(index: ExistenceIndex, rng: random.Random, partner_negatives: float = 0.0) -> tuple[int, str, str]:
    """(image, 'Is there a {object} in the image?', Yes/No): the object is drawn first (uniformly), then the
    answer (50/50), then an image that fits: one where the object is visible (Yes), or one that lacks it,
    ``partner_negatives`` of the time an image whose scene usually has it (No). Every object is thus as often
    a Yes as a No: the question alone tells nothing, the answer is in the pixels. Half the time with the
    short-answer instruction."""
    name = rng.choice([c for c in index.categories if index.present[c] and index.absent[c]])
    if rng.random() < 0.5:
        i, answer = rng.choice(index.present[name]), "Yes"
    else:
        pool = index.partner_absent[name] if index.partner_absent[name] and rng.random() < partner_negatives else []
        i, answer = rng.choice(pool or index.absent[name]), "No"
    question = EXISTENCE_QUESTION.format(object=name)
    return (i, question + short_suffix(), answer) if rng.random() < 0.5 else (i, question, f"{answer}.")


def short_answer_example(record: ImageRecord, rng: random.Random) -> tuple[str, str] | None:
    """A count, colour or place question with a one-word answer (with the instruction) or a sentence."""

    present = sorted(record.seen)
    if not present:
        return None
    name = rng.choice(present)
    kind = rng.choice(("count", "colour", "scene"))
    if kind == "count" and record.counts[name] in NUMBERS:
        n = NUMBERS[record.counts[name]]
        plural = _plural(name)
        question = f"How many {plural} are there in the image?"
        be, noun = ("is", name) if n == "one" else ("are", plural)
        return (
            (question + short_suffix(), capitalize(n))
            if rng.random() < 0.5
            else (question, f"There {be} {n} {noun} in the image.")
        )
    if kind == "colour" and name in record.colours and name != "person":
        question = f"What color is the {name} in the image?"
        colour = record.colours[name]
        return (
            (question + short_suffix(), capitalize(colour))
            if rng.random() < 0.5
            else (question, f"The {name} is {colour}.")
        )
    if record.scene:
        return "Where was this picture taken?", f"The picture was taken in {scene_a(record.scene)}."
    return None


def mme_style_example(record: ImageRecord, categories: list[str], rng: random.Random) -> tuple[str, str] | None:
    """A yes/no question in MME's phrasings (existence "in this image", count, position, colour), true or
    false 50/50, ending with MME's "Please answer yes or no." or LLaVA's short-answer instruction."""
    from povid_eval.world.benchsets import OPPOSITE, box_relation

    seen = sorted(record.seen)
    if not seen:
        return None
    truth = rng.random() < 0.5
    kind = rng.choice(("existence", "count", "position", "color"))
    name = rng.choice(seen)
    if kind == "existence":
        absent = [c for c in categories if c not in record.counts]
        obj = name if truth or not absent else rng.choice(absent)
        truth = obj == name
        question = MME_TEMPLATES["existence"][0].format(a_object=f"{article(obj)} {obj}")
    elif kind == "count":
        n = record.counts[name] if truth else rng.choice([k for k in NUMBERS if k != record.counts[name]])
        one, many = MME_TEMPLATES["count"]
        question = one.format(object=name) if n == 1 else many.format(number=NUMBERS[n], objects=plural(name))
    elif kind == "position":
        single = {c: box for c, box in record.boxes if record.counts[c] == 1 and c in record.seen}
        pairs = [(a, b, r) for a in single for b in single if a != b and (r := box_relation(single[a], single[b]))]
        if not pairs:
            return None
        a, b, r = rng.choice(pairs)
        if not truth:
            r = OPPOSITE[r]
        question = MME_TEMPLATES["position"][0].format(object=a, other=b, relation=RELATIONS[r])
    else:
        if name not in record.colours or name == "person":
            return None
        colour = record.colours[name] if truth else rng.choice([c for c in PALETTE if c != record.colours[name]])
        question = MME_TEMPLATES["color"][0].format(a_colour_object=f"{article(colour)} {colour} {name}")
    suffix = short_suffix() if rng.random() < 0.5 else MME_SUFFIX
    return question + suffix, "Yes" if truth else "No"


def train_tower(model, records, categories: list[str], grid: int, cfg: PretrainConfig, processor, log) -> dict:
    """Stage 0 (module docstring): each patch feature of the layer the projector reads predicts which categories
    and colours the patch shows (``patch_targets``), multi-label BCE through a throw-away linear head, on
    ``cfg.vision_images`` fresh renders (0: the train split's images)."""
    if cfg.vision_images:
        records, pixels = fresh_images(cfg.vision_images, cfg.seed, processor, workers=cfg.render_workers)
    else:
        pixels = pixel_tensor(processor, records)
    targets = patch_targets(records, categories, grid)
    head = torch.nn.Linear(model.config.vision_config.hidden_size, targets.shape[-1])
    params = _set_trainable(model, ["vision"]) + list(head.parameters())
    layer = model.config.vision_feature_layer
    g = torch.Generator().manual_seed(cfg.seed)

    def vision_loss(step):
        idx = torch.randint(len(records), (cfg.vision.batch_size,), generator=g)
        hs = model.model.vision_tower(pixels[idx], output_hidden_states=True).hidden_states[layer][:, 1:]
        return F.binary_cross_entropy_with_logits(head(hs), targets[idx])

    return run_stage("vision", params, cfg.vision, vision_loss, log)


def tower_weights(source: Path) -> Path:
    """The safetensors file ``--tower`` reads, or a one-line error before any work is done."""
    weights = source / "model.safetensors"
    if not weights.is_file():
        raise MissingAssetError(f"{weights}: not found (--tower takes a folder that pretrain wrote)")
    return weights


def load_tower(model, source: str | Path) -> dict:
    """Stage 0 skipped: the vision tower's weights from another tiny base (its model.safetensors), as LLaVA
    starts from a trained CLIP. The towers' configs must agree; returns what train_info records."""
    from safetensors.torch import load_file

    source = Path(source)
    weights = tower_weights(source)
    config = read_json(source / "config.json").get("vision_config", {})
    ours = model.config.vision_config.to_dict()
    differ = [
        f"{k} {config.get(k)} (this build: {ours[k]})"
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "patch_size", "image_size")
        if config.get(k) != ours[k]
    ]
    if differ:
        raise InputError(
            source / "config.json", f"a vision tower of another shape: {', '.join(differ)}", field="vision_config"
        )
    tower = {k.split("vision_tower.", 1)[1]: v for k, v in load_file(weights).items() if "vision_tower." in k}
    model.model.vision_tower.load_state_dict(tower, strict=True)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return {"steps": 0, "from": str(source), "from_sha256": digest}


def pretrain(
    world_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    *,
    config: PretrainConfig | None = None,
    tower: str | Path | None = None,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build and train the tiny base on ``world_dir`` (its train split and fresh renders of its scenes, never
    a benchmark image); save model, processor and train_info.json to ``out_dir``; return the train info.
    ``tower``: a tiny base's folder whose vision tower is taken instead of training one (stage 0 skipped)."""
    cfg = config or PretrainConfig(seed=seed)
    cfg.seed = seed
    if tower is not None:
        tower_weights(Path(tower))
    t_start = time.time()
    torch.set_num_threads(cfg.threads)
    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    world = Path(world_dir)
    w_hash = world_hash(world)
    records, categories = load_split(world, "train")
    scenes = sampled_scenes(cfg.text_scenes, seed)
    scene_texts = [caption for caption, _ in scenes]
    captions = [c for r in records for c in r.captions]
    questions = [EXISTENCE_QUESTION.format(object=c) for c in categories]
    vocab_texts = captions + scene_texts + questions + ["Yes", "No", CAPTION_QUESTION]
    vocab_texts += [short_suffix(), "Where was this picture taken?", "What color is the", "How many are there"]
    world_vocab = world / "vocab.txt"
    if world_vocab.is_file():  # every word of the world's texts (benchmark questions included)
        vocab_texts += world_vocab.read_text().split()
    model, processor = build_tiny_llava(vocab_from_texts(vocab_texts), seed=seed, **cfg.sizes)
    tok = processor.tokenizer
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{len(records)} train images, {len(categories)} categories, vocab {len(tok)}, {n_params:,} parameters")

    def ids(text: str, special: bool = False) -> list[int]:
        return tok(text, add_special_tokens=special)["input_ids"]

    def response(answer: str) -> list[int]:  # as VLM.response_token_ids: " answer" then </s>
        return ids(" " + answer.strip()) + [tok.eos_token_id]

    prompt_cache: dict[str, list[int]] = {}

    def prompt(question: str) -> list[int]:
        if question not in prompt_cache:
            n_image = model.config.image_seq_length
            text = format_prompt(question).replace("<image>", "<image>" * n_image)
            prompt_cache[question] = ids(text, special=True)
        return prompt_cache[question]

    # one word per category (a name's last word: "stop sign" -> sign) for the losses that read category words
    word_id = category_word_ids(categories, ids)
    if (cfg.grounding or cfg.text_context or cfg.reading) and len(set(word_id.values())) < len(categories):
        shared = sorted(c for c in categories if list(word_id.values()).count(word_id[c]) > 1)
        raise InputError(
            world / "annotations" / "instances_train.json",
            f"{', '.join(shared)} end in the same word; the grounding, text-context and reading "
            "options need one word per category",
            field="categories",
        )

    info_stages = {}
    # stage 0: vision tower (or another model's, as LLaVA starts from CLIP's)
    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    if tower is not None:
        info_stages["vision"] = load_tower(model, tower)
        log(f"vision tower from {tower}")
    else:
        info_stages["vision"] = train_tower(model, records, categories, grid, cfg, processor, log)
    model.model.vision_tower.requires_grad_(False)
    pixels = pixel_tensor(processor, records)  # the language stages read the train split's images
    feats = vision_features(model, pixels)
    pixels = None  # free them for the language stages
    if cfg.tune_images:  # more instruction images than the train split: fresh renders, captions as noisy
        extra, extra_pixels = fresh_images(cfg.tune_images, seed, processor, "tune", cfg.render_workers)
        feats = torch.cat([feats, vision_features(model, extra_pixels)])
        records = records + extra
        extra_pixels = None
        log(f"language stages: {len(records)} images ({cfg.tune_images} fresh renders)")

    # stage 1: language model alone on scene captions: after the chat template without the image, or plain
    if cfg.text_format == "chat":
        text_prompt = ids(format_prompt(CAPTION_QUESTION).replace("<image>", ""), special=True)
    else:
        text_prompt = [tok.bos_token_id]
    text_rows = [(text_prompt, response(t)) for t in scene_texts]

    def slot_ids(boxes, width: float, height: float) -> list[int]:  # patch_words as token ids (empty: <image>)
        words = patch_words(boxes, width, height, grid)
        return [model.config.image_token_id if w is None else word_id[w] for w in words]

    if cfg.text_context:  # a share of the rows read the scene's patch words where the image tokens go
        context_prompt = prompt(CAPTION_QUESTION)
        slots = [k for k, t in enumerate(context_prompt) if t == model.config.image_token_id]
        pick = random.Random(f"povid-pretrain-context:{seed}")
        for k, (_, boxes) in enumerate(scenes):
            if pick.random() < cfg.text_context:
                row = list(context_prompt)
                for slot, token in zip(slots, slot_ids(boxes, IMAGE_SIZE, IMAGE_SIZE)):  # world pixels
                    row[slot] = token
                text_rows[k] = (row, text_rows[k][1])
    params = _set_trainable(model, ["llm"])

    def text_loss(step):
        rows = [text_rows[rng.randrange(len(text_rows))] for _ in range(cfg.text.batch_size)]
        input_ids, mask, labels = pack(rows, tok.pad_token_id)
        return next_token_loss(lm_logits(model, input_ids, mask), labels)

    info_stages["text"] = run_stage("text", params, cfg.text, text_loss, log)

    # stages 2 and 3: image-grounded
    if cfg.grounding:
        seen = grounding_targets(patch_targets(records, categories, grid)[..., : len(categories)])
        word_ids = torch.tensor([word_id[c] for c in categories])
    if cfg.reading:  # what each patch of each train image shows, as the token the copier reads
        reads = torch.tensor([slot_ids(visible_boxes(r), r.width, r.height) for r in records])

    def batch_loss(batch: list[tuple[int, str, str]]) -> torch.Tensor:
        rows = [(prompt(q), response(a)) for _, q, a in batch]
        input_ids, mask, labels = pack(rows, tok.pad_token_id)
        image_idx = torch.tensor([i for i, _, _ in batch])
        projected = model.model.multi_modal_projector(feats[image_idx])
        hidden = lm_hidden(model, input_ids, mask, projected)
        loss = next_token_loss(model.lm_head(hidden), labels)
        if cfg.grounding:
            loss = loss + cfg.grounding * grounding_loss(model, hidden, input_ids, word_ids, seen[image_idx])
        if cfg.reading:
            loss = loss + cfg.reading * reading_loss(model, projected, reads[image_idx])
        return loss

    def caption_item():
        i = rng.randrange(len(records))
        caps = records[i].captions
        if cfg.canonical_caption and rng.random() < cfg.canonical_caption:
            return i, CAPTION_QUESTION, caps[0]
        return i, CAPTION_QUESTION, rng.choice(caps)

    params = _set_trainable(model, ["projector"])
    info_stages["align"] = run_stage(
        "align", params, cfg.align, lambda s: batch_loss([caption_item() for _ in range(cfg.align.batch_size)]), log
    )

    existence = ExistenceIndex(records, categories)

    def tune_item():
        kind = rng.choices(range(len(cfg.mix)), weights=cfg.mix)[0]
        if kind == 1 and cfg.existence_sampling == "image":
            return yes_no_by_image(records, existence, rng)
        if kind == 1:
            return yes_no_example(existence, rng, cfg.partner_negatives)
        i = rng.randrange(len(records))
        qa = (
            short_answer_example(records[i], rng)
            if kind == 2
            else mme_style_example(records[i], categories, rng)
            if kind == 3
            else None
        )
        return (i, *qa) if qa else caption_item()

    rng.seed(seed)  # the tune stage's draws restart from the seed: it can be rerun from the aligned weights alone
    params = _set_trainable(model, ["projector", "llm"])
    info_stages["tune"] = run_stage(
        "tune", params, cfg.tune, lambda s: batch_loss([tune_item() for _ in range(cfg.tune.batch_size)]), log
    )

    model.requires_grad_(True)
    model.eval()
    out = Path(out_dir)
    info = {
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "world": str(world),
        "world_hash": w_hash,
        "seed": seed,
        "config": {
            "text_scenes": cfg.text_scenes,
            "mix": list(cfg.mix),
            "canonical_caption": cfg.canonical_caption,
            "existence_sampling": cfg.existence_sampling,
            "partner_negatives": cfg.partner_negatives,
            "text_format": cfg.text_format,
            "grounding": cfg.grounding,
            "text_context": cfg.text_context,
            "reading": cfg.reading,
            "tune_images": cfg.tune_images,
            "sizes": {**DEFAULT_SIZES, **cfg.sizes},
            "threads": cfg.threads,
        },
        "parameters": n_params,
        "vocab_size": len(tok),
        "train_images": len(records),
        "stages": info_stages,
        "wall_s": round(time.time() - t_start, 1),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    with staging_dir(out, log=log) as tmp:  # a kill leaves ``out`` as it was
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        atomic_write_json(tmp / "train_info.json", info)
    log(f"saved {out} in {info['wall_s']:.0f}s")
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m povid_eval.world.pretrain``: the same options as ``povid-eval pretrain``, the same one-line
    errors (core/entry.py)."""
    parser = argparse.ArgumentParser(prog="python -m povid_eval.world.pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="data/world", help="synthetic world folder (default: data/world)")
    parser.add_argument("--out", default="models/base", help="output folder (default: models/base)")
    parser.add_argument("--seed", type=count(0), default=0)
    parser.add_argument("--threads", type=count(1), default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--tower", help="take the vision tower of this tiny base's folder (stage 0 skipped)")
    args = parser.parse_args(argv)
    command = " ".join(["python -m povid_eval.world.pretrain", *(argv if argv is not None else sys.argv[1:])])
    config = PretrainConfig(seed=args.seed, threads=args.threads)
    return run_reporting(
        lambda: pretrain(args.world, args.out, args.seed, config=config, tower=args.tower, command=command)
    )


if __name__ == "__main__":
    sys.exit(main())
