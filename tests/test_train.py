"""POVID training: injectors, preference files, the DPO core on the committed tiny base, resume, merge."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from povid_eval.core.errors import InputError
from povid_eval.train import inject, preferences
from povid_eval.train.loop import Scorer, TrainConfig, kinds_for, train
from povid_eval.train.povid import RecipeConfig, world_preferences
from povid_eval.train.preferences import Preference, import_povid_release, read_preferences, write_preferences

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "models" / "base"
TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
TINY_RECIPE = """images = 8
gen_batch_size = 8
max_new_tokens = 24
[stage1]
steps = 4
batch_size = 4
grad_accum = 2
lr = 0.002
warmup = 1
checkpoint_every = 2
[stage2]
steps = 4
batch_size = 4
lr = 0.002
warmup = 1
checkpoint_every = 2
"""


@pytest.fixture(scope="module")
def world(tiny_env):
    """The shared tiny world (conftest.tiny_env: 16 train images)."""
    return tiny_env[0] / "world"


@pytest.fixture(scope="module")
def vlm():
    from povid_eval.vlm import load_vlm

    torch.set_num_threads(1)
    return load_vlm(BASE)


@pytest.fixture(scope="module")
def prefs(world, vlm):
    prefs = world_preferences(
        vlm, world, RecipeConfig(images=12, gen_batch_size=12, chosen="first"), TEMPLATE, progress=False
    )
    assert len(prefs) >= 8
    return prefs[:8]


# ------------------------------------------------------------------------------------------ injectors


@pytest.fixture(scope="module")
def injector(world):
    return inject.CooccurrenceInjector.from_instances(world / "annotations" / "instances_train.json", seed=0)


def test_swap_is_length_matched_and_names_an_absent_partner(injector):
    caption = "A kitchen with a sink, a microwave and two cups. The sink is white."
    present = {"sink", "microwave", "cup"}
    result = injector.swap(caption, present, __import__("random").Random(0))
    assert result.op == "swap" and len(result.text.split()) == len(caption.split())
    old, new = result.detail.split(" -> ")
    assert old in present and new not in present and injector.candidate_weights(present)[new] > 0
    assert injector(caption, present, "k") == injector(caption, present, "k")  # seeded per record key


def test_swap_keeps_number_and_article():
    stats = inject.CooccurrenceInjector(
        {"dog": {"umbrella": 3}, "umbrella": {"dog": 3}}, {"dog": 3, "umbrella": 3}, weights={"swap": 1}
    )
    assert stats("A dog on the left.", {"dog"}, "a").text == "An umbrella on the left."
    assert stats("Two puppies in a park.", {"dog"}, "b").text == "Two umbrellas in a park."


def test_add_and_attribute_edits(injector):
    rng = __import__("random").Random(1)
    added = injector.add("A street with a car, a person and a stop sign.", {"car", "person", "stop sign"}, rng)
    assert added.text.count(",") == 2 and added.text.endswith(" and a stop sign.")
    changed = injector.attribute("Two red cups on the left.", {"cup"}, rng)
    assert changed.text != "Two red cups on the left." and len(changed.text.split()) >= 5
    assert injector("Nothing to see.", set(), "x") is None


def test_add_puts_the_object_into_the_list_in_its_style_at_any_position(injector):
    caption = "A kitchen with a white oven, a gray sink and two blue cups."
    present = {"oven", "sink", "cup"}
    add = inject.CooccurrenceInjector(injector.cooc, injector.freq, weights={"add": 1})
    texts = {add(caption, present, str(k)).text for k in range(40)}
    starts = set()
    for text in texts:  # one new item "a <colour> <object>", the list still "x, y, z and w."
        new = [m for m in inject.find_mentions(text) if m.category not in present]
        assert len(new) == 1 and text.startswith("A kitchen with a ") and text.endswith(" and two blue cups.")
        words = text[: new[0].start].split()
        assert words[-1] in ("white", "gray", "blue") and words[-2] in ("a", "an")
        starts.add(sum(1 for m in inject.find_mentions(text) if m.start < new[0].start))
    assert starts == {0, 1, 2}  # before the first, the second and the last item
    assert add("A living room with a red couch.", {"couch"}, "k").text.endswith(" and a red couch.")
    assert " and " in add("Two puppies in a park.", {"dog"}, "k").text  # no list: after the first mention


def test_omit_deletes_a_present_object_and_keeps_a_list(injector):
    omit = inject.CooccurrenceInjector(injector.cooc, injector.freq, weights={"omit": 1})
    result = omit("A kitchen with a white oven, a gray sink and two blue cups.", {"oven", "sink", "cup"}, "k")
    assert result.op == "omit" and len(inject.find_mentions(result.text)) == 2
    assert omit("A living room with a red couch.", {"couch"}, "k") is None


def test_llm_injection_gets_cooccurring_candidates(injector):
    seen = {}

    def fake_llm(caption, present, candidates):
        seen.update(present=present, candidates=candidates)
        return caption.replace("sink", candidates[0])

    result = inject.LLMInjection(fake_llm, injector, n_candidates=3)("A sink.", {"sink"}, "k")
    assert result.op == "llm" and seen["present"] == ["sink"] and len(seen["candidates"]) <= 3
    assert seen["candidates"][0] in result.text and "sink" not in seen["candidates"]


# ------------------------------------------------------------------------------------------ preference files


def test_preferences_round_trip_and_noisy_ids(tmp_path, prefs, vlm):
    path = tmp_path / "p.jsonl"
    write_preferences(path, prefs)
    assert read_preferences(path) == prefs
    p = prefs[0]
    assert p.rejected_noisy_ids[-1] == vlm.tokenizer.eos_token_id and p.noise_step == 500
    assert p.rejected_noisy == vlm.decode(p.rejected_noisy_ids)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image": "nowhere.png"}, "image not found"),
        ({"chosen": "  "}, "'chosen' must be a non-empty string"),
        ({"rejected_text": None}, "'rejected_text' must be a non-empty string"),
    ],
)
def test_bad_preference_record_is_one_line_naming_it(tmp_path, prefs, change, message, cli):
    rows = [p.as_dict() for p in prefs[:3]]
    rows[1].update(change)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=message):
        read_preferences(path)
    done = cli("train", "--base", "base", "--out", "never", "--preferences", path, "--results", tmp_path)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and f"bad.jsonl:2: record '{rows[1]['id']}'" in err and message in err
    assert not (ROOT / "models" / "never.toml").exists()


def test_answer_lengths_name_the_rejected_kinds_that_are_longer():
    """Mean words and objects per answer kind (kinds no record has are left out), and the log line that says
    which rejected kind names more objects than y_w (DPO's length shortcut)."""
    records = [
        Preference(id="1", image="a.png", prompt="q", chosen="A cup.", rejected_text="A cup and a fork."),
        Preference(id="2", image="b.png", prompt="q", chosen="A dog and a cat.", rejected_text="A dog and a cow."),
    ]
    lengths = preferences.answer_lengths(records)
    assert lengths == {"chosen": {"words": 3.5, "objects": 1.5}, "rejected_text": {"words": 5.0, "objects": 2.0}}
    line = preferences.length_note(lengths)
    assert line.startswith("answer lengths (words / objects): y_w 3.5 / 1.5, y_l^t 5.0 / 2.0; y_l^t name more")
    assert "; " not in preferences.length_note({"chosen": lengths["chosen"]})


def test_povid_release_import(tmp_path, prefs):
    image = Path(prefs[0].image)
    entry = {
        "id": "povid-1",
        "image": image.name,
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe this image."},
            {"from": "gpt", "value": "A cup."},
        ],
        "rejected_conversations": [
            {"from": "human", "value": "<image>\nDescribe this image."},
            {"from": "gpt", "value": "A cup and a fork."},
        ],
    }
    path = tmp_path / "povid_release.json"
    path.write_text(json.dumps([entry]))
    [rec] = import_povid_release(path, image.parent)
    assert rec == Preference("povid-1", str(image), "Describe this image.", "A cup.", "A cup and a fork.")
    path.write_text(json.dumps([{**entry, "rejected_conversations": []}]))
    with pytest.raises(InputError, match="record 0.rejected_conversations"):
        import_povid_release(path, image.parent)


# ------------------------------------------------------------------------------------------ the DPO core


def test_scorer_with_cached_image_features_equals_the_full_forward(vlm, prefs):
    scorer = Scorer(vlm, TEMPLATE)
    images = {}
    rows = scorer.rows(prefs[:4], kinds_for("povid"), "paper", images)
    feats = scorer.image_features(list(dict.fromkeys(r.image for r in rows)), images)
    assert len(feats) == 8  # 4 clean + 4 noisy images, each through the tower once
    with torch.no_grad():
        ours = scorer.logprobs(rows, feats)
        full = vlm.response_ids_logprobs(
            [images[r.image] for r in rows],
            [TEMPLATE.replace("{prompt}", "Describe this image.")] * len(rows),
            [list(r.response_ids) for r in rows],
        )
    torch.testing.assert_close(ours, full, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefs):
    from povid_eval.vlm import load_vlm

    out = tmp_path_factory.mktemp("dpo")
    model = load_vlm(BASE)
    cfg = TrainConfig(loss="povid", steps=3, batch_size=4, lr=5e-3, warmup=1, checkpoint_every=3)
    info = train(model, prefs, cfg, out, template=TEMPLATE, log=lambda s: None)
    return model, out, info


def test_lora_is_on_the_language_model_only(trained):
    model, out, info = trained
    parts = info["parameters"]
    assert parts["language_model"]["trainable"] > 0
    assert all(parts[k]["trainable"] == 0 for k in ("vision_tower", "multi_modal_projector", "lm_head"))
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and info["complete"]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2]
    assert {"loss", "text/reward_chosen", "text/margin", "noise/accuracy", "noise/reward_rejected"} <= set(log[0])


def test_adapter_disabled_reference_equals_a_frozen_base(trained, prefs):
    from povid_eval.vlm import load_vlm

    model, _, _ = trained
    frozen = load_vlm(BASE)
    rows_args = (prefs[:4], kinds_for("povid"), "paper")
    ours, theirs = Scorer(model, TEMPLATE), Scorer(frozen, TEMPLATE)
    with torch.no_grad():
        images = {}
        rows = ours.rows(*rows_args, images)
        feats = ours.image_features(list(dict.fromkeys(r.image for r in rows)), images)
        policy = ours.logprobs(rows, feats)
        with model.model.disable_adapter():
            reference = ours.logprobs(rows, feats)
        base = theirs.logprobs(rows, theirs.image_features(list(feats), images))
    assert (policy - base).abs().max() > 1e-3  # the adapter learned something
    torch.testing.assert_close(reference, base, rtol=0, atol=1e-6)


def test_merge_equals_the_adapter(trained, prefs, tmp_path):
    from povid_eval.train.loop import merge_adapter
    from povid_eval.vlm import load_vlm

    _, out, _ = trained
    adapted = load_vlm(BASE, adapter=out / "adapter")
    image = [__import__("PIL.Image", fromlist=["Image"]).open(prefs[0].image)]
    prompt = [TEMPLATE.replace("{prompt}", "Describe this image.")]
    with torch.no_grad():
        before = adapted.sequence_logprobs(image, prompt, [prefs[0].chosen])
        merge_adapter(adapted, tmp_path / "merged")
        after = load_vlm(tmp_path / "merged").sequence_logprobs(image, prompt, [prefs[0].chosen])
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)


def test_projector_lr_trains_the_projector_as_llava_lora_does(tmp_path, prefs):
    """LLaVA's LoRA training (POVID's scripts: --mm_projector_lr) also trains the projector in full: with
    projector_lr the adapter holds a trained copy, the scorer's cached tower features go through it (equal to a
    full forward of the reloaded adapter), the reference is the untouched base, and --merge keeps it."""
    from povid_eval.train.loop import merge_adapter
    from povid_eval.vlm import load_vlm

    model = load_vlm(BASE)
    cfg = TrainConfig(loss="povid", steps=2, batch_size=4, lr=5e-3, projector_lr=5e-2, warmup=1)
    info = train(model, prefs, cfg, tmp_path / "run", template=TEMPLATE, log=lambda s: None)
    parts = info["parameters"]
    assert parts["multi_modal_projector"]["trainable"] == parts["multi_modal_projector"]["total"] // 2 > 0
    assert parts["vision_tower"]["trainable"] == 0 and parts["language_model"]["trainable"] > 0
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["projector_lr"] == pytest.approx(10 * r["lr"]) for r in log)  # its own peak, the same schedule
    scorer, frozen = Scorer(model, TEMPLATE), Scorer(load_vlm(BASE), TEMPLATE)
    reloaded = load_vlm(BASE, adapter=tmp_path / "run" / "adapter")
    images = {}
    rows = scorer.rows(prefs[:2], kinds_for("dpo"), "paper", images)
    with torch.no_grad():
        feats = scorer.image_features(list(dict.fromkeys(r.image for r in rows)), images)
        policy = scorer.logprobs(rows, feats)
        with model.model.disable_adapter():
            reference = scorer.logprobs(rows, feats)
        base = frozen.logprobs(rows, frozen.image_features(list(feats), images))
        args = (
            [images[r.image] for r in rows],
            [TEMPLATE.replace("{prompt}", "Describe this image.")] * len(rows),
            [list(r.response_ids) for r in rows],
        )
        full = reloaded.response_ids_logprobs(*args)
        merged = load_vlm(merge_adapter(reloaded, tmp_path / "merged")).response_ids_logprobs(*args)
    torch.testing.assert_close(reference, base, rtol=0, atol=1e-6)
    # summed log-probs of about -100: two fp32 orders of summation differ by an ulp there (1.5e-5), hence rtol
    torch.testing.assert_close(policy, full, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(merged, full, rtol=0, atol=1e-4)
    assert (policy - base).abs().max() > 1e-3


def test_projector_lr_cannot_start_on_an_adapter_without_a_projector(tmp_path, prefs):
    from povid_eval.vlm import load_vlm

    model = load_vlm(BASE)
    train(model, prefs, TrainConfig(steps=1, batch_size=4), tmp_path / "s1", template=TEMPLATE, log=lambda s: None)
    with pytest.raises(InputError, match="no trainable projector"):
        train(model, prefs, TrainConfig(steps=1, batch_size=4, projector_lr=1e-3), tmp_path / "s2", template=TEMPLATE)


def _train_cli(models, world, results, *extra):
    env = {**os.environ, "POVID_EVAL_MODELS": str(models)}
    return [
        sys.executable,
        "-m",
        "povid_eval",
        "train",
        "--base",
        "base",
        "--out",
        "tuned",
        "--world",
        str(world),
        "--results",
        str(results),
        "--config",
        str(models / "tiny.toml"),
        *extra,
    ], env


def test_train_cli_resumes_after_a_kill(tmp_path, world):
    models = tmp_path / "models"
    models.mkdir()
    (models / "base.toml").write_text(f'path = "{BASE}"\nthreads = 1\n')
    (models / "tiny.toml").write_text(TINY_RECIPE)
    # an uninterrupted run
    cmd, env = _train_cli(models, world, tmp_path / "a")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    card = (models / "tuned.toml").read_text()
    assert 'adapter = "' in card and "stage2/adapter" in card
    # the same run into another results folder (so another card: --overwrite), killed once stage 2 has its
    # first checkpoint, then run again
    cmd, env = _train_cli(models, world, tmp_path / "b", "--overwrite")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "b" / "train" / "tuned" / "stage2" / "checkpoints" / "step-2" / "state.json"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "train" / "tuned" / "stage2" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "train" / "tuned" / "stage2" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = "train/tuned/stage2/adapter/adapter_config.json"  # byte-identical (the model's fingerprint hashes it)
    assert (tmp_path / "a" / config).read_bytes() == (tmp_path / "b" / config).read_bytes()
    log = (tmp_path / "b" / "train" / "tuned" / "stage2" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in log] == [0, 1, 2, 3]


def test_corrected_answer_deletes_what_the_image_lacks():
    caption = "A view of a kitchen with a refrigerator, a sink, a white oven and a cup. The cup is white."
    assert (
        inject.correct_answer(caption, {"sink", "oven", "cup"})
        == "A view of a kitchen with a sink, a white oven and a cup. The cup is white."
    )
    assert (
        inject.correct_answer(caption, {"sink", "oven", "refrigerator"})
        == "A view of a kitchen with a refrigerator, a sink and a white oven."
    )
    assert inject.correct_answer(caption, {"refrigerator", "sink", "oven", "cup"}) == caption
    assert inject.correct_answer("A view of a street with a car.", {"person"}) is None


def test_world_preferences_skip_the_noisy_answers_a_recipe_does_not_use(world, vlm):
    cfg = RecipeConfig(images=4, gen_batch_size=4, chosen="first")
    text_only = world_preferences(vlm, world, cfg, TEMPLATE, progress=False, noisy=False)
    assert text_only and all(p.rejected_noisy is None and p.rejected_noisy_ids is None for p in text_only)
    cfg.chosen = "corrected"  # y_w is made from y_l^n: it is generated all the same
    corrected = world_preferences(vlm, world, cfg, TEMPLATE, progress=False, noisy=False)
    assert all(p.rejected_noisy_ids is not None for p in corrected)


def test_world_preferences_are_grounded(prefs, world):
    from povid_eval.benches import coco

    objects = coco.image_objects(world / "annotations" / "instances_train.json", key="id")
    for p in prefs:
        assert {m.category for m in inject.find_mentions(p.chosen)} <= set(objects[p.id])
        assert p.chosen != p.rejected_text and p.rejected_noisy_ids is not None


def test_unknown_stage_is_a_clear_error(cli):
    from povid_eval.train.povid import stages_for

    with pytest.raises(InputError, match="--stages must name stages 1 and/or 2, got 3"):
        stages_for("povid", RecipeConfig(), (3,))
    done = cli("train", "--stages", "x")
    assert done.returncode == 2 and "expected comma-separated ints" in done.stderr


def test_a_projector_only_stage2_is_refused_before_anything_trains():
    from dataclasses import replace

    from povid_eval.train.povid import stages_for

    cfg = RecipeConfig()
    cfg.stage2 = replace(cfg.stage2, projector_lr=1e-4)
    with pytest.raises(InputError, match="stage2.projector_lr needs stage1.projector_lr"):
        stages_for("povid", cfg)
    assert stages_for("povid", cfg, (2,))[0][1].projector_lr == 1e-4  # stage 2 alone wraps the base itself


def test_latest_checkpoint_ignores_a_half_renamed_folder(tmp_path):
    from povid_eval.train.loop import latest_checkpoint

    for name in ("step-4", "step-8.tmp", "step-12"):
        (tmp_path / name).mkdir()
        if name != "step-12":  # step-12 has no state.json yet: incomplete
            (tmp_path / name / "state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "step-4"
