"""Where a model's CHAIR hallucinations come from, on the synthetic world (whose annotations record each
image's scene, the core objects a "break" image lacks, and each instance's visibility).

For every hallucinated mention (CHAIR details) of image I with scene S:
    prior        the object is a usual partner of S (core or extra) and at least one other core object of
                 S is clearly visible in I: the language prior overrode visible evidence (how real VLMs
                 hallucinate)
    break        the object is a core object of S that I deliberately lacks (a subset of prior)
    other        anything else (an object of another scene, or a scene with no clear partner)
Shares are over all hallucinated mentions.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from povid_eval.core.io import iter_jsonl, read_json


def scene_partners(manifest: Path) -> dict[str, tuple[set[str], set[str]]]:
    """scene -> (core objects, core and extra objects), from the world's manifest.json (``scenes``)."""
    scenes = read_json(manifest).get("scenes", {})
    return {name: (set(s["core"]), set(s["core"]) | set(s["extras"])) for name, s in scenes.items()}


def prior_share(details: Path, instances: Path, manifest: Path) -> dict[str, float | int]:
    """Counts and shares of prior / break hallucinations (see module docstring); ``manifest`` is the world's
    manifest.json, which lists each scene's core and extra objects."""
    data = read_json(instances)
    names = {c["id"]: c["name"] for c in data["categories"]}
    images = {str(im["id"]): im for im in data["images"]}
    clear: dict[str, set[str]] = defaultdict(set)
    for ann in data["annotations"]:
        if ann.get("visibility") == "clear":
            clear[str(ann["image_id"])].add(names[ann["category_id"]])
    partners = scene_partners(manifest)
    counts = {"hallucinated": 0, "prior": 0, "break": 0}
    for _, row in iter_jsonl(details):
        image = images.get(str(row["image_id"]), {})
        core, usual = partners.get(image.get("scene"), (set(), set()))
        for _, obj in row["hallucinated"]:
            counts["hallucinated"] += 1
            if obj in usual and (clear[str(row["image_id"])] & core) - {obj}:
                counts["prior"] += 1
                counts["break"] += obj in image.get("missing", [])
    n = counts["hallucinated"]
    return {
        **counts,
        "prior_share": counts["prior"] / n if n else 0.0,
        "break_share": counts["break"] / n if n else 0.0,
    }
