"""Trust: the tool never deletes or overwrites what it did not make, never scores another model's cached answers,
allows one writer per results folder, keeps every output under its root, works from any directory, and reports
a full disk or a read-only folder in one line that a resume repairs. Each test here failed before the trust work
(issue 11) and passes after it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from povid_eval import cards
from povid_eval.cli import main
from povid_eval.core import paths
from povid_eval.core.errors import InputError
from povid_eval.run import results as run_results
from povid_eval.run import runner

ROOT = Path(__file__).resolve().parents[1]


def run_main(capsys, *argv):
    """(exit code, stderr) of the CLI run in-process."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def one_line(err: str, *fragments) -> str:
    """The error is one line (a progress bar drawn before it, on stderr too, is not part of it)."""
    lines = [ln for ln in err.replace("\r", "\n").strip().splitlines() if "%|" not in ln and ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("povid-eval: error: ") and "Traceback" not in err, err
    for f in fragments:
        assert str(f) in lines[0], (f, lines[0])
    return lines[0]


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def says(text):
    return lambda images, prompts, decoding: [text] * len(prompts)


# ------------------------------------------------------------------------------------------- data loss


def test_world_build_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "thesis").mkdir(parents=True)
    (out / "thesis" / "chapter1.tex").write_text("years of work")
    before = tree(out)
    rc, err = run_main(capsys, "world", "build", "--out", out)
    assert rc == 2 and tree(out) == before
    one_line(err, out, "not made by povid-eval")


def test_world_build_replaces_its_own_world(tmp_path, capsys):
    from povid_eval.world import build_world

    out = tmp_path / "w"
    build_world(out, seed=0, n_train=3, n_val=3, n_mme_images=1)
    assert paths.is_ours(out)
    build_world(out, seed=1, n_train=3, n_val=3, n_mme_images=1)  # a world it made: replaced
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


def test_run_data_on_a_world_card_refuses_a_foreign_folder(use_tiny_env, tmp_path, capsys):
    data = tmp_path / "coco"
    (data / "val2014").mkdir(parents=True)
    (data / "val2014" / "COCO_val2014_000000000042.jpg").write_bytes(b"precious")
    before = tree(data)
    rc, err = run_main(capsys, "run", "--bench", "pope", "--model", "tiny", "--data", data, "--results", tmp_path / "r")
    assert rc == 2 and tree(data) == before
    one_line(err, data, "not made by povid-eval")


def test_train_refuses_to_overwrite_a_card_it_did_not_write(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "base.toml").write_text(
        (ROOT / "models" / "base.toml")
        .read_text()
        .replace('path = "models/base"', f'path = "{ROOT / "models" / "base"}"')
    )
    mine = '# my hand-written card, comments and all\npath = "models/base"\n'
    (models / "povid.toml").write_text(mine)
    monkeypatch.setenv("POVID_EVAL_MODELS", str(models))
    for extra in ((), ("--overwrite",)):  # not even with --overwrite: that replaces only what train wrote
        rc, err = run_main(capsys, "train", "--base", "base", "--out", "povid", "--results", tmp_path / "r", *extra)
        assert rc == 2 and (models / "povid.toml").read_text() == mine
        one_line(err, models / "povid.toml", "not written by `povid-eval train`")
    assert not (tmp_path / "r" / "train" / "povid").exists()


def test_train_needs_overwrite_for_a_card_it_wrote_with_other_settings(tmp_path):
    from povid_eval.train import povid

    base = cards.load_model_card("base")
    run_dir = tmp_path / "train" / "x"
    card = povid._planned_card("base", base, "x", "povid", 0, run_dir, run_dir / "stage2" / "adapter", False)
    card_path = tmp_path / "x.toml"
    cards.save_model_card(card, tmp_path)
    request = {"recipe": "povid", "config": {"seed": 0}}
    povid.check_outputs(card_path, card, run_dir, request, overwrite=False)  # the same card again: a resume
    other = povid._planned_card("base", base, "x", "dpo", 0, run_dir, run_dir / "stage1" / "adapter", False)
    with pytest.raises(InputError, match="--overwrite"):
        povid.check_outputs(card_path, other, run_dir, request, overwrite=False)
    povid.check_outputs(card_path, other, run_dir, request, overwrite=True)
    # a training folder made with other settings: refused, then emptied with --overwrite
    paths.claim(tmp_path, "train", "x", kind="train")
    (run_dir / "request.json").write_text(json.dumps({"recipe": "dpo", "config": {"seed": 0}}))
    (run_dir / "stage1" / "checkpoints" / "step-2").mkdir(parents=True)  # something a resume would use
    with pytest.raises(InputError, match=r"other settings \(recipe\)"):
        povid.check_outputs(card_path, card, run_dir, request, overwrite=False)
    povid.check_outputs(card_path, card, run_dir, request, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == [paths.MARKER]


# ------------------------------------------------------------------------------------------- stale answers


@pytest.fixture
def own_model(use_tiny_env, tmp_path, monkeypatch):
    """A model card 'mine' over a copy of the tiny model's folder (so the test may retrain it in place)."""
    root = use_tiny_env
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(root / "tiny", tmp_path / "weights")
    (models / "mine.toml").write_text(f'path = "{tmp_path / "weights"}"\n')
    monkeypatch.setenv("POVID_EVAL_MODELS", str(models))
    return tmp_path / "weights"


def _retrain(folder: Path) -> None:
    """Stand-in for `train --overwrite`: new weights under the same name (same file sizes, new content)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_retrained_model_never_scores_the_old_answers(own_model, tmp_path, capsys):
    out = tmp_path / "results"
    first = runner.run("mine", "pope", results=out, generate=says("Yes"), progress=False)
    _retrain(own_model)
    with pytest.raises(InputError, match="another version of model 'mine'.*--fresh"):
        runner.run("mine", "pope", results=out, generate=says("No"), progress=False)
    rc, err = run_main(capsys, "run", "--bench", "pope", "--model", "mine", "--results", out)
    assert rc == 2
    one_line(err, out / "runs" / "mine" / "pope" / "samples.jsonl", "--fresh")
    fresh = runner.run("mine", "pope", results=out, generate=says("No"), progress=False, fresh=True)
    assert fresh["model_fp"] != first["model_fp"] and fresh["metrics"] != first["metrics"]
    texts = {json.loads(x)["text"] for x in (out / "runs" / "mine" / "pope" / "samples.jsonl").read_text().splitlines()}
    assert texts == {"No"}


def test_compare_refuses_metrics_of_an_earlier_model(own_model, tmp_path, capsys):
    out = tmp_path / "results"
    runner.run("mine", "pope", results=out, generate=says("Yes"), progress=False)
    _retrain(own_model)
    with pytest.raises(InputError, match="another version of model 'mine'"):
        run_results.check_current(cards.load_model_card("mine"), "pope", out)
    rc, err = run_main(capsys, "compare", "mine", "mine", "--bench", "pope", "--results", out)
    assert rc == 2
    one_line(err, out / "runs" / "mine" / "pope" / "metrics.json", "--fresh")


def test_hand_edited_sample_without_key(use_tiny_env, tmp_path, capsys):
    out = tmp_path / "r"
    runner.run("tiny", "pope", results=out, generate=says("Yes"), progress=False)
    samples = out / "runs" / "tiny" / "pope" / "samples.jsonl"
    lines = samples.read_text().splitlines()
    lines[3] = json.dumps({k: v for k, v in json.loads(lines[3]).items() if k != "key"})
    samples.write_text("\n".join(lines) + "\n")
    rc, err = run_main(capsys, "run", "--bench", "pope", "--model", "tiny", "--results", out)
    assert rc == 2
    one_line(err, f"{samples}:4:", "key")


# ------------------------------------------------------------------------------------------- one writer

HOLD = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
    "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid %d' % os.getpid()); print('held', flush=True); time.sleep(600)"
)


def test_second_concurrent_run_exits_and_a_killed_holder_leaves_no_stale_lock(use_tiny_env, tmp_path, capsys):
    out = tmp_path / "r"
    folder = paths.claim(out, "runs", "tiny", "pope", kind="results")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / paths.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, err = run_main(capsys, "run", "--bench", "pope", "--model", "tiny", "--results", out)
        assert rc == 2
        one_line(err, folder, f"pid {holder.pid}")
        assert not (folder / "samples.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a writer killed mid-run: the kernel drops its lock
        holder.wait()
    record = runner.run("tiny", "pope", results=out, generate=says("Yes"), progress=False)
    assert record["n"] == 12


def chair_run(out, *extra) -> list[str]:
    """`python -m povid_eval run` of the tiny model on the tiny world's CHAIR card, one image per batch."""
    return [
        sys.executable,
        "-m",
        "povid_eval",
        "run",
        "--bench",
        "chair",
        "--model",
        "tiny",
        "--batch-size",
        "1",
        *extra,
        "--results",
        str(out),
    ]


def test_two_concurrent_runs_never_duplicate_samples(tiny_env, tmp_path):
    root, variables = tiny_env
    out = tmp_path / "r"
    args = chair_run(out)
    procs = [
        subprocess.Popen(
            args,
            env={**os.environ, **variables},
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # the second waits for nothing: it stops, or finds all done
    for rc, err in results:
        if rc == 2:
            one_line(err, "being written by")
    keys = [json.loads(x)["key"] for x in (out / "runs" / "tiny" / "chair" / "samples.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 6


# ------------------------------------------------------------------------------------------- escapes


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/abs", ".hidden", ""])
def test_card_names_cannot_leave_their_root(use_tiny_env, tmp_path, monkeypatch, capsys, name):
    models = tmp_path / "models"
    models.mkdir()
    (models / "evil.toml").write_text(f'name = {json.dumps(name)}\npath = "x"\n')
    monkeypatch.setenv("POVID_EVAL_MODELS", str(models))
    rc, err = run_main(capsys, "run", "--bench", "pope", "--model", "evil", "--results", tmp_path / "r" / "s")
    assert rc == 2 and not (tmp_path / "r").exists() and not (tmp_path / "x").exists()
    one_line(err, models / "evil.toml", "name")


@pytest.mark.parametrize("out", ["../../x", "/tmp/abs-model", "a/b", "..", "-"])
def test_train_out_is_a_name(tmp_path, capsys, out):
    rc, err = run_main(capsys, "train", "--out", out, "--results", tmp_path / "r")
    assert rc == 2 and not (tmp_path / "r").exists()
    one_line(err, "--out")


def test_inside_refuses_paths_that_leave_the_root(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    assert paths.inside(tmp_path / "root", "a", "b") == (tmp_path / "root" / "a" / "b").resolve()
    for parts in (("..", "x"), ("/etc",), ("link", "x")):
        with pytest.raises(InputError, match="would leave"):
            paths.inside(tmp_path / "root", *parts)


def test_relative_paths_follow_one_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.results_root("rel") == tmp_path / "rel"  # the command line: the current directory
    assert paths.results_root(None) == ROOT / "results"  # a default: the project's own folder
    assert paths.project("data/world") == ROOT / "data" / "world"  # a card: the project root
    assert paths.from_cli("w", "data/world") == tmp_path / "w"


def test_run_from_another_directory_writes_under_its_out(tiny_env, tmp_path):
    root, variables = tiny_env
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "povid_eval", "run", "--bench", "mme", "--model", "tiny", "--results", "res"],
        env={**os.environ, **variables},
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "res" / "runs" / "tiny" / "mme" / "metrics.json").is_file()


# ------------------------------------------------------------------------------------------- disk full, read-only


def _mount_tmpfs(path: Path, size: str, *options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join((f"size={size}",) + options)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 48 KB tmpfs (the test is skipped where this machine does not allow mounting)."""
    mnt = tmp_path / "disk"
    if not _mount_tmpfs(mnt, "48k"):
        pytest.skip("mounting a tmpfs is not allowed here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_is_one_line_and_a_resume_gives_identical_metrics(
    use_tiny_env, tmp_path, small_disk, monkeypatch, capsys
):
    from povid_eval.run import doctor

    check = doctor.disk_check  # the run's own free-space check wants 1 GB; this disk is 48 KB on purpose
    monkeypatch.setattr(doctor, "disk_check", lambda out, need_gb=0: check(out, 0))
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 30_000)  # leaves a few KB: some samples fit, then the disk is full
    args = ("run", "--bench", "chair", "--model", "tiny", "--batch-size", "1", "--results", small_disk / "r", "--json")
    rc, err = run_main(capsys, *args)
    assert rc == 2
    line = one_line(err, "No space left on device", "run the same command again")
    assert str(small_disk) in line
    filler.unlink()  # space freed
    rc, err = run_main(capsys, *args)
    assert rc == 0, err
    resumed = json.loads((small_disk / "r" / "runs" / "tiny" / "chair" / "metrics.json").read_text())
    straight = runner.run("tiny", "chair", results=tmp_path / "straight", progress=False)
    assert resumed["metrics"] == straight["metrics"]
    keys = [
        json.loads(x)["key"]
        for x in (small_disk / "r" / "runs" / "tiny" / "chair" / "samples.jsonl").read_text().split("\n")
        if x
    ]
    assert len(keys) == len(set(keys)) == 6


def test_read_only_results_folder_is_one_line(use_tiny_env, tmp_path, capsys, monkeypatch):
    from povid_eval.run import doctor

    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "4g", "ro"):
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        rc, err = run_main(capsys, "run", "--bench", "pope", "--model", "tiny", "--results", mnt / "r")
        assert rc == 2
        one_line(err, mnt, "read-only file system", "give a folder you can write to")
        # past the run's own check (a folder that turns read-only mid-run): the write fails in one line too
        monkeypatch.setattr(doctor, "disk_check", lambda out, need_gb=0: doctor.Check("disk", True, "skipped"))
        rc, err = run_main(capsys, "run", "--bench", "pope", "--model", "tiny", "--results", mnt / "r")
        assert rc == 2
        one_line(err, mnt / "r", "Read-only file system", "give a folder you can write to")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_storage_errors_name_the_path_of_a_failing_write(tmp_path, monkeypatch):
    import errno

    from povid_eval.core import io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(OSError) as e:
        io.atomic_write_text(tmp_path / "metrics.json", "{}")
    assert e.value.filename == str(tmp_path / "metrics.json") and e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_every_help_exits_zero(capsys):
    """`povid-eval --help` and every subcommand's --help (the parser walked, nested subcommands too)."""
    import argparse

    from povid_eval.cli import build_parser

    def walk(parser, prefix):
        yield prefix
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, prefix + [name])

    commands = list(walk(build_parser(), []))
    assert len(commands) >= 14
    for command in commands:
        with pytest.raises(SystemExit) as e:
            main(command + ["--help"])
        assert e.value.code == 0, command
        assert "usage:" in capsys.readouterr().out


def test_train_from_another_directory(use_tiny_env, tmp_path, monkeypatch, capsys):
    """The world's preference images lie under the project root (cards.ROOT here); the data file keeps them
    relative to it, but training from elsewhere must still find them."""
    root = use_tiny_env
    monkeypatch.setattr(cards, "ROOT", root)
    (tmp_path / "recipe.toml").write_text(
        "images = 4\ngen_batch_size = 4\nmax_new_tokens = 8\n"
        "[stage1]\nsteps = 1\nbatch_size = 2\nwarmup = 0\n"
        "[stage2]\nsteps = 1\nbatch_size = 2\nwarmup = 0\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    monkeypatch.setenv("POVID_EVAL_MODELS", str(models))
    rc, err = run_main(
        capsys,
        "train",
        "--base",
        "tiny",
        "--out",
        "t",
        "--world",
        root / "world",
        "--results",
        "res",
        "--config",
        tmp_path / "recipe.toml",
    )
    assert rc == 0, err
    assert (elsewhere / "res" / "train" / "t" / "stage2" / "adapter").is_dir() and (models / "t.toml").is_file()
    data = next((elsewhere / "res" / "train" / "t").glob("preferences.*.jsonl")).read_text()
    assert '"image": "world/images/train/' in data  # relative to the project root, as the paths rule says
    info = json.loads((elsewhere / "res" / "train" / "t" / "train_info.json").read_text())
    assert set(info["answer_lengths"]) == {"chosen", "rejected_text", "rejected_noisy"}


def test_leaderboard_refuses_metrics_of_an_earlier_model(own_model, tmp_path, capsys):
    out = tmp_path / "results"
    for bench in ("chair", "pope", "mme", "mmhal"):
        runner.run("mine", bench, results=out, generate=says("Yes"), progress=False)
    rc, err = run_main(capsys, "leaderboard", "--results", out, "--frontier-model", "mine")
    assert rc == 0, err
    _retrain(own_model)
    rc, err = run_main(capsys, "leaderboard", "--results", out, "--frontier-model", "mine")
    assert rc == 2
    one_line(err, "metrics.json", "another version of model 'mine'", "--fresh")


@pytest.mark.parametrize(
    "sig, code, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")], ids=["int", "term"]
)
def test_a_stop_signal_stops_cleanly_and_the_run_resumes(tiny_env, tmp_path, sig, code, line):
    """SIGINT (Ctrl-C) or SIGTERM (kill, a scheduler) mid-run: its exit code with one line, the lock released, and
    the resumed run has every sample once."""
    root, variables = tiny_env
    out = tmp_path / "r"
    args = chair_run(out, "--limit", "24")
    env = {**os.environ, **variables}
    # a shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT: give the run the
    # default, as a terminal's foreground job has, whoever started the tests
    proc = subprocess.Popen(
        args,
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    samples = out / "runs" / "tiny" / "chair" / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not samples.exists() or samples.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(sig)
    err = proc.communicate()[1]
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"povid-eval: {line}" and "Traceback" not in err, err
    resumed = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    keys = [json.loads(x)["key"] for x in samples.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 24


def test_sigterm_during_a_world_build_leaves_no_folder(tmp_path):
    """A world build stopped by SIGTERM removes its temp folder and leaves no world: exit 143, one line."""
    out = tmp_path / "w"
    args = [sys.executable, "-m", "povid_eval.world", "--out", out, "--n-train", "3000", "--n-val", "10"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.is_file() for t in tmp_path.glob(".w.tmp-*") for p in t.rglob("*.png")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate()[1]
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "povid-eval: terminated" and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_world_build_killed_outright_is_cleaned_up_by_the_next_build(tmp_path):
    """SIGKILL runs no clean-up: the temp folder stays, unlocked (the kernel drops the dead build's flock); the
    next build removes it, says so, and leaves the world alone in the folder."""
    out = tmp_path / "w"
    args = [sys.executable, "-m", "povid_eval.world", "--out", out, "--n-train", "3000", "--n-val", "10"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.is_file() for t in tmp_path.glob(".w.tmp-*") for p in t.rglob("*.png")):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    (left,) = tmp_path.glob(".w.tmp-*")
    past = time.time() - 60  # as if the crash were a minute ago (a folder touched in the last seconds is spared)
    os.utime(left, (past, past))
    rebuilt = subprocess.run([*args[:-4], "--n-train", "10", "--n-val", "10"], capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"removed {left}, left by a killed build" in rebuilt.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
