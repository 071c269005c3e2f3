"""`povid-eval perf`: speed benchmarks (speed targets live here, never in timed tests).

Measured after each one-off load (the CHAIR run is the first, cold-cache one; the bootstrap the best of 3):
- CHAIR scoring of a captions file under both variants (target: 500 captions < 3 s);
- the cluster bootstrap: 10,000 resamples of 500 units (target: well under 1 s).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from povid_eval import coco
from povid_eval.benches import chair
from povid_eval.io import read_records
from povid_eval.report import stats

DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "chair"


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def chair_speed(captions: Path, gt_objects: Path, repeat: int = 1) -> dict[str, float]:
    start = time.perf_counter()
    gt = coco.load_gt_objects(gt_objects)
    rows = [r for _, r in read_records(captions)]
    out = {"gt_load_s": time.perf_counter() - start, "captions": len(rows)}
    for variant in chair.VARIANTS:
        start = time.perf_counter()
        chair.caption_mentions("A warm-up caption with a dog.", variant)
        out[f"{variant}_warmup_s"] = time.perf_counter() - start

        def score_all(v=variant):
            chair.aggregate([chair.score_caption(chair.normalize_image_id(r["image_id"]), r["caption"],
                                                 gt[chair.normalize_image_id(r["image_id"])], v) for r in rows])

        out[f"{variant}_score_s"] = _best(score_all, repeat)
    return out


def bootstrap_speed(n_units: int = 500, n_resamples: int = 10_000, repeat: int = 3) -> dict[str, float]:
    units = np.random.default_rng(0).integers(0, 5, size=(n_units, 8)).astype(float) + 1
    return {"bootstrap_s": _best(lambda: stats.bootstrap_intervals(units, chair.from_sums, n_resamples=n_resamples),
                                 repeat), "units": n_units, "resamples": n_resamples}


def main(captions: Path | None = None, gt_objects: Path | None = None) -> dict:
    results = {}
    captions = captions or DEFAULT_FIXTURES / "llava-1.5-7b_greedy_captions.jsonl"
    gt_objects = gt_objects or DEFAULT_FIXTURES / "coco2014_gt_objects.json.gz"
    if captions.exists() and gt_objects.exists():
        results["chair"] = chair_speed(captions, gt_objects)
    results["bootstrap"] = bootstrap_speed()
    return results
