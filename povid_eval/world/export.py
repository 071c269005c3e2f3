"""Writing the world in the real benchmark file formats (COCO instances/captions, POPE, MME eval_tool, MMHal).

All functions here turn WorldImages into plain dicts/lines; ``write_*`` put bytes under a root folder.
JSON is written with sorted keys and fixed separators, so equal content gives equal bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from povid_eval.benches import coco
from povid_eval.benches.pope import scorer as pope
from povid_eval.world import text
from povid_eval.world.catalog import CATEGORIES, CATEGORY_BY_NAME, IMAGE_SIZE
from povid_eval.world.generate import WorldImage

FORMAT_VERSION = 2  # 2: canonical captions in category order, annotators' slips at the end
INFO = {"description": "povid-eval synthetic world", "version": str(FORMAT_VERSION), "contributor": "povid-eval"}
POPE_OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}  # LLaVA's question-id layout


def dumps(obj, indent: int | None = None) -> str:
    """JSON text with sorted keys: compact, or indented with ``indent``."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(obj, sort_keys=True, indent=indent, separators=separators) + "\n"


def dumps_lines(rows) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def write(root: Path, rel: str, data: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def coco_categories() -> list[dict]:
    return [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CATEGORIES]


def _image_entry(im: WorldImage) -> dict:
    return {
        "id": im.image_id,
        "file_name": im.file_name,
        "width": IMAGE_SIZE,
        "height": IMAGE_SIZE,
        "scene": im.scene,
        "missing": list(im.missing),
    }


def instances_json(images: list[WorldImage], first_ann_id: int) -> dict:
    """COCO instances (pycocotools-readable); annotations carry extra keys colour, visibility,
    visible_fraction (share not covered by other objects) and position (of the instance's box)."""
    anns = []
    for im in images:
        for inst, vis, frac in zip(im.instances, im.visibility, im.visible_fraction):
            x, y, w, h = inst.bbox
            anns.append(
                {
                    "id": first_ann_id + len(anns),
                    "image_id": im.image_id,
                    "category_id": CATEGORY_BY_NAME[inst.category].id,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "colour": inst.colour,
                    "visibility": vis,
                    "visible_fraction": frac,
                    "position": text.position_of(x + w / 2, y + h / 2),
                }
            )
    return {
        "info": INFO,
        "licenses": [],
        "images": [_image_entry(im) for im in images],
        "annotations": anns,
        "categories": coco_categories(),
    }


def captions_json(images: list[WorldImage], captions: dict[int, list[str]], first_id: int) -> dict:
    anns = [
        {"id": first_id + k, "image_id": image_id, "caption": c}
        for k, (image_id, c) in enumerate((im.image_id, c) for im in images for c in captions[im.image_id])
    ]
    return {"info": INFO, "licenses": [], "images": [_image_entry(im) for im in images], "annotations": anns}


def pope_files(instances: dict, n_images: int, seed: int) -> dict[str, list[dict]]:
    """{split: POPE records} built from the val instances with the project's POPE builder."""
    objects = coco.image_objects(instances)
    freq, cooc = coco.frequency_from_objects(objects), coco.cooccurrence_from_objects(objects)
    return {s: pope.build_pope_questions(objects, n_images, seed, s, freq, cooc) for s in pope.STRATEGIES}


def llava_pope_questions(splits: dict[str, list[dict]]) -> list[dict]:
    """All splits in LLaVA's question layout (adversarial, random, popular; ids offset per split)."""
    return [
        {
            "question_id": POPE_OFFSETS[s] + r["question_id"],
            "image": r["image"],
            "text": r["text"] + text.LLAVA_SUFFIX,
            "category": s,
        }
        for s in POPE_OFFSETS
        for r in splits[s]
    ]


def tree_hash(root: Path, exclude: tuple[str, ...] = ("manifest.json", ".povid-eval.json")) -> tuple[str, int]:
    """sha256 over every file under root (sorted relative posix paths, each path then its bytes), but the
    manifest and the tool's folder marker."""
    h = hashlib.sha256()
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    paths = [p for p in paths if p not in exclude]
    for rel in paths:
        data = (root / rel).read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest(), len(paths)
