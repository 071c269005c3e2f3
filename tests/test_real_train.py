"""`povid-eval train` on real-format inputs: the POVID release's preference json + a COCO-style train2014
folder, from an ORIGINAL-format LLaVA base card (converted on load, vicuna_v1 template); the tuned card keeps
the base's format fields and loads with its adapter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from test_convert import SMALL, write_original, write_tower

from povid_eval.vlm.build import build_tiny_llava
from povid_eval.vlm.tokenizer import vocab_from_texts

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Describe this image."
CHOSEN = ["A red dog is on the left.", "A blue car is in the street.", "A cat sits on a chair.", "Two birds fly."]
REJECTED = [
    "A red dog and a cat are on the left.",
    "A blue car and a bus are in the street.",
    "A cat sits on a chair next to a dog.",
    "Two birds and a kite fly.",
]


def test_train_release_json_on_original_format_base(tmp_path):
    torch.set_num_threads(1)
    texts = (
        CHOSEN
        + REJECTED
        + [
            QUESTION,
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions. "
            "USER: ASSISTANT:",
        ]
    )
    model, processor = build_tiny_llava(vocab_from_texts(texts), seed=0, **SMALL)
    tower = write_tower(tmp_path / "clip", model, processor)
    base = write_original(tmp_path / "llava-v1.5-tiny", model, processor, tower)
    images = tmp_path / "train2014"
    images.mkdir()
    release = []
    for i, (good, bad) in enumerate(zip(CHOSEN, REJECTED)):
        name = f"COCO_train2014_{i:012d}.jpg"
        pixels = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / name, quality=95)
        release.append(
            {
                "id": str(i),
                "image": name,
                "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": good}],
                "rejected_conversations": [
                    {"from": "human", "value": f"<image>\n{QUESTION}"},
                    {"from": "gpt", "value": bad},
                ],
            }
        )
    (tmp_path / "povid_release.json").write_text(json.dumps(release))
    models = tmp_path / "models"
    models.mkdir()
    (models / "real.toml").write_text(
        f'path = "{base}"\nformat = "llava"\nvision_tower = "{tower}"\ntemplate = "vicuna_v1"\nthreads = 1\n'
    )
    (tmp_path / "recipe.toml").write_text(
        "[stage1]\nsteps = 2\nbatch_size = 2\nwarmup = 1\nlr = 0.01\n[stage2]\nsteps = 1\nbatch_size = 2\nwarmup = 1\n"
    )
    env = {**os.environ, "POVID_EVAL_MODELS": str(models), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "povid_eval",
            "train",
            "--base",
            "real",
            "--out",
            "tuned",
            "--recipe",
            "dpo",
            "--preferences",
            tmp_path / "povid_release.json",
            "--image-root",
            images,
            "--config",
            tmp_path / "recipe.toml",
            "--results",
            tmp_path / "results",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 preference records" in done.stdout

    from povid_eval import cards
    from povid_eval.vlm import load_vlm_card

    tuned = cards.load_model_card("tuned", models)
    assert (tuned.format, tuned.template, Path(tuned.vision_tower)) == ("llava", "vicuna_v1", tower)
    assert Path(tuned.adapter).name == "adapter" and (Path(tuned.adapter) / "adapter_model.safetensors").is_file()
    image = Image.open(images / "COCO_train2014_000000000000.jpg")
    scores = []
    for card in (cards.load_model_card("real", models), tuned):
        vlm = load_vlm_card(card)
        with torch.no_grad():
            scores.append(
                vlm.sequence_logprobs(
                    [image, image], [vlm.prompt(card.template, QUESTION)] * 2, [CHOSEN[0], REJECTED[0]]
                )
            )
    margin = [float(s[0] - s[1]) for s in scores]
    assert margin[1] > margin[0]  # DPO moved the tuned model towards y_w on a training record
