"""What the vision tower knows against what the captions say: a linear probe of the tower, on the synthetic world.

The captions' signal-detection numbers (benches/chair/grounding.py: hits H = present objects named, false alarms
F = absent co-occurring partners named, d' = z(H) - z(F)) mix two readers: the tower, which must make an object
visible in its patch features, and the language model, which must read it from them. A linear probe reads the
tower alone:

    f_{I,p}   the tower's features of image I at patch p, at the layer the projector reads (vision_feature_layer)
    s_{I,c} = max_p (w_c . f_{I,p} + b_c)        one linear readout per category; an image shows c when a patch
                                                 does (multiple-instance: no patch labels needed)
    fit       binary cross-entropy of s_{I,c} against "c is visible in I" over the world's train split (the
              images the model was tuned on), Adam, seeded
    names c   s_{I,c} > 0                        (probability 0.5)

scored on the images, present sets G_I and absent partners A_I of a CHAIR run of the model (its details.jsonl),
with the same correction as the captions' d'. The probe's d' is what a reader of the image tokens could reach with
one linear layer; the distance to the captions' d' is the language model's part in the hallucinations.

Run: ``python -m povid_eval.world.probe --model base`` (after ``povid-eval run --bench chair --model base``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from povid_eval import cards
from povid_eval.benches.chair.grounding import signal_detection
from povid_eval.benches.coco import load_split
from povid_eval.core import paths
from povid_eval.core.entry import count, run_reporting
from povid_eval.core.errors import InputError, MissingAssetError
from povid_eval.core.io import iter_jsonl


def fit_probe(features: torch.Tensor, labels: torch.Tensor, steps: int = 3000, seed: int = 0) -> torch.nn.Linear:
    """The module docstring's readout w, b from [N, patches, D] features and [N, categories] 0/1 labels."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[-1], labels.shape[-1])
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(len(features), (min(128, len(features)),), generator=g)
        loss = F.binary_cross_entropy_with_logits(head(features[idx]).amax(dim=1), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head


def probe_scores(head: torch.nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """s_{I,c}: [N, categories]."""
    with torch.no_grad():
        return head(features).amax(dim=1)


def tally(named: dict, rows: Sequence[dict]) -> dict[str, int]:
    """Hits and false alarms over CHAIR details rows (image_id, gt_objects, cooc_absent) of a reader whose named
    categories per image are ``named[image_id]``."""
    out = {"hits": 0, "present": 0, "false_alarms": 0, "absent": 0}
    for row in rows:
        said = named[str(row["image_id"])]
        out["present"] += len(row["gt_objects"])
        out["hits"] += len(set(row["gt_objects"]) & said)
        out["absent"] += len(row["cooc_absent"])
        out["false_alarms"] += len(set(row["cooc_absent"]) & said)
    return out


def summary(t: dict[str, int]) -> dict[str, float]:
    """Rates and signal-detection numbers of a tally."""
    d_prime, criterion = signal_detection(t["hits"], t["present"], t["false_alarms"], t["absent"])
    return {
        "named_present": t["hits"] / t["present"] if t["present"] else 0.0,
        "named_cooc_absent": t["false_alarms"] / t["absent"] if t["absent"] else 0.0,
        "d_prime": float(d_prime),
        "criterion": float(criterion),
    }


def read_details(path: Path) -> list[dict]:
    if not path.is_file():
        raise MissingAssetError(f"{path}: not found (score the model's captions first: povid-eval run --bench chair)")
    rows, keys = [], ("image_id", "gt_objects", "cooc_absent", "mentions")
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict) or not all(k in row for k in keys):
            raise InputError(path, f"expected a CHAIR details row ({', '.join(keys)})", line=lineno)
        rows.append(row)
    return rows


def probe(
    model_name: str, world: str | Path, results: str | Path, bench: str = "chair", steps: int = 3000, seed: int = 0
):
    """The probe's and the captions' numbers on ``bench``'s images (module docstring), as a dict."""
    from povid_eval.vlm.model import load_vlm_card
    from povid_eval.world.pretrain import pixel_tensor, vision_features

    card = cards.load_model_card(model_name)
    if card.backend != "hf":
        raise InputError(None, f"model {card.name!r} is served over an API: the probe reads a local model's tower")
    details = read_details(paths.run_folder(Path(results), card.name, bench) / "details.jsonl")
    train, categories = load_split(world, "train")
    val, _ = load_split(world, "val")
    by_id = {str(r.image_id): r for r in val}
    missing = sorted({str(r["image_id"]) for r in details} - set(by_id))
    if missing:
        raise InputError(
            None, f"{len(missing)} images of the CHAIR run are not in {world}'s val split (e.g. {missing[0]})"
        )
    if card.threads:
        torch.set_num_threads(card.threads)
    vlm = load_vlm_card(card)
    model = vlm.model.get_base_model() if hasattr(vlm.model, "get_base_model") else vlm.model  # a LoRA: its base

    def features(records) -> torch.Tensor:  # on the card's device and dtype, then fp32 on the CPU for the probe
        pixels = pixel_tensor(vlm.processor, records).to(model.device, model.dtype)
        return vision_features(model, pixels).float().cpu()

    labels = torch.tensor([[c in r.seen for c in categories] for r in train], dtype=torch.float)
    head = fit_probe(features(train), labels, steps, seed)
    images = [by_id[str(r["image_id"])] for r in details]
    scores = probe_scores(head, features(images))
    tower = {str(r.image_id): {c for c, s in zip(categories, row) if s > 0} for r, row in zip(images, scores.tolist())}
    captions = {str(r["image_id"]): {o for _, o in r["mentions"]} for r in details}
    return {
        "model": card.name,
        "images": len(details),
        "probe": {"train_images": len(train), "steps": steps, "seed": seed},
        "tower": summary(tally(tower, details)),
        "captions": summary(tally(captions, details)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m povid_eval.world.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", help="model card whose tower and CHAIR run are read (default: base)")
    parser.add_argument("--world", default=None, help="synthetic world folder (default: the project's data/world)")
    parser.add_argument("--results", default=None, help="results folder (default: the project's results/)")
    parser.add_argument("--steps", type=count(1), default=3000, help="probe fitting steps (default: 3000)")
    parser.add_argument("--seed", type=count(0), default=0)
    args = parser.parse_args(argv)

    def go():
        world = paths.from_cli(args.world, "data/world")
        out = probe(args.model, world, paths.results_root(args.results), steps=args.steps, seed=args.seed)
        print(f"{out['model']} on {out['images']} images: present named / absent partners named / d' / criterion")
        for reader in ("tower", "captions"):
            s = out[reader]
            print(
                f"  {reader:8s} {s['named_present']:.3f} / {s['named_cooc_absent']:.3f} / "
                f"{s['d_prime']:.2f} / {s['criterion']:+.2f}"
            )

    return run_reporting(go)


if __name__ == "__main__":
    sys.exit(main())
