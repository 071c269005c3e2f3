"""`povid-eval doctor` and the checks `run` makes first: one test per missing asset kind, on the REAL bench
cards (benchmarks/real/*.toml) pointed at a small data root laid out like the real releases (COCO, POPE, the
MME release with its nested image folders, MMHal with images named after their URLs), made from a tiny world.
The same layout then runs end to end with a tiny model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.run import doctor, runner

ROOT = Path(__file__).resolve().parents[1]
NESTED = "color"  # an MME subtask whose images sit in <subtask>/images/, as five real subtasks do


@pytest.fixture(scope="module")
def real(tiny_env, tmp_path_factory):
    """(data root, model card folder, bench card folder) in the real releases' layout, made from the shared
    tiny world (conftest.tiny_env); the model is its tiny LLaVA."""
    base = tmp_path_factory.mktemp("doctor")
    world = tiny_env[0] / "world"
    data = base / "data"
    ann = data / "coco" / "annotations"
    ann.mkdir(parents=True)
    shutil.copy(world / "annotations" / "instances_val.json", ann / "instances_val2014.json")
    shutil.copy(world / "annotations" / "captions_val.json", ann / "captions_val2014.json")
    shutil.copytree(world / "images" / "val", data / "coco" / "val2014")
    shutil.copytree(world / "pope", data / "pope")
    gt = data / "MME" / "eval_tool" / "Your_Results"
    gt.mkdir(parents=True)
    release = data / "MME" / "MME_Benchmark_release_version"
    for txt in (world / "mme").glob("*.txt"):
        shutil.copy(txt, gt / txt.name)
        target = release / txt.stem / ("images" if txt.stem == NESTED else "")
        shutil.copytree(world / "mme" / "images" / txt.stem, target)
    records = json.loads((world / "mmhal" / "template.json").read_text())
    (data / "mmhal" / "images").mkdir(parents=True)
    for r in records:
        name = Path(r["image_src"]).name
        shutil.copy(world / r["image_src"], data / "mmhal" / "images" / name)
        r["image_src"] = f"https://example.org/photos/{name}"
    (data / "mmhal" / "response_template.json").write_text(json.dumps(records))
    ids = [im["id"] for im in json.loads((ann / "instances_val2014.json").read_text())["images"]][:5]
    (base / "ids.txt").write_text("# five images\n" + "".join(f"{i}\n" for i in ids))

    benches = base / "benchmarks"
    (benches / "real").mkdir(parents=True)
    for card in (ROOT / "benchmarks" / "real").glob("*.toml"):
        text = card.read_text().replace('data = "data/real"', f'data = "{data}"')
        text = text.replace('image_ids = "benchmarks/real/chair_val2014_500.txt"', f'image_ids = "{base / "ids.txt"}"')
        text = text.replace("max_new_tokens = 512", "max_new_tokens = 6").replace(
            "max_new_tokens = 128", "max_new_tokens = 4"
        )
        (benches / "real" / card.name).write_text(text)
    models = base / "models"
    models.mkdir()
    shutil.copytree(tiny_env[0] / "tiny", base / "tiny")  # a copy: some tests take files out of it
    (models / "tiny.toml").write_text(f'path = "{base / "tiny"}"\nthreads = 1\n')
    return base, data, models, benches


@pytest.fixture
def cards_env(real, monkeypatch):
    base, data, models, benches = real
    monkeypatch.setenv("POVID_EVAL_MODELS", str(models))
    monkeypatch.setenv("POVID_EVAL_BENCHMARKS", str(benches))
    monkeypatch.setenv("POVID_EVAL_CACHE", str(base / "cache"))
    return real


def bench(name: str, **changes) -> cards.BenchCard:
    return registry.load_card(name).with_overrides(changes)


def failed(found: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.asset: c for c in found if not c.ok}


def moved(path: Path):
    """Context: path renamed away for the duration."""

    class Away:
        def __enter__(self):
            path.rename(path.with_name(path.name + ".away"))

        def __exit__(self, *exc):
            path.with_name(path.name + ".away").rename(path)

    return Away()


# ------------------------------------------------------------------------------------------- bench data


def test_complete_real_layout_passes(cards_env):
    for name in ("chair-coco", "pope-coco", "mme-release"):
        assert failed(doctor.bench_checks(bench(name))) == {}, name


def test_missing_coco_images(cards_env):
    _, data, _, _ = cards_env
    image = sorted((data / "coco" / "val2014").iterdir())[0]
    with moved(image):
        problems = failed(doctor.bench_checks(bench("chair-coco", image_ids="", sample=0)))
    assert "1 of 24 images missing" in problems["images"].detail
    assert "val2014.zip" in problems["images"].fix


def test_missing_coco_annotations(cards_env):
    _, data, _, _ = cards_env
    with moved(data / "coco" / "annotations" / "captions_val2014.json"):
        problems = failed(doctor.bench_checks(bench("chair-coco")))
    assert set(problems) == {"annotations (captions)"}
    assert "annotations_trainval2014.zip" in problems["annotations (captions)"].fix
    with moved(data / "coco" / "annotations" / "instances_val2014.json"):
        assert "annotations (instances)" in failed(doctor.bench_checks(bench("chair-coco")))


def test_missing_or_bad_image_list(cards_env, tmp_path):
    assert "image list" in failed(doctor.bench_checks(bench("chair-coco", image_ids=str(tmp_path / "none.txt"))))
    bad = tmp_path / "bad.txt"
    bad.write_text("123456789\n")
    from povid_eval.core.errors import InputError

    with pytest.raises(InputError, match="not in instances_val2014.json"):
        doctor.bench_checks(bench("chair-coco", image_ids=str(bad)))


def test_missing_nltk_data(cards_env, monkeypatch):
    import povid_eval.benches.chair.nltk_setup as nltk_setup

    monkeypatch.setattr(nltk_setup, "missing_resources", lambda: ["punkt_tab", "wordnet"])
    problems = failed(doctor.bench_checks(bench("chair-coco")))
    assert problems["NLTK data"].detail == "missing punkt_tab"  # singularize does not need wordnet
    assert "make setup" in problems["NLTK data"].fix
    assert "wordnet" in failed(doctor.bench_checks(bench("chair-coco", variant="wordnet")))["NLTK data"].detail


def test_missing_pope_labels_and_questions(cards_env):
    _, data, _, _ = cards_env
    with moved(data / "pope" / "coco_pope_popular.json"):
        assert set(failed(doctor.bench_checks(bench("pope-coco")))) == {"POPE labels (popular)"}
    with moved(data / "pope" / "llava_pope_test.jsonl"):
        assert "RUCAIBox/POPE" in failed(doctor.bench_checks(bench("pope-coco")))["POPE questions"].fix


def test_missing_mme_ground_truth_and_images(cards_env):
    _, data, _, _ = cards_env
    with moved(data / "MME" / "eval_tool"):
        assert "0 of 14" in failed(doctor.bench_checks(bench("mme-release")))["MME ground truth"].detail
    nested = data / "MME" / "MME_Benchmark_release_version" / NESTED / "images"
    with moved(sorted(nested.iterdir())[0]):
        assert "images" in failed(doctor.bench_checks(bench("mme-release")))


def test_mmhal_template_images_and_judges(cards_env, tmp_path):
    _, data, _, _ = cards_env
    local = dict(judge="hf", judge_model=str(tmp_path / "no-judge"))
    assert set(failed(doctor.bench_checks(bench("mmhal-bench", **local)))) == {"judge model"}
    with moved(data / "mmhal" / "response_template.json"):
        assert (
            "Shengcao1006/MMHal-Bench"
            in failed(doctor.bench_checks(bench("mmhal-bench", **local)))["MMHal template"].fix
        )
    with moved(sorted((data / "mmhal" / "images").iterdir())[0]):
        assert "images" in failed(doctor.bench_checks(bench("mmhal-bench", **local)))
    assert "judge" in failed(doctor.bench_checks(bench("mmhal-bench", judge="rule")))  # real data, rule judge
    three = tmp_path / "three.txt"
    three.write_text("{} {} {}")
    problems = failed(doctor.bench_checks(bench("mmhal-bench", **local), judge_prompt=three))
    detail = problems["judge prompt"].detail
    assert "exactly four {} slots" in detail and detail.endswith("found 3")
    original = ROOT.parent / "shared" / "fixtures" / "mmhal" / "reference_judge_prompt.txt"
    if original.is_file():
        assert "judge prompt" not in failed(doctor.bench_checks(bench("mmhal-bench", **local), judge_prompt=original))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_judge_key_and_unreachable_endpoint(cards_env, monkeypatch):
    monkeypatch.delenv("POVID_TEST_JUDGE_KEY", raising=False)
    card = bench(
        "mmhal-bench", judge_base_url=f"http://127.0.0.1:{free_port()}/v1", judge_key_env="POVID_TEST_JUDGE_KEY"
    )
    problems = failed(doctor.bench_checks(card))
    assert problems["judge key"].fix == "export POVID_TEST_JUDGE_KEY=<your key>"
    assert "unreachable" in problems["judge endpoint"].detail


# ------------------------------------------------------------------------------------------- models


def model(name: str = "tiny", **changes) -> cards.ModelCard:
    return dataclasses.replace(cards.load_model_card(name), **changes)


def test_model_checks(cards_env, tmp_path):
    base, _, _, _ = cards_env
    assert failed(doctor.model_checks(model())) == {}
    assert "model weights" in failed(doctor.model_checks(model(path=str(tmp_path / "nowhere"))))
    partial = tmp_path / "partial"
    shutil.copytree(base / "tiny", partial)
    (partial / "tokenizer.json").unlink()
    assert set(failed(doctor.model_checks(model(path=str(partial))))) == {"tokenizer"}
    (partial / "processor_config.json").unlink()
    assert set(failed(doctor.model_checks(model(path=str(partial))))) == {"tokenizer", "processor"}
    problems = failed(doctor.model_checks(model(adapter=str(tmp_path / "no-adapter"))))
    assert set(problems) == {"adapter"}


def test_hub_id_not_cached(cards_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("POVID_EVAL_ALLOW_DOWNLOADS", raising=False)
    problems = failed(doctor.model_checks(model(path="llava-hf/llava-1.5-7b-hf")))
    assert "hf download llava-hf/llava-1.5-7b-hf --local-dir models/llava-1.5-7b-hf" in problems["model weights"].fix


def test_original_llava_format_problems(cards_env, tmp_path):
    folder = tmp_path / "llava-v1.5-7b"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlavaLlamaForCausalLM"],
                "mm_projector_type": "mlp2x_gelu",
                "mm_vision_tower": str(tmp_path / "clip-missing"),
            }
        )
    )
    problems = [c for c in doctor.model_checks(model(path=str(folder), format="llava")) if not c.ok]
    assert problems and all(c.asset == "model (original LLaVA format)" for c in problems)
    assert any("clip-missing" in c.detail for c in problems)


def test_api_model_key_and_endpoint(cards_env, monkeypatch):
    monkeypatch.delenv("POVID_TEST_MODEL_KEY", raising=False)
    card = model(
        backend="openai",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_model="m",
        api_key_env="POVID_TEST_MODEL_KEY",
    )
    assert set(failed(doctor.model_checks(card))) == {"model key", "model endpoint"}


def test_cuda_device_on_a_cpu_machine(cards_env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "device" in failed(doctor.model_checks(model(device="cuda")))


def test_low_disk(cards_env, monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 10**8, 10**8))
    check = doctor.disk_check(tmp_path / "results" / "deeper")
    assert not check.ok and "0.1 GB free" in check.detail


# ------------------------------------------------------------------------------------------- CLI and run


def cli(env, *args):
    base, _, models, benches = env
    variables = {
        "POVID_EVAL_MODELS": str(models),
        "POVID_EVAL_BENCHMARKS": str(benches),
        "POVID_EVAL_CACHE": str(base / "cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "povid_eval", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **variables},
        cwd=base,
    )


def test_doctor_cli_exit_codes(real):
    done = cli(real, "doctor", "--model", "tiny", "--bench", "pope-coco")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready to run" in done.stdout
    done = cli(real, "doctor", "--model", "tiny", "--bench", "mmhal-bench", "--json")
    assert done.returncode == 2  # the rule-free real card wants an API judge: no key here
    assert any(c["asset"] == "mmhal-bench: judge key" and not c["ok"] for c in json.loads(done.stdout))


def test_run_stops_before_any_work(real):
    base, data, _, _ = real
    with moved(data / "pope" / "coco_pope_random.json"):
        done = cli(real, "run", "--model", "tiny", "--bench", "pope-coco", "--results", base / "stopped")
    assert done.returncode == 2
    assert "POPE labels (random)" in done.stderr and "Traceback" not in done.stderr
    assert not (base / "stopped" / "runs" / "tiny" / "pope-coco" / "samples.jsonl").exists()


def test_real_layout_runs_end_to_end(cards_env, tmp_path):
    """The real cards' item builders on the real layouts: pinned image list, the POPE suffix picked by the card,
    MME images in nested folders, MMHal images named after their URLs."""
    seen = {}

    def generate(images, prompts, decoding):
        seen.setdefault("prompts", []).extend(prompts)
        return ["Yes" for _ in prompts]

    chair = runner.run("tiny", "chair-coco", results=tmp_path, generate=generate, progress=False)
    assert chair["n"] == 5
    pope = runner.run("tiny", "pope-coco", results=tmp_path, generate=generate, progress=False, limit=6)
    assert pope["n"] == 6
    assert all(p.endswith("?\nAnswer the question using a single word or phrase.") for p in seen["prompts"][5:11])
    mme = runner.run("tiny", "mme-release", results=tmp_path, generate=generate, progress=False)
    assert mme["metrics"]["subtasks"][NESTED]["acc"] == 50.0  # every "Yes": half right, the nested images found
    items = runner.bench_items(registry.load_card("mmhal-bench"))
    assert all(it.image.is_file() and it.image.parent.name == "images" for it in items)
    other = tmp_path / "two.txt"
    ids = [int(x) for x in (cards_env[0] / "ids.txt").read_text().split() if x.isdigit()]
    other.write_text(f"{ids[3]}\n{ids[1]}\n")
    again = runner.run(
        "tiny", "chair-coco", results=tmp_path / "other", generate=generate, progress=False, image_ids=other
    )
    assert again["n"] == 2 and again["protocol_hash"] != chair["protocol_hash"]
    from povid_eval.report.leaderboard import write_leaderboard

    md = write_leaderboard(tmp_path, group="real")[0]
    assert md.name == "leaderboard-real.md"
    row = md.read_text().splitlines()[2].split(" | ")
    assert row[0] == "| tiny" and row[1] != "" and row[5] != "" and row[7] != ""  # CHAIR_s, POPE F1, MME


def test_hub_id_from_the_local_cache(real, tmp_path):
    """A card's hub id is served from the HF cache (its models--org--name/snapshots/<rev>/ layout), offline."""
    base, _, models, benches = real
    snapshot = tmp_path / "hub" / "models--test-org--tiny-llava" / "snapshots" / ("0" * 40)
    shutil.copytree(base / "tiny", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    card_dir = tmp_path / "models"
    card_dir.mkdir()
    (card_dir / "hub.toml").write_text('path = "test-org/tiny-llava"\nthreads = 1\n')
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "POVID_EVAL_MODELS": str(card_dir),
        "POVID_EVAL_BENCHMARKS": str(benches),
    }
    env.pop("POVID_EVAL_ALLOW_DOWNLOADS", None)
    done = subprocess.run(
        [sys.executable, "-m", "povid_eval", "doctor", "--model", "hub"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and f"{snapshot}: present" in done.stdout, done.stdout + done.stderr
    code = (
        "from povid_eval import cards; from povid_eval.vlm import load_vlm_card; "
        "print(type(load_vlm_card(cards.load_model_card('hub')).model).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.stdout.strip() == "LlavaForConditionalGeneration", done.stderr[-1500:]


def test_compare_rebuilds_each_runs_items(cards_env, tmp_path):
    """compare rebuilds a run's items with the run's own --data / --image-ids (recorded in metrics.json), and
    refuses two runs of different protocols."""
    from povid_eval.core.errors import InputError
    from povid_eval.report.compare import compare_models

    base, data, models, _ = cards_env
    (models / "tiny2.toml").write_text((models / "tiny.toml").read_text())
    moved_data = tmp_path / "elsewhere"
    shutil.copytree(data, moved_data)
    ids = tmp_path / "three.txt"
    pinned = [x for x in (base / "ids.txt").read_text().split() if x.isdigit()]
    ids.write_text("".join(f"{i}\n" for i in pinned[:3]))

    def says(answer):
        return lambda images, prompts, decoding: [answer for _ in prompts]

    out = tmp_path / "results"
    runner.run(
        "tiny",
        "chair-coco",
        results=out,
        generate=says("A person and a car."),
        progress=False,
        image_ids=ids,
        data=moved_data,
    )
    runner.run("tiny2", "chair-coco", results=out, generate=says("A person."), progress=False, image_ids=ids)
    rows = compare_models("tiny", "tiny2", ["chair-coco"], out, n_resamples=200)
    assert {r["metric"] for r in rows} >= {"CHAIRi", "Recall"}
    runner.run("tiny2", "chair-coco", results=tmp_path / "other", generate=says("A person."), progress=False)
    shutil.rmtree(out / "runs" / "tiny2")
    shutil.copytree(tmp_path / "other" / "runs" / "tiny2", out / "runs" / "tiny2")
    with pytest.raises(InputError, match="ran different protocols"):
        compare_models("tiny", "tiny2", ["chair-coco"], out, n_resamples=200)


def test_compare_real_set_plots_its_own_cards(cards_env, tmp_path, monkeypatch):
    """`compare --bench real` draws its figures from the set's own runs (runs/<model>/chair-coco/...), never
    from the embedded world's folders of the same bench kind (the bug: results/<model>/chair/ was read)."""
    from povid_eval.report import compare, plots

    base, data, models, _ = cards_env
    (models / "tiny2.toml").write_text((models / "tiny.toml").read_text())
    out = tmp_path / "results"
    for model, answer in (("tiny", "A person and a car."), ("tiny2", "A person.")):
        runner.run(model, "chair-coco", results=out, generate=lambda i, p, d, a=answer: [a] * len(p), progress=False)
        decoy = out / "runs" / model / "chair"  # a world run of the same kind, with other numbers
        shutil.copytree(out / "runs" / model / "chair-coco", decoy)
        metrics = json.loads((decoy / "metrics.json").read_text())
        metrics["metrics"]["CHAIRi"] = 0.999
        (decoy / "metrics.json").write_text(json.dumps(metrics))
    loaded = []
    real_load = plots.load_metrics
    monkeypatch.setattr(plots, "load_metrics", lambda m, b, r: loaded.append(b) or real_load(m, b, r))
    written = compare.write_comparison("tiny", "tiny2", ["real/chair-coco"], out)
    assert loaded and set(loaded) == {"chair-coco"}
    assert (out / "plots" / "tiny_vs_tiny2" / "metric_bars.png") in written
