"""COCO-format annotations: ground-truth objects per image for CHAIR (and, later, POPE and the world).

The CHAIR ground truth of an image is the set of COCO categories that (a) are annotated as instances in it,
or (b) are mentioned in any of its reference captions (same tokeniser and vocabulary as the captions being
scored), as in Rohrbach et al. 2018. Annotations are read with pycocotools; the resulting map is cached on
disk as JSON (never pickle), keyed by the variant, the vocabulary and the annotation files' size and mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from povid_eval.benches.chair import scorer as chair
from povid_eval.core.errors import InputError, MissingAssetError
from povid_eval.core.io import atomic_write_json, read_json, require_dir, require_fields, require_id, require_text
from povid_eval.core.paths import cache_dir

# How to get COCO 2014 (CHAIR and POPE read it); {root} is the bench card's data root.
FIX_IMAGES = "wget http://images.cocodataset.org/zips/val2014.zip && unzip val2014.zip -d {root}/coco/"
FIX_ANNOTATIONS = (
    "wget http://images.cocodataset.org/annotations/annotations_trainval2014.zip && "
    "unzip annotations_trainval2014.zip -d {root}/coco/"
)


def load_gt_objects(path: str | Path) -> dict[str, frozenset[str]]:
    """A ground-truth map file (json or json.gz): {image_id: [category, ...]}, bare or under 'imid_to_objects'."""
    data = read_json(path)
    if isinstance(data, dict) and "imid_to_objects" in data:
        data = data["imid_to_objects"]
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object mapping image ids to lists of object names")
    gt = {}
    for key, objects in data.items():
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            raise InputError(path, "expected a list of object names", field=f"image {key!r}")
        gt[chair.normalize_image_id(key)] = frozenset(objects)
    return gt


def annotation_files(ann_dir: Path, split: str | None = None) -> tuple[list[Path], list[Path]]:
    """instances_*.json and captions_*.json in a COCO annotations folder (e.g. instances_val2014.json);
    with ``split``, only instances_<split>.json and captions_<split>.json."""
    pattern = split or "*"
    instances = sorted(ann_dir.glob(f"instances_{pattern}.json"))
    captions = sorted(ann_dir.glob(f"captions_{pattern}.json"))
    if not instances:
        raise InputError(
            ann_dir,
            "no instances_*.json file (COCO annotations folder expected, "
            "e.g. with instances_val2014.json and captions_val2014.json)",
        )
    return instances, captions


def check_coco(path: Path, data, kind: str) -> dict:
    """A COCO annotation dict, checked for what the readers use: ``images`` (objects with an ``id``) and
    ``annotations`` (objects with an ``image_id``; instances: a ``category_id`` and ``categories``; captions: a
    ``caption`` string); an InputError names the file and the record otherwise."""
    if not isinstance(data, dict):
        raise InputError(path, f"expected a COCO {kind} file (a JSON object), got {type(data).__name__}")
    needed = ("images", "annotations") + (("categories",) if kind == "instances" else ())
    for key in needed:
        if not isinstance(data.get(key), list):
            raise InputError(path, f"expected a list of {key}", field=key)
    for i, im in enumerate(data["images"]):
        require_fields(path, im, ("id",), field=f"images[{i}]")
        require_id(path, im["id"], "id", field=f"images[{i}]")
    for i, cat in enumerate(data.get("categories", [])):
        require_fields(path, cat, ("id", "name"), field=f"categories[{i}]")
        require_id(path, cat["id"], "id", field=f"categories[{i}]")
    fields = ("image_id", "category_id") if kind == "instances" else ("image_id", "caption")
    for i, ann in enumerate(data["annotations"]):
        require_fields(path, ann, fields, field=f"annotations[{i}]")
        require_id(path, ann["image_id"], "image_id", field=f"annotations[{i}]")
        if kind == "instances":
            require_id(path, ann["category_id"], "category_id", field=f"annotations[{i}]")
        else:
            require_text(path, ann["caption"], "caption", field=f"annotations[{i}]")
    return data


def _load_coco(path: Path, kind: str | None = None):
    """pycocotools' COCO object of a checked annotation file (read by read_json: located errors; pycocotools'
    progress lines go nowhere, so stdout stays clean for --json and stderr for errors). ``kind``: instances or
    captions (default: from the file name, captions_* or instances_*)."""
    from pycocotools.coco import COCO

    kind = kind or ("captions" if Path(path).name.startswith("captions") else "instances")
    data = check_coco(path, read_json(path), kind)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def gt_objects_from_annotations(
    instances: list[Path], captions: list[Path], variant: str, vocab: chair.Vocabulary | None = None
) -> dict[str, frozenset[str]]:
    """Build the CHAIR ground truth from COCO instance and caption files (see module docstring)."""
    vocab = vocab or chair.load_vocabulary()
    gt: dict[str, set[str]] = {}
    for path in instances:
        coco = _load_coco(path)
        names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        for image_id in coco.getImgIds():
            gt.setdefault(str(image_id), set())
        for ann in coco.dataset.get("annotations", []):
            name = names.get(ann["category_id"])
            if name not in vocab.synonyms:
                raise InputError(
                    path, f"category {name!r} is not in the CHAIR vocabulary", field=f"annotation {ann.get('id')}"
                )
            gt.setdefault(str(ann["image_id"]), set()).add(vocab.synonyms[name])
    for path in captions:
        coco = _load_coco(path)
        for ann in coco.dataset.get("annotations", []):
            key = str(ann["image_id"])
            if key in gt:
                gt[key].update(chair.caption_mentions(ann["caption"], variant, vocab).objects)
    return {k: frozenset(v) for k, v in gt.items()}


def _files_key(paths: list[Path], variant: str) -> str:
    h = hashlib.sha256(f"chair-gt-v1|{variant}|".encode())
    h.update(chair.VOCAB_FILE.read_bytes())
    for p in paths:
        st = p.stat()
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _read_gt_cache(cache: Path) -> dict[str, frozenset[str]]:
    try:
        data = read_json(cache)
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(o, str) for o in v) for v in data.values()
        ):
            raise InputError(cache, "not a map of image ids to object names")
    except InputError as e:
        raise InputError(
            cache, f"corrupt CHAIR ground-truth cache ({e.message}): delete it, and it is rebuilt from the annotations"
        ) from None
    return {k: frozenset(v) for k, v in data.items()}


def gt_objects_from_coco(ann_dir: str | Path, variant: str, split: str | None = None) -> dict[str, frozenset[str]]:
    """CHAIR ground truth of a COCO annotations folder (or one split of it), cached as JSON in cache_dir()."""
    ann_dir = require_dir(ann_dir, "COCO annotations folder")
    instances, captions = annotation_files(ann_dir, split)
    cache = cache_dir() / f"chair_gt_{_files_key(instances + captions, variant)}.json"
    if cache.is_file():
        return _read_gt_cache(cache)
    gt = gt_objects_from_annotations(instances, captions, variant)
    atomic_write_json(cache, {k: sorted(v) for k, v in gt.items()})
    return gt


# ------------------------------------------------------------------ a split's images with their annotations


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    width: int
    height: int
    counts: dict[str, int]  # category -> number of instances
    boxes: list[tuple[str, tuple[float, ...]]]  # (category, COCO bbox x, y, w, h)
    captions: list[str]
    scene: str = ""
    colours: dict[str, str] = field(default_factory=dict)  # category -> colour (when annotated)
    seen: set[str] = field(default_factory=set)  # categories with an instance not 'hidden'
    # category -> np.packbits of its visible pixels (height x width), where known (freshly rendered world images)
    masks: dict[str, Any] = field(default_factory=dict)


def load_split(world_dir: str | Path, split: str = "train") -> tuple[list[ImageRecord], list[str]]:
    """Images of a split with their instances and captions, and all category names, from a folder laid out as
    annotations/instances_<split>.json, annotations/captions_<split>.json (COCO format) and images/<split>/
    (the synthetic world's layout). The world's extra annotation fields (colour, visibility, scene) are read
    where present."""
    world = Path(world_dir)
    inst_path = world / "annotations" / f"instances_{split}.json"
    cap_path = world / "annotations" / f"captions_{split}.json"
    for p in (inst_path, cap_path):
        if not p.is_file():
            raise MissingAssetError(f"{p}: not found (build the world first: povid-eval world build --out {world})")
    records, categories = image_records(read_json(inst_path), world / "images" / split)
    by_id = {r.image_id: r for r in records}
    for a in read_json(cap_path)["annotations"]:
        by_id[a["image_id"]].captions.append(a["caption"].strip())
    return records, categories


def image_records(instances: dict, image_dir: Path) -> tuple[list[ImageRecord], list[str]]:
    """The images of a COCO instances dict (sorted by id, no captions yet) with their instances, and all
    category names (by id). The world's extra annotation fields are read where present: colour, and
    visibility (a category is ``seen`` when one of its instances is not 'hidden')."""
    names = {c["id"]: c["name"] for c in instances["categories"]}
    records = {
        im["id"]: ImageRecord(
            im["id"],
            image_dir / im["file_name"],
            im["width"],
            im["height"],
            {},
            [],
            [],
            im.get("scene", ""),
        )
        for im in instances["images"]
    }
    for a in instances["annotations"]:
        r, name = records[a["image_id"]], names[a["category_id"]]
        r.counts[name] = r.counts.get(name, 0) + 1
        r.boxes.append((name, tuple(a["bbox"])))
        if "colour" in a:
            r.colours[name] = a["colour"]
        if a.get("visibility") != "hidden":
            r.seen.add(name)
    return [records[k] for k in sorted(records)], [names[k] for k in sorted(names)]


# ------------------------------------------------------------------ object statistics (POPE, the world)


def load_instances(source: str | Path | dict) -> dict:
    """A COCO instances dict, given as the dict itself or as a .json / .json.gz file."""
    if isinstance(source, dict):
        return source
    data = read_json(source)
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise InputError(source, "not a COCO instances file (images, annotations and categories expected)")
    return data


def image_objects(instances: str | Path | dict, key: str = "file_name") -> dict[str, list[str]]:
    """{image (its ``key`` field, e.g. file_name): [category name, ...]}: each image's distinct categories in
    annotation order (images without annotations included, with an empty list)."""
    data = load_instances(instances)
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_id = {im["id"]: str(im[key]) for im in data["images"]}
    out: dict[str, list[str]] = {by_id[i]: [] for i in by_id}
    for ann in data["annotations"]:
        objs = out[by_id[ann["image_id"]]]
        name = names[ann["category_id"]]
        if name not in objs:
            objs.append(name)
    return out


def frequency_from_objects(objects: dict[str, list[str]]) -> dict[str, int]:
    """Number of images that contain each category."""
    freq: dict[str, int] = {}
    for objs in objects.values():
        for name in set(objs):
            freq[name] = freq.get(name, 0) + 1
    return dict(sorted(freq.items()))


def cooccurrence_from_objects(objects: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """cooc[a][b] = number of images that contain both a and b (a != b); symmetric."""
    cooc: dict[str, dict[str, int]] = {}
    for objs in objects.values():
        present = sorted(set(objs))
        for a in present:
            row = cooc.setdefault(a, {})
            for b in present:
                if a != b:
                    row[b] = row.get(b, 0) + 1
    return {a: dict(sorted(row.items())) for a, row in sorted(cooc.items())}


def category_frequency(instances: str | Path | dict) -> dict[str, int]:
    """Images containing each category, from a COCO instances dict or file."""
    return frequency_from_objects(image_objects(instances))


def cooccurrence(instances: str | Path | dict) -> dict[str, dict[str, int]]:
    """Category co-occurrence (images containing both), from a COCO instances dict or file."""
    return cooccurrence_from_objects(image_objects(instances))
