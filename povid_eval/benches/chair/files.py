"""CHAIR's inputs: the captions people already have (json list or jsonl of {image_id, caption}) scored against
a ground-truth map or COCO annotations, and the items of a CHAIR bench card (an image list, a drawn sample,
or every image of the annotations)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from povid_eval.benches import coco
from povid_eval.benches.base import Item
from povid_eval.benches.chair import grounding
from povid_eval.benches.chair import scorer as chair
from povid_eval.benches.common import as_floats, attach_units, name, records, result, where
from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_jsonl, read_json, read_lines, require_fields, require_id, require_text
from povid_eval.core.paths import project


def chair_from_files(
    captions,
    *,
    gt_objects: str | Path | None = None,
    coco_annotations: str | Path | None = None,
    variant: str = chair.DEFAULT_VARIANT,
    image_id_key: str = "image_id",
    caption_key: str = "caption",
    save_details: str | Path | None = None,
    split: str | None = None,
    with_units: bool = False,
    with_grounding: bool = False,
) -> dict:
    """CHAIR of a captions file (json list or jsonl; or (line, record) pairs) against a ground-truth map or
    COCO annotations (all instances_*/captions_* files of the folder, or those of one split). With
    ``with_grounding``: the per-object grounding metrics too (grounding.py; co-occurrence counts over every image
    of the ground truth), and each details row's absent co-occurring objects."""
    if (gt_objects is None) == (coco_annotations is None):
        raise InputError(None, "give exactly one of --gt-objects FILE or --coco-annotations DIR")
    chair.check_variant(variant)
    rows = records(captions, listing=True)
    if gt_objects is not None:
        gt, gt_source = coco.load_gt_objects(gt_objects), gt_objects
    else:
        gt, gt_source = coco.gt_objects_from_coco(coco_annotations, variant, split), coco_annotations
    scores, texts = [], []
    for i, (line, rec) in enumerate(rows):
        at = where(line, i)
        require_fields(name(captions), rec, (image_id_key, caption_key), **at)
        caption = require_text(name(captions), rec[caption_key], caption_key, **at)
        image_id = chair.normalize_image_id(require_id(name(captions), rec[image_id_key], image_id_key, **at))
        if image_id not in gt:
            raise InputError(name(captions), f"image_id {rec[image_id_key]!r} has no ground truth in {gt_source}", **at)
        scores.append(chair.score_caption(image_id, caption, gt[image_id], variant))
        texts.append(caption)
    if not scores:
        raise InputError(name(captions), "no captions")
    matrix, from_sums = chair.unit_matrix(scores), chair.from_sums
    details = [s.as_dict(t) for s, t in zip(scores, texts)]
    if with_grounding:
        cooc = grounding.Cooccurrence(gt)
        absent = [cooc.absent_cooccurring(s.gt_objects) for s in scores]
        extra = [grounding.unit_row(s.mentions.objects, s.hallucinated, a) for s, a in zip(scores, absent)]
        matrix = np.hstack([matrix, np.array(extra, dtype=float).reshape(-1, len(grounding.UNIT_COLUMNS))])
        from_sums = grounding.chair_and_grounding
        details = [d | {"cooc_absent": a} for d, a in zip(details, absent)]
    if save_details is not None:
        atomic_write_jsonl(save_details, details)
    out = result("chair", variant, len(scores), as_floats(from_sums(matrix.sum(axis=0))))
    return attach_units(out, (matrix, from_sums)) if with_units else out


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


def image_ids(card, all_ids: list[int]) -> list[int]:
    """The CHAIR image list: the card's ``image_ids`` file (kept in file order), or ``sample`` ids drawn with
    ``sample_seed`` from the annotations' sorted ids, or all of them (the synthetic world's val split)."""
    options = card.options
    if options.image_ids:
        path = project(options.image_ids)
        if not path.is_file():
            raise InputError(path, f"image-id list of bench {card.name} not found")
        ids, known = read_image_ids(path), set(all_ids)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise InputError(
                path, f"{len(unknown)} image ids are not in {card.data_path('instances').name} (e.g. {unknown[0]})"
            )
        return list(dict.fromkeys(ids))
    if options.sample:
        return random.Random(options.sample_seed).sample(sorted(all_ids), min(options.sample, len(all_ids)))
    return sorted(all_ids)


def items(card) -> list[Item]:
    """One caption prompt per image of the card's list."""
    path = card.data_path("instances")
    data = coco.check_coco(path, read_json(path), "instances")
    folder = card.data_path("images")
    by_id = {}
    for i, im in enumerate(data["images"]):
        require_fields(path, im, ("file_name",), field=f"images[{i}]")
        by_id[im["id"]] = im
    return [
        Item(str(i), folder / by_id[i]["file_name"], card.prompt, {"question_id": i, "image_id": i})
        for i in image_ids(card, list(by_id))
    ]
