"""The synthetic world: 64 x 64 PIL-drawn scenes of real COCO categories with strong object co-occurrence,
exported in the real benchmark formats so that the project's loaders and scorers read it unchanged.

    build_world(out, seed)  ->  out/
        images/{train,val}/<image_id:012d>.png      train ids 1.., val ids 1,000,001..
        annotations/instances_{train,val}.json      COCO instances (+ colour, visibility, position per annotation;
                                                    scene and missing core categories per image)
        annotations/captions_{train,val}.json       COCO captions, 5 per image
        pope/coco_pope_{random,popular,adversarial}.json, pope/llava_pope_test.jsonl   (val split)
        mme/{existence,count,position,color}.txt, mme/llava_mme.jsonl, mme/images/<subtask>/*.png
        mmhal/template.json, mmhal/images/*.png
        vocab.txt                                   every word the world's texts can contain
        manifest.json                               seed, counts, categories, scenes, rates, sha256 of the files

The content is a pure function of the seed (PNG bytes included). The build writes into a hidden temporary
folder beside ``out`` and renames it into place, so a killed build leaves ``out`` as it was.
Why models hallucinate here: see catalog.py (co-occurrence, breaks) and generate.py (visibility).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from povid_eval.benches.mmhal import judges
from povid_eval.benches.mmhal.scorer import TYPES as mmhal_types
from povid_eval.core import paths
from povid_eval.core.errors import MissingAssetError, PovidError
from povid_eval.core.io import atomic_write_json, read_json, staging_dir
from povid_eval.world import benchsets, export, text
from povid_eval.world.catalog import RATES, SCENES
from povid_eval.world.generate import WorldImage, captions, image_rng, make_image
from povid_eval.world.judge import RuleJudge

__all__ = ["build_world", "ensure", "load_manifest", "summary", "DEFAULT_OUT", "SUMMARY_FILE"]

ROOT = paths.ROOT
DEFAULT_OUT = Path("data/world")
SUMMARY_FILE = ROOT / "benchmarks" / "world_manifest.json"
VAL_FIRST_ID = 1_000_000
MME_FIRST_ID = 2_000_000
MMHAL_FIRST_ID = 3_000_000
N_MMHAL = 96
MAX_TRIES = 500


def build_world(
    out: Path,
    seed: int = 0,
    n_train: int = 8000,
    n_val: int = 500,
    *,
    n_pope_images: int = 500,
    n_mme_images: int = 40,
    summary_path: Path | None = None,
) -> dict:
    """Build the world into ``out`` and return its manifest; ``summary_path`` also gets the small committed
    summary (seed, counts, hash). ``out`` must be new, empty, or a world built before (it carries the tool's
    marker, paths.MARKER): anything else is refused, never replaced."""
    out = Path(out).resolve()
    paths.require_ours(out, "world")
    with staging_dir(out, log=print) as tmp:
        manifest = _build(tmp, seed, n_train, n_val, n_pope_images, n_mme_images)
        paths.mark(tmp, "world")
    if summary_path is not None:
        atomic_write_json(summary_path, summary(manifest))
    return manifest


def load_manifest(out: Path = DEFAULT_OUT, verify: bool = False) -> dict:
    """The manifest of a built world; with ``verify``, check the files against its sha256."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise MissingAssetError(f"no synthetic world at {out}: build it with `python -m povid_eval.world --out {out}`")
    manifest = read_json(path)
    if verify:
        digest, _ = export.tree_hash(Path(out))
        if digest != manifest["sha256"]:
            raise PovidError(
                f"{out}: files differ from the manifest (sha256 {digest[:12]} != "
                f"{manifest['sha256'][:12]}): rebuild the world"
            )
    return manifest


def summary(manifest: dict) -> dict:
    return {k: manifest[k] for k in ("format_version", "seed", "counts", "sha256", "files")}


def _build(root: Path, seed: int, n_train: int, n_val: int, n_pope_images: int, n_mme_images: int) -> dict:
    counts: dict = {}
    all_texts: list[str] = []
    stats: dict = {}
    ann_id, cap_id = 1, 1
    val_instances = None
    for split, first, n in (("train", 0, n_train), ("val", VAL_FIRST_ID, n_val)):
        images = [make_image(seed, "coco", first + k) for k in range(1, n + 1)]
        for im in images:
            export.write(root, f"images/{split}/{im.file_name}", im.png)
        noise = RATES["caption_noise"] if split == "train" else 0.0  # val references are CHAIR's ground truth
        caps = {im.image_id: captions(im, seed, noise=noise) for im in images}
        instances = export.instances_json(images, ann_id)
        ann_id += len(instances["annotations"])
        export.write(root, f"annotations/instances_{split}.json", export.dumps(instances))
        caption_file = export.captions_json(images, caps, cap_id)
        export.write(root, f"annotations/captions_{split}.json", export.dumps(caption_file))
        cap_id += 5 * len(images)
        all_texts += [c for cs in caps.values() for c in cs]
        counts[split] = {"images": n, "annotations": len(instances["annotations"]), "captions": 5 * n}
        stats[split] = _stats(images)
        if split == "val":
            val_instances = instances

    pope_splits = export.pope_files(val_instances, n_pope_images, seed)
    for s, rows in pope_splits.items():
        export.write(root, f"pope/coco_pope_{s}.json", export.dumps_lines(rows))
    llava = export.llava_pope_questions(pope_splits)
    export.write(root, "pope/llava_pope_test.jsonl", export.dumps_lines(llava))
    all_texts += [r["text"] for r in llava]
    counts["pope"] = {s: len(rows) for s, rows in sorted(pope_splits.items())}

    counts["mme"], mme_questions = {}, []
    for k, subtask in enumerate(benchsets.MME_SUBTASKS):
        lines, questions = _mme_subtask(root, seed, subtask, MME_FIRST_ID + 100_000 * k, n_mme_images)
        export.write(root, f"mme/{subtask}.txt", "".join(lines))
        counts["mme"][subtask] = len(lines) // 2
        mme_questions += questions
    export.write(root, "mme/llava_mme.jsonl", export.dumps_lines(mme_questions))
    all_texts += [q["text"] for q in mme_questions]

    records = [_mmhal_record(root, seed, i) for i in range(N_MMHAL)]
    export.write(root, "mmhal/template.json", export.dumps(records, indent=1))
    all_texts += [r[k] for r in records for k in ("question", "gt_answer")]
    all_texts += [c for r in records for c in r["image_content"]]
    counts["mmhal"] = len(records)

    vocab = text.vocabulary()
    unknown = sorted({w for t in all_texts for w in text.tokenize(t)} - set(vocab))
    if unknown:
        raise RuntimeError(f"world texts use words outside text.vocabulary(): {unknown[:20]}")
    export.write(root, "vocab.txt", "\n".join(vocab) + "\n")

    digest, n_files = export.tree_hash(root)
    manifest = {
        "format_version": export.FORMAT_VERSION,
        "seed": seed,
        "counts": counts,
        "sha256": digest,
        "files": n_files,
        "categories": export.coco_categories(),
        "scenes": {s.name: {"core": list(s.core), "extras": list(s.extras)} for s in SCENES},
        "rates": RATES,
        "stats": stats,
        "vocabulary_size": len(vocab),
    }
    export.write(root, "manifest.json", export.dumps(manifest, indent=1))
    return manifest


def _stats(images: list[WorldImage]) -> dict:
    labels = Counter(v for im in images for v in im.visibility)
    n = sum(labels.values())
    return {
        "visibility": {k: round(labels[k] / n, 4) for k in sorted(labels)},
        "objects_per_image": round(sum(len(im.objects) for im in images) / len(images), 3),
        "instances_per_image": round(n / len(images), 3),
        "break_images": round(sum(bool(im.missing) for im in images) / len(images), 4),
    }


def _mme_subtask(root: Path, seed: int, subtask: str, first_id: int, n_images: int) -> tuple[list[str], list[dict]]:
    lines, questions, image_id = [], [], first_id
    while len(lines) < 2 * n_images:
        image_id += 1
        if image_id - first_id > MAX_TRIES * n_images:
            raise RuntimeError(f"MME {subtask}: could not find {n_images} suitable images")
        im = make_image(seed, f"mme-{subtask}", image_id)
        pair = benchsets.mme_pair(subtask, im, image_rng(seed, f"mme-question-{subtask}", image_id))
        if pair is None:
            continue
        export.write(root, f"mme/images/{subtask}/{im.file_name}", im.png)
        for q, answer in zip(pair, ("Yes", "No")):
            lines.append(f"{im.file_name}\t{q}\t{answer}\n")
            questions.append(
                {
                    "question_id": f"{subtask}/{im.file_name}",
                    "image": f"{subtask}/{im.file_name}",
                    "text": q.removesuffix(text.MME_SUFFIX) + text.LLAVA_SUFFIX,
                    "category": subtask,
                }
            )
    return lines, questions


def _mmhal_record(root: Path, seed: int, index: int) -> dict:
    """The index-th MMHal record, on the first suitable image of its stream. The image's scene holds a category
    of the record's topic: for an adversarial record a core category of the topic is dropped when there is one,
    for the others an extra category of the topic is forced in when there is one."""
    topic = benchsets.TOPICS[index // 8]
    pool = set(benchsets.topic_categories(topic))
    scenes = [s for s in SCENES if pool & set(s.core + s.extras)]
    for attempt in range(MAX_TRIES):
        image_id = MMHAL_FIRST_ID + 1000 * index + attempt
        rng = image_rng(seed, "mmhal-question", image_id)
        scene = rng.choice(scenes)
        drop, include, extras = (), (), sorted(pool & set(scene.extras))
        if mmhal_types[index % 8] == "adversarial":
            drop = (rng.choice(sorted(pool & set(scene.core))),) if pool & set(scene.core) else ()
        elif extras:
            include = (rng.choice(extras),)
        im = make_image(seed, "mmhal", image_id, scene=scene, drop=drop, include=include)
        record = benchsets.mmhal_record(index, im, f"mmhal/images/{im.file_name}", rng)
        if record is not None:
            export.write(root, f"mmhal/images/{im.file_name}", im.png)
            return record
    raise RuntimeError(f"MMHal record {index}: no suitable image in {MAX_TRIES} tries")


def ensure(root: Path) -> None:
    """Build the world in ``root`` where it is missing (under a minute), or rebuild it where an older
    povid-eval built it in another format (export.FORMAT_VERSION: what the captions say changed, and the
    committed base was trained on the new ones), with the seed of the committed summary; warn if its hash
    differs from the committed one. ``root`` must be new, empty or a world built before (build_world refuses
    anything else)."""

    manifest_file = Path(root) / "manifest.json"
    if manifest_file.is_file():
        found = read_json(manifest_file).get("format_version")
        if found == export.FORMAT_VERSION:
            return
        why = f"it is format {found}, this povid-eval writes format {export.FORMAT_VERSION}"
    else:
        paths.require_ours(Path(root), f"world folder {root} (no world manifest.json in it)")
        why = "once, under a minute"
    committed = read_json(SUMMARY_FILE) if SUMMARY_FILE.is_file() else {}
    print(f"povid-eval: building the synthetic world in {root} ({why})", file=sys.stderr)
    manifest = build_world(root, seed=committed.get("seed", 0))
    if committed and manifest["sha256"] != committed.get("sha256"):
        print(
            f"povid-eval: warning: the world built here differs from {SUMMARY_FILE.name} (sha256 "
            f"{manifest['sha256'][:12]} != {committed['sha256'][:12]}); package versions may render differently",
            file=sys.stderr,
        )


judges.register("rule", RuleJudge)  # the world's MMHal judge (world/judge.py) joins the MMHal judges
