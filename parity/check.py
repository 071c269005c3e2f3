"""`make parity`: povid-eval against LLaVA's own released code, both run here on tiny random checkpoints.

    .venv/bin/python parity/check.py [--work build/parity] [--max-new-tokens 16]

Steps (the reference side runs in .venv-ref, made by parity/setup_ref.sh; nothing of LLaVA is copied here):

1. parity/build_checkpoints.py (.venv-ref): a tiny LLaVA-1.5 family written by LLaVA's own code (base; a LoRA
   run + non_lora_trainables.bin over it; the merge of the two by LLaVA's merge path, fp16 as the real script
   writes it) and the llava-hf folder written by transformers' own conversion script from the base.
2. Images: IMAGES below, every shape the preprocessing can treat differently.
3. Prompts: PROMPTS below, every bench card of benchmarks/real and benchmarks/povid-paper, each question as the
   bench's data file has it (for ours) and as LLaVA's question file has it (for LLaVA), in LLaVA's conv mode.
4. parity/reference_side.py (.venv-ref): LLaVA's builder, process_images, conv_templates,
   tokenizer_image_token and generate, batch size 1, fp32, greedy.
5. parity/ours.py (.venv): the same items through povid-eval's model cards, one per format: the original
   LLaVA layout (base, LoRA over base, merged) and llava-hf, whose reference is LLaVA's code on the base it was
   converted from.
6. The table (stdout and WORK/parity.md, details in WORK/parity.json): per format, pixel max |diff|, prompt
   strings equal, prompt ids equal, last-token logits max |diff| (over the original vocabulary), greedy
   outputs equal. Exit 1 on any difference that is not on parity/allow.toml's list, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REF_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
LOGITS_TOL = 1e-4  # fp32, max |diff| of the last position's logits

# (name, mode, width, height, file format): square (none, one already 336), wide, tall, tiny, grayscale, large,
# a palette image, an RGBA image with transparency, a panorama strip
IMAGES = (
    ("square-336", "RGB", 336, 336, "PNG"),
    ("square-500", "RGB", 500, 500, "JPEG"),
    ("wide", "RGB", 640, 360, "JPEG"),
    ("tall", "RGB", 300, 520, "PNG"),
    ("tiny", "RGB", 12, 9, "PNG"),
    ("grayscale", "L", 240, 180, "PNG"),
    ("large", "RGB", 2400, 1600, "JPEG"),
    ("palette", "P", 333, 250, "PNG"),
    ("rgba", "RGBA", 200, 130, "PNG"),
    ("panorama", "RGB", 900, 40, "JPEG"),
)

# (bench card, the question in the bench's data file, the question in LLaVA's question file, LLaVA conv mode).
# CHAIR's question is its card's prompt. POPE: our questions file is LLaVA's llava_pope_test.jsonl. MME: the
# release's question ends in " Please answer yes or no."; LLaVA's llava_mme.jsonl replaces that with its short
# answer prompt. MMHal-Bench: the template's question, asked by LLaVA-RLHF's script with conv mode llava_v1.
_SHORT = "\nAnswer the question using a single word or phrase."
PROMPTS = (
    ("chair-coco", None, "Describe this image.", "vicuna_v1"),
    ("chair-coco-povid", None, "Describe this image.", "vicuna_v1"),
    (
        "pope-coco",
        "Is there a dining table in the image?" + _SHORT,
        "Is there a dining table in the image?" + _SHORT,
        "vicuna_v1",
    ),
    (
        "pope-coco",
        "Is there a traffic light in the image?" + _SHORT,
        "Is there a traffic light in the image?" + _SHORT,
        "vicuna_v1",
    ),
    (
        "mme-release",
        "Is there a train in this image? Please answer yes or no.",
        "Is there a train in this image?" + _SHORT,
        "vicuna_v1",
    ),
    (
        "mme-release",
        'Is the word in the logo "Coca-Cola"? Please answer yes or no.',
        'Is the word in the logo "Coca-Cola"?' + _SHORT,
        "vicuna_v1",
    ),
    (
        "mmhal-bench",
        "What is the color of the car on the left?",
        "What is the color of the car on the left?",
        "llava_v1",
    ),
    ("mmhal-bench", "How many 2-wheeled vehicles are there?", "How many 2-wheeled vehicles are there?", "llava_v1"),
)

FORMATS = (  # (name, model card fields, the reference checkpoint it is compared with)
    ("llava base", {"path": "ckpt/llava-tiny-base", "format": "llava"}, "base"),
    ("llava lora", {"path": "ckpt/llava-tiny-lora", "model_base": "ckpt/llava-tiny-base", "format": "llava"}, "lora"),
    ("llava merged", {"path": "ckpt/llava-tiny-merged", "format": "llava"}, "merged"),
    ("llava-hf", {"path": "ckpt/llava-tiny-hf", "format": "hf"}, "base"),
)
REFERENCES = {  # reference checkpoint -> (model_path, model_base) under WORK
    "base": ("ckpt/llava-tiny-base", None),
    "lora": ("ckpt/llava-tiny-lora", "ckpt/llava-tiny-base"),
    "merged": ("ckpt/llava-tiny-merged", None),
}


def make_images(folder: Path) -> list[Path]:
    """IMAGES as files: smooth gradients plus seeded noise (bicubic resizing sees edges and texture)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name, mode, w, h, fmt in IMAGES:
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
        rgb = (rgb + rng.integers(-40, 41, rgb.shape)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(rgb, "RGB")
        if mode == "RGBA":
            alpha = ((x // 16 + y // 16) % 2 * 255).astype(np.uint8)
            image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
        elif mode == "P":
            image = image.quantize(64)
        elif mode != "RGB":
            image = image.convert(mode)
        path = folder / f"{name}.{fmt.lower().replace('jpeg', 'jpg')}"
        image.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


def write_cards(work: Path) -> list[dict]:
    """One model card per format under WORK/models (fp32 on the CPU, LLaVA-1.5's vicuna_v1, padding)."""
    folder = work / "models"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, fields, _ in FORMATS:
        stem = name.replace(" ", "-")
        lines = [f'{k} = "{(work / v).resolve() if k in ("path", "model_base") else v}"' for k, v in fields.items()]
        lines += ['dtype = "fp32"', 'device = "cpu"', 'template = "vicuna_v1"', 'image_aspect_ratio = "pad"']
        (folder / f"{stem}.toml").write_text("\n".join(lines) + "\n")
        out.append({"name": name, "card": str(folder / f"{stem}.toml")})
    return out


def run(cmd: list, what: str) -> None:
    t0 = time.time()
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"parity: {what} failed (exit {done.returncode})")
    print(f"parity: {what} ({time.time() - t0:.0f}s)", flush=True)


def prepare(work: Path, max_new_tokens: int) -> None:
    """Checkpoints, images, the reference's spec and our plan; then both sides run."""
    if not REF_PYTHON.is_file():
        raise SystemExit(f"parity: {REF_PYTHON} not found: run `bash parity/setup_ref.sh` (or `make parity`)")
    run(
        [REF_PYTHON, HERE / "build_checkpoints.py", work / "ckpt"],
        "checkpoints built by LLaVA's and transformers' code",
    )
    images = make_images(work / "images")
    spec = {
        "checkpoints": [
            {"name": k, "model_path": str(work / p), "model_base": b and str(work / b)}
            for k, (p, b) in REFERENCES.items()
        ],
        "images": [str(p) for p in images],
        "questions": [{"text": text, "conv_mode": mode} for _, _, text, mode in PROMPTS],
        "max_new_tokens": max_new_tokens,
        "dtype": "fp32",
    }
    (work / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    plan = {
        "formats": write_cards(work),
        "images": [str(p) for p in images],
        "prompts": [{"bench": p[0], "raw": p[1]} for p in PROMPTS],
        "max_new_tokens": max_new_tokens,
    }
    (work / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    run([REF_PYTHON, HERE / "reference_side.py", work / "spec.json", work / "ref"], "LLaVA's side")
    run([sys.executable, HERE / "ours.py", work / "plan.json", work / "ours"], "povid-eval's side")


def _until_eos(ids: list[int], eos: int = 2) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def compare(work: Path) -> list[dict]:
    """One row per format: the measured differences, and the details of every unequal item."""
    ref = json.loads((work / "ref" / "reference.json").read_text())
    ours = json.loads((work / "ours" / "ours.json").read_text())
    ref_index = {name: i for i, name in enumerate(REFERENCES)}
    by_key = {(r["checkpoint"], r["image"], r["question"]): r for r in ref["items"]}
    rows = []
    for fi, (name, _, reference) in enumerate(FORMATS):
        row = {"format": name, "items": 0, "pixels": 0.0, "strings": 0, "ids": 0, "logits": 0.0, "greedy": 0}
        row["failures"] = []
        for item in (o for o in ours["items"] if o["format"] == fi):
            r = by_key[(ref_index[reference], item["image"], item["prompt_index"])]
            a = np.load(work / "ours" / item["pixel_values"])
            b = np.load(work / "ref" / r["pixel_values"])
            pixels = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
            la, lb = np.load(work / "ours" / item["logits"]), np.load(work / "ref" / r["logits"])
            logits = float(np.abs(la[: lb.shape[0]] - lb).max())
            mine, theirs = _until_eos(item["greedy_ids"]), _until_eos(r["greedy_ids"])
            same = {
                "strings": item["prompt"] == r["prompt"],
                "ids": item["input_ids"] == r["input_ids"],
                "greedy": mine == theirs,
            }
            row["items"] += 1
            row["pixels"] = max(row["pixels"], pixels)
            row["logits"] = max(row["logits"], logits)
            for key, ok in same.items():
                row[key] += ok
            if not all(same.values()) or pixels > 0 or logits > LOGITS_TOL:
                at = next((k for k, (x, y) in enumerate(zip(mine, theirs)) if x != y), min(len(mine), len(theirs)))
                row["failures"].append(
                    {
                        "image": IMAGES[item["image"]][0],
                        "bench": PROMPTS[item["prompt_index"]][0],
                        "prompt_index": item["prompt_index"],
                        **{k: v for k, v in same.items() if not v},
                        "pixels": pixels,
                        "logits": logits,
                        **({"prompts": [item["prompt"], r["prompt"]]} if not same["strings"] else {}),
                        **({"ids": [item["input_ids"], r["input_ids"]]} if not same["ids"] else {}),
                        **(
                            {"greedy_at": at, "ref_margin_there": r["step_margins"][at:][:1]}
                            if not same["greedy"]
                            else {}
                        ),
                    }
                )
        rows.append(row)
    return rows


def allowed() -> list[dict]:
    """parity/allow.toml's [[allow]] entries: {format, check, reason}; each lets one check differ for one format."""
    data = tomllib.loads((HERE / "allow.toml").read_text())
    return data.get("allow", [])


def verdicts(rows: list[dict], allow: list[dict]) -> list[str]:
    """The differences not on the allow-list, one line each."""
    excused = {(a["format"], a["check"]) for a in allow}
    bad = []
    for row in rows:
        n = row["items"]
        checks = {
            "pixels": row["pixels"] == 0.0,
            "strings": row["strings"] == n,
            "ids": row["ids"] == n,
            "logits": row["logits"] <= LOGITS_TOL,
            "greedy": row["greedy"] == n,
        }
        bad += [
            f"{row['format']}: {c} differ" for c, ok in checks.items() if not ok and (row["format"], c) not in excused
        ]
    return bad


def table(rows: list[dict]) -> str:
    lines = [
        "| format | items | pixels max abs diff | prompt strings equal | prompt ids equal | logits max abs diff | "
        "greedy outputs equal |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = r["items"]
        lines.append(
            f"| {r['format']} | {n} | {r['pixels']:.1f} | {r['strings']}/{n} | {r['ids']}/{n} | {r['logits']:.1e} | "
            f"{r['greedy']}/{n} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--work", type=Path, default=ROOT / "build" / "parity", help="working folder (default build/parity)"
    )
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--compare-only", action="store_true", help="compare the outputs already in --work")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    t0 = time.time()
    if not args.compare_only:
        prepare(work, args.max_new_tokens)
    rows = compare(work)
    text = table(rows)
    print(text)
    (work / "parity.md").write_text(text + "\n")
    (work / "parity.json").write_text(json.dumps(rows, indent=1) + "\n")
    bad = verdicts(rows, allowed())
    for line in bad:
        print(f"parity: DIFFERENT: {line} (details: {work / 'parity.json'})")
    print(f"parity: {'FAILED' if bad else 'ok'} ({time.time() - t0:.0f}s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
