"""`make demo` until the embedded model lands: make a small, seeded sample of model outputs in the four
benchmarks' real file formats, then score each with `povid-eval score` as a user would.

The sample is a toy: 40 "images" with COCO objects, a simulated captioner that sometimes names an absent
object that usually co-occurs, and simulated yes/no answers. It exists to show the file formats and the
scorers end to end; it says nothing about any real model.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from povid_eval.benches import mmhal
from povid_eval.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

SCENES = {
    "kitchen": ["oven", "sink", "refrigerator", "bowl", "cup", "knife", "microwave"],
    "street": ["car", "bus", "traffic light", "person", "bicycle", "truck", "stop sign"],
    "living room": ["couch", "tv", "chair", "potted plant", "remote", "book", "clock"],
    "park": ["dog", "bench", "person", "frisbee", "bird", "kite", "umbrella"],
}
PLURAL = {"person": "people", "bus": "buses", "bench": "benches", "knife": "knives", "couch": "couches"}


def _plural(word: str) -> str:
    return PLURAL.get(word, word + "s")


def make_sample(out: Path, seed: int = 0, n_images: int = 40) -> dict[str, dict]:
    """Write the sample files under out/ and return the score arguments for each bench."""
    rng = random.Random(seed)
    images, captions, gt = [], [], {}
    for image_id in range(1, n_images + 1):
        scene = rng.choice(list(SCENES))
        objects = rng.sample(SCENES[scene], rng.randint(2, 4))
        gt[str(image_id)] = objects
        said = list(objects) if rng.random() > 0.2 else objects[:-1]
        if rng.random() < 0.4:  # the language prior: an absent partner of the scene
            said.append(rng.choice([o for o in SCENES[scene] if o not in objects]))
        parts = [f"two {_plural(o)}" if rng.random() < 0.3 else f"a {o}" for o in said]
        captions.append({"image_id": image_id, "caption": f"A {scene} with {', '.join(parts[:-1])} and {parts[-1]}."})
        images.append((image_id, scene, objects))
    atomic_write_jsonl(out / "chair" / "captions.jsonl", captions)
    atomic_write_json(out / "chair" / "gt_objects.json", gt)

    questions, answers, labels = [], [], {"random": [], "adversarial": []}
    qid = 0
    for split in labels:
        for image_id, scene, objects in images:
            absent = [o for o in SCENES[scene] if o not in objects] if split == "adversarial" else \
                [o for s in SCENES for o in SCENES[s] if o not in objects]
            for positive, negative in zip(objects[:3], rng.sample(absent, 3)):
                for obj, label in ((positive, "yes"), (negative, "no")):
                    qid += 1
                    text = f"Is there a {obj} in the image?"
                    labels[split].append({"question_id": len(labels[split]) + 1, "image": f"{image_id}.png",
                                          "text": text, "label": label})
                    questions.append({"question_id": qid, "image": f"{image_id}.png", "category": split,
                                      "text": text + "\nAnswer the question using a single word or phrase."})
                    p_yes = 0.9 if label == "yes" else (0.35 if split == "adversarial" else 0.1)
                    answers.append({"question_id": qid, "text": "Yes" if rng.random() < p_yes else "No"})
    for split, rows in labels.items():
        atomic_write_jsonl(out / "pope" / "labels" / f"coco_pope_{split}.json", rows)
    atomic_write_jsonl(out / "pope" / "questions.jsonl", questions)
    atomic_write_jsonl(out / "pope" / "answers.jsonl", answers)

    lines = []
    for image_id, scene, objects in images[:20]:
        absent = rng.choice([o for o in SCENES[scene] if o not in objects])
        for obj, truth in ((objects[0], "Yes"), (absent, "No")):
            pred = truth if rng.random() < 0.8 else ("No" if truth == "Yes" else "Yes")
            lines.append(f"{image_id}.png\tIs there a {obj} in this image? Please answer yes or no.\t{truth}\t{pred}")
    atomic_write_text(out / "mme" / "existence.txt", "\n".join(lines) + "\n")

    records, replies = [], []
    for i in range(16):
        image_id, scene, objects = images[i]
        records.append({"question_type": mmhal.TYPES[i % 8], "question_topic": scene, "image_id": str(image_id),
                        "image_src": "", "image_content": objects, "question": "What is in this image?",
                        "gt_answer": f"A {scene} with {', '.join(objects)}.", "model_answer": captions[i]["caption"]})
        replies.append({"index": i, "reply": f"A simulated review.\nRating: {rng.randint(0, 6)}"})
    atomic_write_json(out / "mmhal" / "responses.json", records)
    atomic_write_jsonl(out / "mmhal" / "judge_replies.jsonl", replies)

    return {
        "chair": ["--captions", out / "chair" / "captions.jsonl", "--gt-objects", out / "chair" / "gt_objects.json"],
        "pope": ["--answers", out / "pope" / "answers.jsonl", "--questions", out / "pope" / "questions.jsonl",
                 "--labels-dir", out / "pope" / "labels"],
        "mme": ["--results-dir", out / "mme"],
        "mmhal": ["--responses", out / "mmhal" / "responses.json", "--judge-replies",
                  out / "mmhal" / "judge_replies.jsonl"],
    }


def main() -> int:
    out = Path("results") / "demo" / "sample"
    commands = make_sample(out)
    print(f"A seeded toy sample of model outputs in the real formats is in {out}/ (not a real model).\n")
    for bench, args in commands.items():
        cmd = ["povid-eval", "score", bench, *map(str, args)]
        print("$ " + " ".join(cmd), flush=True)
        proc = subprocess.run([sys.executable, "-m", "povid_eval", *cmd[1:]])
        if proc.returncode:
            return proc.returncode
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
