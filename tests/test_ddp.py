"""Data-parallel training under torchrun (2 CPU processes, gloo) equals the one-process run of the same config:
the same per-step log and the same adapter; only rank 0 writes; run_recipe under torchrun writes one card.

One torchrun launch runs every case (its start-up and imports are most of the cost); the one-process runs are
made here, in the test process. The worker script is written into tmp_path (WORKER below).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_SIZES
from PIL import Image

from povid_eval.core.errors import InputError
from povid_eval.train import loop
from povid_eval.train.loop import TrainConfig, train
from povid_eval.train.preferences import Preference, write_preferences

TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
SMALL = SMALL_SIZES
OBJECTS = ["dog", "cat", "car", "cup", "bowl", "sink", "person", "chair"]
COMMON = dict(steps=3, batch_size=4, lr=5e-3, warmup=1, lora_r=4, lora_alpha=8, seed=3)
CASES = {  # name: (TrainConfig fields, stop_after of a first run that is then resumed)
    "povid": (dict(loss="povid", checkpoint_every=2, **COMMON), 2),
    "accum": (
        dict(loss="dpo", grad_accum=2, sft_weight=0.5, precompute_reference=True, checkpoint_every=3, **COMMON),
        None,
    ),
}
RECIPE = (
    "images = 8\n[stage1]\nsteps = 1\nbatch_size = 4\nlr = 0.005\nwarmup = 1\n"
    "[stage2]\nsteps = 1\nbatch_size = 4\nlr = 0.005\nwarmup = 1\n"
)
TOL = 1e-5

WORKER = r"""
import json, os, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from povid_eval.train.loop import train, TrainConfig
from povid_eval.train.povid import load_recipe_config, run_recipe
from povid_eval.train.preferences import read_preferences
from povid_eval.vlm import load_vlm

TEMPLATE = TEMPLATE_HERE
base, prefs_path, root = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cases = json.loads(sys.argv[4])
rank = int(os.environ["RANK"])
writes = []   # what this process writes under root (files, folders, renames, deletions), from audit events


def audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
    else:
        path, writing = args[0], event in ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree")
    if writing and isinstance(path, (str, Path)) and str(path).startswith(str(root)) \
            and not str(path).startswith(str(root / "ranks")):
        writes.append(f"{event} {path}")


sys.addaudithook(audit)
prefs = read_preferences(prefs_path)
lines = []
for name, (fields, stop_after) in cases.items():
    cfg = TrainConfig(**fields)
    if stop_after:   # stopped (as if killed), then resumed from the checkpoint by a freshly loaded base
        train(load_vlm(base), prefs, cfg, root / "runs" / name, template=TEMPLATE, log=lines.append,
              stop_after=stop_after)
    vlm = load_vlm(base)
    assert train(vlm, prefs, cfg, root / "runs" / name, template=TEMPLATE, log=lines.append)["complete"]
    weights = {n: p.detach().clone() for n, p in vlm.model.named_parameters() if p.requires_grad}
    torch.save(weights, root / "ranks" / f"{name}.rank{rank}.pt")
card = run_recipe("base", "tuned", recipe="dpo", config=load_recipe_config(root / "recipe.toml"),
                  preferences=str(prefs_path), results=root / "runs", log=lines.append)
(root / "ranks" / f"rank{rank}.json").write_text(json.dumps({"log": lines, "writes": writes, "card": str(card)}))
""".replace("TEMPLATE_HERE", repr(TEMPLATE))


def _records(tmp: Path) -> list[Preference]:
    rng = np.random.default_rng(0)
    images = []
    for i in range(4):
        images.append(tmp / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images[-1])
    out = []
    for k in range(8):
        a, b, c = OBJECTS[k], OBJECTS[(k + 3) % 8], OBJECTS[(k + 5) % 8]
        out.append(
            Preference(
                id=f"r{k}",
                image=str(images[k % 4]),
                prompt="Describe this image.",
                chosen=f"A {a} is next to a {b}." + (" The image is dark." if k % 2 else ""),
                rejected_text=f"A {a} is next to a {c}.",
                rejected_noisy=f"A {c} and a {b}.",
                noise_step=500,
                noise_seed=k,
            )
        )
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from povid_eval.vlm import build_tiny_llava
    from povid_eval.vlm.tokenizer import vocab_from_texts

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ddp")
    prefs = _records(root)
    write_preferences(root / "prefs.jsonl", prefs)
    texts = [TEMPLATE.replace("{prompt}", "Describe this image.")] + [
        t for p in prefs for t in (p.chosen, p.rejected_text, p.rejected_noisy)
    ]
    model, processor = build_tiny_llava(vocab_from_texts(texts), seed=0, **SMALL)
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    models = root / "models"
    models.mkdir()
    (models / "base.toml").write_text(f'path = "{root / "base"}"\nthreads = 1\ntemplate = {json.dumps(TEMPLATE)}\n')
    (root / "recipe.toml").write_text(RECIPE)
    (root / "ranks").mkdir()
    (root / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POVID_EVAL_MODELS": str(models)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(root / "worker.py"),
        str(root / "base"),
        str(root / "prefs.jsonl"),
        str(root),
        json.dumps(CASES),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return root, prefs


@pytest.fixture(scope="module")
def single(setup):
    """The same cases in one process (uninterrupted): {name: (log records, trained LoRA weights, out dir)}."""
    from povid_eval.vlm import load_vlm

    root, prefs = setup
    out = {}
    for name, (fields, _) in CASES.items():
        vlm = load_vlm(root / "base")
        train(vlm, prefs, TrainConfig(**fields), root / "single" / name, template=TEMPLATE, log=lambda s: None)
        log = [json.loads(x) for x in (root / "single" / name / "train_log.jsonl").read_text().splitlines()]
        weights = {n: p.detach() for n, p in vlm.model.named_parameters() if p.requires_grad}
        out[name] = log, weights
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_log_what_one_process_logs(setup, single, name):
    root, _ = setup
    ours = [json.loads(x) for x in (root / "runs" / name / "train_log.jsonl").read_text().splitlines()]
    theirs, _ = single[name]
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == [0, 1, 2]
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        diff = max(abs(a[k] - b[k]) for k in a)
        assert diff <= TOL, (name, a, b)
    if name == "accum":
        assert "sft_nll" in ours[0]
    else:
        assert {"text/margin", "noise/accuracy"} <= set(ours[0])


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_train_the_one_process_adapter(setup, single, name):
    from safetensors.torch import load_file

    root, _ = setup
    _, theirs = single[name]
    rank0 = torch.load(root / "ranks" / f"{name}.rank0.pt")
    rank1 = torch.load(root / "ranks" / f"{name}.rank1.pt")
    assert rank0.keys() == rank1.keys() == theirs.keys() and theirs
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # the ranks never drift apart
    diff = max((rank0[k] - theirs[k]).abs().max().item() for k in theirs)
    moved = max((theirs[k]).abs().max().item() for k in theirs if "lora_B" in k)
    assert diff <= TOL and moved > 1e-3, (diff, moved)
    saved = load_file(str(root / "runs" / name / "adapter" / "adapter_model.safetensors"))
    ref = load_file(str(root / "single" / name / "adapter" / "adapter_model.safetensors"))
    assert saved.keys() == ref.keys()
    assert max((saved[k] - ref[k]).abs().max().item() for k in ref) <= TOL


def test_only_rank_0_logs_and_writes(setup):
    root, _ = setup
    rank0 = json.loads((root / "ranks" / "rank0.json").read_text())
    rank1 = json.loads((root / "ranks" / "rank1.json").read_text())
    assert rank1["log"] == [] and rank1["writes"] == []
    assert any("resuming from" in line for line in rank0["log"]) and any("step 3/3" in line for line in rank0["log"])
    assert any("adapter_model.safetensors" in w or "adapter.tmp" in w for w in rank0["writes"])  # the hook sees
    for name in CASES:
        assert sorted(p.name for p in (root / "runs" / name).iterdir()) == [
            "adapter",
            "checkpoints",
            "train_info.json",
            "train_log.jsonl",
        ]
        assert [p.name for p in (root / "runs" / name / "checkpoints").iterdir()] == ["step-3"]
    # run_recipe under torchrun: one card (rank 0's), both ranks return its path
    card = root / "models" / "tuned.toml"
    assert rank0["card"] == rank1["card"] == str(card) and "stage1/adapter" in card.read_text()
    assert json.loads((root / "runs" / "train" / "tuned" / "train_info.json").read_text())["stages"] == ["stage1"]
    assert any("preference records" in line for line in rank0["log"])


def test_batch_must_split_over_accumulation_and_processes(setup, monkeypatch):
    root, prefs = setup
    monkeypatch.setattr(loop, "_dist_info", lambda: (0, 2))
    with pytest.raises(InputError, match="batch_size 4 is not a multiple of grad_accum 4 x 2 processes"):
        train(None, prefs, TrainConfig(batch_size=4, grad_accum=4), root / "never", template=TEMPLATE)
    assert not (root / "never").exists()
