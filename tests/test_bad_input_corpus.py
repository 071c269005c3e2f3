"""A corpus of bad input for every subcommand of the CLI, each case held to the project's promise for it.

Contract (DESIGN.md, "Trust"), asserted by every case:
- exit code 2;
- stderr is exactly ONE line that starts with "povid-eval: error: ", and no "Traceback" anywhere (a finished
  tqdm progress bar is not counted as a line: a case may reach generation when its bad input is only
  discovered there; but a bar left open, with the error glued to it on the same terminal line, fails);
- that line names where the problem is: the file (``FILE:LINE:`` for jsonl / txt files), the key, field or
  record (``threads``, ``decoding.max_new_tokens``, ``record 3``), or the flag of a command-line value
  (``--batch-size``); fragments are kept generic: the messages themselves are the implementation's;
- nothing half-written: an output the case names (``--save-details FILE``, ``--out DIR``, ``--results DIR``,
  a card) does not exist afterwards, or (a new results folder) holds nothing but the tool's own markers and
  locks, or (an existing results folder, a file in the way) is byte-for-byte unchanged.

Cases run the CLI in-process (``povid_eval.cli.main``) against the tiny environment of conftest.py
(``tiny_env``: small world, tiny random LLaVA, bench cards with small limits), with private copies of its
model and bench cards, a private cache ($POVID_EVAL_CACHE) and every output in tmp_path. A few cases
(a 30 MB caption) run ``python -m povid_eval`` in a subprocess with a wall-time cap.

Categories (one test function each, so that ``pytest -q`` counts them apart):
  1. test_encoding         invalid UTF-8 (and not-gzip .gz) in every file the CLI reads
  2. test_record_shapes    records of the wrong shape: ids of the wrong type, non-objects, missing fields,
                           non-string texts, wrong top level, empty files, folders, duplicates, MME columns,
                           POPE labels, MMHal reply indices, a 30 MB caption
  3. test_model_cards      model card values of the wrong type or range (and train --config recipe TOMLs)
  4. test_bench_cards      bench card values of the wrong type or range, missing [files] keys, missing data
  5. test_cli_values       command-line values: counts, biases, stages, --out that is a file, flags that do not
                           apply, --image-ids files, --data, unknown names, names that leave their root
  6. test_results_caches   results and caches: samples.jsonl, metrics.json, frontier.json, the COCO
                           ground-truth cache, judge and chat caches, train checkpoints and logs
  7. test_images           images that cannot be used: 900 megapixels, truncated, text, empty, a folder
  8. test_preferences      train --preferences: our jsonl and the POVID release json
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
PREFIX = "povid-eval: error: "
MARKERS = {".povid-eval.json", ".lock"}
TQDM = re.compile(r"\|\s*\d+/\d+\s*\[|\d+%\|")
BAD = b"\xff\xfe\xc3("  # never valid UTF-8
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class AnyOf(tuple):
    """A location fragment satisfied by any one of its alternatives."""

    def __new__(cls, *alternatives):
        return super().__new__(cls, alternatives)


def at(path, line: int) -> str:
    """The ``FILE:LINE:`` a jsonl / txt problem must be reported at."""
    return f"{path}:{line}:"


# ============================================================================================ helpers


def jsonl(*rows) -> bytes:
    """Lines of a jsonl file: bytes and str rows are written as they are, anything else as JSON."""
    out = b""
    for r in rows:
        if isinstance(r, bytes):
            out += r + b"\n"
        elif isinstance(r, str):
            out += r.encode() + b"\n"
        else:
            out += json.dumps(r).encode() + b"\n"
    return out


def toml_str(value) -> str:
    return json.dumps(str(value))


def snapshot(path: Path):
    """Content of a file, or {relative path: sha256} of a tree (locks left out), or None when absent."""
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(path.rglob("*"))
        if p.name != ".lock"
    }


@contextmanager
def environ(values: dict):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: str(v) for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def invoke(argv) -> int:
    """main(argv) as the console script runs it: argparse's SystemExit gives the exit code."""
    from povid_eval.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        if isinstance(e.code, str):
            sys.stderr.write(e.code + "\n")
            return 1
        return 0 if e.code is None else e.code


def huge_png(path: Path, side: int = 30_000) -> Path:
    """A valid 1-bit greyscale PNG of side x side pixels (900 megapixels at 30,000), about 100 KB on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(1)
    block = (b"\x00" * (1 + (side + 7) // 8)) * 1000
    body = [comp.compress(block) for _ in range(side // 1000)] + [comp.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b""))
    return path


FAST_TOP = {"images": "4", "max_new_tokens": "4", "gen_batch_size": "4"}
FAST_STAGE = {"steps": "1", "batch_size": "2", "warmup": "0", "checkpoint_every": "1"}


def recipe_text(top: dict | None = None, stage1: dict | None = None, stage1_table: bool = True) -> str:
    """The fast recipe TOML, with raw TOML values of ``top`` / ``stage1`` keys replacing or adding to its own."""
    lines = [f"{k} = {v}" for k, v in {**FAST_TOP, **(top or {})}.items()]
    if stage1_table:
        lines += ["[stage1]"] + [f"{k} = {v}" for k, v in {**FAST_STAGE, **(stage1 or {})}.items()]
    lines += ["[stage2]"] + [f"{k} = {v}" for k, v in FAST_STAGE.items()]
    return "\n".join(lines) + "\n"


# ============================================================================================ session artefacts


class Corpus:
    """Things several cases need and that cost a model call, built once per session on first use."""

    def __init__(self, factory, tiny_env):
        self.factory = factory
        self.root, self.variables = tiny_env
        self.world = self.root / "world"
        self._built: dict = {}

    def _env(self, **extra):
        return environ({**self.variables, **extra})

    def train_images(self) -> list[Path]:
        return sorted((self.world / "images" / "train").glob("*.png"))

    def recipe(self) -> Path:
        """A recipe TOML that makes training take seconds (2 records a step, 1 step a stage)."""
        if "recipe" not in self._built:
            path = self.factory.mktemp("recipe") / "fast.toml"
            path.write_text(recipe_text())
            self._built["recipe"] = path
        return self._built["recipe"]

    def preference(self, i: int) -> dict:
        images = self.train_images()
        return {
            "id": f"p{i}",
            "image": str(images[i % len(images)]),
            "prompt": "Describe this image.",
            "chosen": "A dog sits on a couch.",
            "rejected_text": "A cat sits on a couch.",
        }

    def preferences(self) -> Path:
        if "prefs" not in self._built:
            path = self.factory.mktemp("prefs") / "prefs.jsonl"
            path.write_bytes(jsonl(*[self.preference(i) for i in range(4)]))
            self._built["prefs"] = path
        return self._built["prefs"]

    def chair_results(self) -> Path:
        """A results folder holding a finished run of tiny on the chair card."""
        if "chair" not in self._built:
            from povid_eval.run import runner

            out = self.factory.mktemp("chair-results") / "results"
            with self._env():
                runner.run("tiny", "chair", results=out, progress=False)
            self._built["chair"] = out
        return self._built["chair"]

    def trained(self) -> tuple[Path, list[str]]:
        """(results folder, train argv without --results) of a finished 2-step DPO training named tr."""
        if "trained" not in self._built:
            base = self.factory.mktemp("trained")
            shutil.copytree(self.root / "models", base / "models")
            argv = [
                "train",
                "--base",
                "tiny",
                "--out",
                "tr",
                "--recipe",
                "dpo",
                "--config",
                str(self.recipe()),
                "--preferences",
                str(self.preferences()),
                "--world",
                str(self.world),
            ]
            with self._env(POVID_EVAL_MODELS=base / "models", POVID_EVAL_CACHE=base / "cache"):
                rc = invoke(argv + ["--results", str(base / "results")])
            if rc != 0:
                raise RuntimeError(f"setup: the reference training failed (exit {rc})")
            self._built["trained"] = (base / "results", argv)
        return self._built["trained"]

    def big_png(self) -> Path:
        if "png" not in self._built:
            self._built["png"] = huge_png(self.factory.mktemp("png") / "huge.png")
        return self._built["png"]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, tiny_env):
    return Corpus(tmp_path_factory, tiny_env)


# ============================================================================================ the per-case context


class Ctx:
    """What a case's setup works with: a private tmp folder, private copies of the tiny cards, the session
    corpus; and what the run afterwards must find (absent outputs, unchanged files, clean folders)."""

    def __init__(self, tmp: Path, corpus: Corpus, monkeypatch, capsys):
        self.tmp, self.corpus, self.mp, self.capsys = tmp, corpus, monkeypatch, capsys
        self.env_root = corpus.root
        self.world = corpus.world
        self.tiny = corpus.root / "tiny"
        self.models = tmp / "cards" / "models"
        self.benches = tmp / "cards" / "benchmarks"
        self.cache = tmp / "cache"
        self.timeout: float | None = None  # set: run as a subprocess, with this wall-time cap
        self.finalizers: list = []
        self._absent: list[Path] = []
        self._clean: list[Path] = []
        self._unchanged: list[Path] = []
        self._snapshots: dict = {}

    # ---- files
    def write(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def folder(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def setenv(self, name: str, value) -> None:
        self.mp.setenv(name, str(value))

    # ---- what must hold afterwards
    def absent(self, path: Path) -> Path:
        """An output that must not exist after the case."""
        self._absent.append(Path(path))
        return Path(path)

    def clean(self, path: Path) -> Path:
        """An output folder: absent afterwards, or holding nothing but the tool's markers and locks."""
        self._clean.append(Path(path))
        return Path(path)

    def unchanged(self, path: Path) -> Path:
        """A file or tree that must be exactly as the setup left it."""
        self._unchanged.append(Path(path))
        return Path(path)

    def out(self, name: str = "results") -> Path:
        """A new results folder for --out / --results."""
        return self.clean(self.tmp / name)

    def take_snapshots(self) -> None:
        self._snapshots = {p: snapshot(p) for p in self._unchanged}

    def check_outputs(self) -> None:
        for p in self._absent:
            assert not p.exists(), f"half-written output left behind: {p}"
        for p in self._clean:
            if p.exists():
                left = [str(f.relative_to(p)) for f in p.rglob("*") if f.is_file() and f.name not in MARKERS]
                assert not left, f"half-written output left behind in {p}: {left[:5]}"
        for p, before in self._snapshots.items():
            assert snapshot(p) == before, f"{p} was changed by a failed command"

    # ---- cards
    def model_card(self, name: str, text: str) -> Path:
        path = self.models / f"{name}.toml"
        path.write_text(text)
        return path

    def tiny_card(self, extra: str = "", generation: str = "") -> str:
        text = f"path = {toml_str(self.tiny)}\n{extra}\n"
        if generation:
            text += f"[generation]\n{generation}\n"
        return text

    def bench_text(self, bench: str) -> str:
        return (self.env_root / "benchmarks" / f"{bench}.toml").read_text()

    def bench_card(self, name: str, text: str, folder: Path | None = None) -> Path:
        path = (folder or self.benches) / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def edit_bench(self, bench: str, old: str, new: str) -> str:
        text = self.bench_text(bench)
        assert old in text, f"setup: {old!r} not in the {bench} card"
        return text.replace(old, new, 1)

    def world_copy(self) -> Path:
        """A private copy of the tiny world (to break its files); the bench cards are pointed at it."""
        copy = self.tmp / "world"
        if not copy.exists():
            shutil.copytree(self.world, copy)
            for card in self.benches.glob("*.toml"):
                card.write_text(card.read_text().replace(toml_str(self.world), toml_str(copy)))
        return copy

    def recipe(self) -> Path:
        return self.corpus.recipe()


@pytest.fixture
def ctx(tmp_path, corpus, monkeypatch, capsys):
    c = Ctx(tmp_path.resolve(), corpus, monkeypatch, capsys)
    shutil.copytree(corpus.root / "models", c.models)
    shutil.copytree(corpus.root / "benchmarks", c.benches)
    monkeypatch.setenv("POVID_EVAL_MODELS", str(c.models))
    monkeypatch.setenv("POVID_EVAL_BENCHMARKS", str(c.benches))
    monkeypatch.setenv("POVID_EVAL_CACHE", str(c.cache))
    for name in PROXY_VARS + ("OPENAI_API_KEY",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(c.tmp)
    yield c
    for f in reversed(c.finalizers):
        f()


def stderr_lines(err: str) -> list[str]:
    """The lines a terminal shows, without finished progress bars: a tqdm segment (between carriage returns) is
    dropped, but not one that the error message was glued to (a bar left open)."""
    out = []
    for line in err.split("\n"):
        kept = [seg for seg in line.split("\r") if seg.strip() and not (TQDM.search(seg) and PREFIX not in seg)]
        if kept:
            out.append("".join(kept))
    return out


def run_case(setup, ctx: Ctx) -> None:
    argv, where = setup(ctx)
    ctx.capsys.readouterr()  # whatever the setup printed
    ctx.take_snapshots()
    if ctx.timeout is not None:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "povid_eval", *map(str, argv)],
                capture_output=True,
                text=True,
                cwd=ctx.tmp,
                timeout=ctx.timeout,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"no answer within {ctx.timeout:g} s (expected a one-line refusal)")
        rc, err = proc.returncode, proc.stderr
    else:
        rc = invoke(argv)
        err = ctx.capsys.readouterr().err
    lines = stderr_lines(err)
    assert "Traceback" not in err, err[-3000:]
    assert rc == 2, f"exit code {rc}, stderr: {err[-2000:]!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {lines[:3]} ... {lines[-2:]}"
    line = lines[0]
    assert line.startswith(PREFIX), line
    for fragment in where:
        options = [str(f) for f in fragment] if isinstance(fragment, AnyOf) else [str(fragment)]
        assert any(o in line for o in options), f"the error does not name {' or '.join(options)!r}: {line}"
    ctx.check_outputs()


CATEGORIES = (
    "encoding",
    "records",
    "model_cards",
    "bench_cards",
    "cli_values",
    "results_caches",
    "images",
    "preferences",
)
CASES: dict[str, list] = {c: [] for c in CATEGORIES}


def case(category: str, cid: str):
    def register(fn):
        assert cid not in {p.id for ps in CASES.values() for p in ps}, cid
        CASES[category].append(pytest.param(fn, id=cid))
        return fn

    return register


# ============================================================================================ per-bench inputs

GT = {"1": ["dog", "couch"], "2": ["cat"], "3": ["person", "car"]}
CAPTIONS = [
    {"image_id": 1, "caption": "A dog sleeps on a couch."},
    {"image_id": 2, "caption": "A cat."},
    {"image_id": 3, "caption": "A person next to a car."},
]


def gt_file(ctx: Ctx) -> Path:
    return ctx.write("gt_objects.json", json.dumps(GT))


def chair(ctx: Ctx, captions: Path, gt: Path | None = None, *extra) -> list:
    details = ctx.absent(ctx.tmp / "out" / "details.jsonl")
    return [
        "score",
        "chair",
        "--captions",
        captions,
        "--gt-objects",
        gt or gt_file(ctx),
        "--save-details",
        details,
        "--json",
        *extra,
    ]


def chair_lines(ctx: Ctx, bad, name: str = "captions.jsonl") -> tuple[list, Path]:
    """A captions jsonl whose line 2 is ``bad``."""
    caps = ctx.write(name, jsonl(CAPTIONS[0], bad, CAPTIONS[2]))
    return chair(ctx, caps), caps


def coco_annotations(ctx: Ctx) -> Path:
    ann = ctx.tmp / "annotations"
    if not ann.exists():
        ann.mkdir()
        for name in ("instances_val.json", "captions_val.json"):
            shutil.copy(ctx.world / "annotations" / name, ann / name)
    return ann


def world_val_ids(ctx: Ctx) -> list[int]:
    data = json.loads((ctx.world / "annotations" / "instances_val.json").read_text())
    return sorted(im["id"] for im in data["images"])


def coco_chair(ctx: Ctx, captions: Path | None = None) -> list:
    ann = coco_annotations(ctx)
    if captions is None:
        ids = world_val_ids(ctx)
        captions = ctx.write(
            "captions.jsonl", jsonl(*[{"image_id": i, "caption": "A cup on a table."} for i in ids[:3]])
        )
    details = ctx.absent(ctx.tmp / "out" / "details.jsonl")
    return ["score", "chair", "--captions", captions, "--coco-annotations", ann, "--save-details", details, "--json"]


POPE_QUESTIONS = [
    {"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "category": "random"},
    {"question_id": 2, "image": "a.jpg", "text": "Is there a cat in the image?", "category": "random"},
    {"question_id": 3, "image": "b.jpg", "text": "Is there a car in the image?", "category": "random"},
]
POPE_LABELS = [
    {"question_id": q["question_id"], "image": q["image"], "text": q["text"], "label": label}
    for q, label in zip(POPE_QUESTIONS, ("yes", "no", "yes"))
]
POPE_ANSWERS = [{"question_id": 1, "text": "Yes"}, {"question_id": 2, "text": "No"}, {"question_id": 3, "text": "Yes"}]


def pope(ctx: Ctx, answers=None, questions=None, labels=None) -> tuple[list, dict]:
    """score pope on three questions; each part may be replaced by raw bytes."""
    files = {
        "answers": ctx.write("pope/answers.jsonl", answers if answers is not None else jsonl(*POPE_ANSWERS)),
        "questions": ctx.write("pope/questions.jsonl", questions if questions is not None else jsonl(*POPE_QUESTIONS)),
        "labels": ctx.folder("pope/labels"),
    }
    files["label_file"] = files["labels"] / "coco_pope_random.json"
    files["label_file"].write_bytes(labels if labels is not None else jsonl(*POPE_LABELS))
    return [
        "score",
        "pope",
        "--answers",
        files["answers"],
        "--questions",
        files["questions"],
        "--labels-dir",
        files["labels"],
        "--json",
    ], files


MME_Q = (
    "Is there a dog in the image? Please answer yes or no.",
    "Is there a cat in the image? Please answer yes or no.",
)
MME_RESULTS = [
    f"a.jpg\t{MME_Q[0]}\tYes\tYes",
    f"a.jpg\t{MME_Q[1]}\tNo\tNo",
    f"b.jpg\t{MME_Q[0]}\tNo\tYes",
    f"b.jpg\t{MME_Q[1]}\tYes\tYes",
]
SUFFIX = "\nAnswer the question using a single word or phrase."
MME_ANSWERS = [
    {"question_id": f"existence/{img}", "prompt": q.replace(" Please answer yes or no.", "") + SUFFIX, "text": t}
    for img, q, t in (
        ("a.jpg", MME_Q[0], "Yes"),
        ("a.jpg", MME_Q[1], "No"),
        ("b.jpg", MME_Q[0], "No"),
        ("b.jpg", MME_Q[1], "Yes"),
    )
]


def mme_results(ctx: Ctx, content: bytes, name: str = "existence.txt") -> tuple[list, Path]:
    folder = ctx.folder("mme_results")
    path = folder / name
    path.write_bytes(content)
    return ["score", "mme", "--results-dir", folder, "--json"], path


def mme_llava(
    ctx: Ctx, answers: bytes | None = None, gt: bytes | None = None, questions: bytes | None = None
) -> tuple[list, dict]:
    gt_dir = ctx.folder("mme_gt")
    files = {
        "gt": gt_dir / "existence.txt",
        "answers": ctx.write("mme_answers.jsonl", answers if answers is not None else jsonl(*MME_ANSWERS)),
    }
    default = "".join(r.rsplit("\t", 1)[0] + "\n" for r in MME_RESULTS).encode()
    files["gt"].write_bytes(gt if gt is not None else default)
    argv = ["score", "mme", "--answers", files["answers"], "--ground-truth-dir", gt_dir, "--json"]
    if questions is not None:
        files["questions"] = ctx.write("mme_questions.jsonl", questions)
        argv += ["--questions", files["questions"]]
    return argv, files


def mmhal_template() -> list[dict]:
    return json.loads((FIXTURES / "mmhal" / "response_template.json").read_text())


def mmhal_responses(ctx: Ctx, records: list | None = None, raw: bytes | None = None) -> Path:
    if records is None:
        records = [r | {"model_answer": "There is a dog."} for r in mmhal_template()]
    return ctx.write("mmhal/responses.json", raw if raw is not None else json.dumps(records))


def mmhal_replies(ctx: Ctx, rows=None, raw: bytes | None = None) -> Path:
    if rows is None:
        rows = [{"index": i, "reply": "Rating: 4"} for i in range(96)]
    return ctx.write("mmhal/replies.jsonl", raw if raw is not None else jsonl(*rows))


def mmhal(ctx: Ctx, responses: Path | None = None, replies: Path | None = None) -> list:
    return [
        "score",
        "mmhal",
        "--responses",
        responses or mmhal_responses(ctx),
        "--judge-replies",
        replies or mmhal_replies(ctx),
        "--json",
    ]


def world_mmhal_responses(ctx: Ctx, change=None) -> Path:
    """The tiny world's MMHal template with answers filled (the rule judge is valid on it); ``change(records)``."""
    template = json.loads((ctx.world / "mmhal" / "template.json").read_text())
    records = [r | {"model_answer": "There is a cup."} for r in template]
    if change:
        change(records)
    return ctx.write("mmhal/world_responses.json", json.dumps(records))


def run(ctx: Ctx, bench: str = "chair", *extra, model: str = "tiny") -> list:
    return ["run", "--bench", bench, "--model", model, "--results", ctx.out(), *extra]


def train(ctx: Ctx, *extra, prefs: Path | None = None, out: str = "tr", recipe: str = "dpo") -> list:
    """train argv that finishes in seconds if nothing stops it (fast recipe, given preferences)."""
    ctx.absent(ctx.models / f"{out}.toml")
    argv = ["train", "--base", "tiny", "--out", out, "--recipe", recipe, "--results", ctx.out(), "--world", ctx.world]
    if "--config" not in extra:
        argv += ["--config", ctx.recipe()]
    if "--preferences" not in extra:
        argv += ["--preferences", prefs or ctx.corpus.preferences()]
    return argv + list(extra)


def prefs_file(ctx: Ctx, bad, name: str = "prefs.jsonl") -> Path:
    """A preference jsonl whose line 2 is ``bad``."""
    return ctx.write(name, jsonl(ctx.corpus.preference(0), bad, ctx.corpus.preference(2)))


# ============================================================================================ 1. encoding


@case("encoding", "chair-captions-jsonl-invalid-utf8")
def _(ctx):
    caps = ctx.write("captions.jsonl", jsonl(CAPTIONS[0], b'{"image_id": 2, "caption": "A c' + BAD + b't."}'))
    return chair(ctx, caps), [at(caps, 2)]


@case("encoding", "chair-captions-jsonl-invalid-utf8-after-4k")
def _(ctx):
    rows = [CAPTIONS[i % 3] for i in range(120)] + [b'{"image_id": 1, "caption": "' + BAD + b'"}']
    caps = ctx.write("captions.jsonl", jsonl(*rows))
    return chair(ctx, caps), [at(caps, 121)]


@case("encoding", "chair-captions-json-list-invalid-utf8")
def _(ctx):
    caps = ctx.write("captions.json", b'[{"image_id": 1, "caption": "A d' + BAD + b'g."}]')
    return chair(ctx, caps), [caps]


@case("encoding", "chair-captions-jsonl-gz-not-gzip")
def _(ctx):
    caps = ctx.write("captions.jsonl.gz", jsonl(*CAPTIONS))
    return chair(ctx, caps), [caps]


@case("encoding", "chair-captions-jsonl-gz-invalid-utf8")
def _(ctx):
    bad = b'{"image_id": 2, "caption": "' + BAD + b'"}'
    caps = ctx.write("captions.jsonl.gz", gzip.compress(jsonl(CAPTIONS[0], bad)))
    return chair(ctx, caps), [at(caps, 2)]


@case("encoding", "chair-gt-objects-invalid-utf8")
def _(ctx):
    gt = ctx.write("gt.json", b'{"1": ["d' + BAD + b'g"]}')
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("encoding", "chair-gt-objects-json-gz-not-gzip")
def _(ctx):
    gt = ctx.write("gt.json.gz", json.dumps(GT))
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("encoding", "chair-gt-objects-json-gz-truncated")
def _(ctx):
    gt = ctx.write("gt.json.gz", gzip.compress(json.dumps(GT).encode() * 50)[:60])
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("encoding", "chair-gt-objects-json-gz-invalid-utf8")
def _(ctx):
    gt = ctx.write("gt.json.gz", gzip.compress(b'{"1": ["d' + BAD + b'g"]}'))
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("encoding", "chair-coco-instances-invalid-utf8")
def _(ctx):
    ann = coco_annotations(ctx)
    path = ann / "instances_val.json"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"person"', b'"pers' + BAD + b'"', 1))
    return coco_chair(ctx), [path]


@case("encoding", "chair-coco-captions-invalid-utf8")
def _(ctx):
    ann = coco_annotations(ctx)
    path = ann / "captions_val.json"
    data = path.read_bytes()
    i = data.index(b'"caption"') + len(b'"caption"')
    i = data.index(b'"', i) + 1
    path.write_bytes(data[:i] + BAD + data[i:])
    return coco_chair(ctx), [path]


@case("encoding", "pope-answers-invalid-utf8")
def _(ctx):
    argv, f = pope(ctx, answers=jsonl(POPE_ANSWERS[0], b'{"question_id": 2, "text": "N' + BAD + b'"}'))
    return argv, [at(f["answers"], 2)]


@case("encoding", "pope-questions-invalid-utf8")
def _(ctx):
    bad = json.dumps(POPE_QUESTIONS[1]).encode().replace(b"cat", b"c" + BAD)
    argv, f = pope(ctx, questions=jsonl(POPE_QUESTIONS[0], bad, POPE_QUESTIONS[2]))
    return argv, [at(f["questions"], 2)]


@case("encoding", "pope-labels-invalid-utf8")
def _(ctx):
    bad = json.dumps(POPE_LABELS[1]).encode().replace(b'"no"', b'"n' + BAD + b'"')
    argv, f = pope(ctx, labels=jsonl(POPE_LABELS[0], bad, POPE_LABELS[2]))
    return argv, [at(f["label_file"], 2)]


@case("encoding", "mme-results-txt-invalid-utf8")
def _(ctx):
    rows = [r.encode() for r in MME_RESULTS]
    rows[1] = rows[1].replace(b"cat", b"c" + BAD)
    argv, path = mme_results(ctx, jsonl(*rows))
    return argv, [at(path, 2)]


@case("encoding", "mme-ground-truth-txt-invalid-utf8")
def _(ctx):
    rows = [r.rsplit("\t", 1)[0].encode() for r in MME_RESULTS]
    rows[1] = rows[1].replace(b"cat", b"c" + BAD)
    argv, f = mme_llava(ctx, gt=jsonl(*rows))
    return argv, [at(f["gt"], 2)]


@case("encoding", "mme-answers-invalid-utf8")
def _(ctx):
    rows = [json.dumps(r).encode() for r in MME_ANSWERS]
    rows[1] = rows[1].replace(b'"No"', b'"N' + BAD + b'"')
    argv, f = mme_llava(ctx, answers=jsonl(*rows))
    return argv, [at(f["answers"], 2)]


@case("encoding", "mme-questions-invalid-utf8")
def _(ctx):
    rows = [json.dumps({"question_id": a["question_id"], "text": a["prompt"]}).encode() for a in MME_ANSWERS]
    rows[1] = rows[1].replace(b"cat", b"c" + BAD)
    argv, f = mme_llava(ctx, questions=jsonl(*rows))
    return argv, [at(f["questions"], 2)]


@case("encoding", "mmhal-responses-invalid-utf8")
def _(ctx):
    data = json.dumps([r | {"model_answer": "A dog."} for r in mmhal_template()]).encode()
    responses = mmhal_responses(ctx, raw=data.replace(b"A dog.", b"A d" + BAD + b"g.", 1))
    return mmhal(ctx, responses=responses), [responses]


@case("encoding", "mmhal-judge-replies-invalid-utf8")
def _(ctx):
    rows = [json.dumps({"index": i, "reply": "Rating: 4"}).encode() for i in range(96)]
    rows[1] = rows[1].replace(b"Rating", b"Rat" + BAD)
    replies = mmhal_replies(ctx, raw=jsonl(*rows))
    return mmhal(ctx, replies=replies), [at(replies, 2)]


@case("encoding", "mmhal-judge-prompt-invalid-utf8")
def _(ctx):
    prompt = ctx.write("judge_prompt.txt", b"{} {} {} " + BAD + b" {}")
    return [
        "score",
        "mmhal",
        "--responses",
        mmhal_responses(ctx),
        "--judge",
        "openai",
        "--judge-model",
        "m",
        "--judge-base-url",
        "http://127.0.0.1:9/v1",
        "--judge-prompt",
        prompt,
    ], [prompt]


@case("encoding", "run-image-ids-invalid-utf8")
def _(ctx):
    ids = world_val_ids(ctx)
    path = ctx.write("ids.txt", f"{ids[0]}\n".encode() + BAD + b"\n")
    return run(ctx, "chair", "--image-ids", path), [at(path, 2)]


@case("encoding", "train-preferences-invalid-utf8")
def _(ctx):
    prefs = prefs_file(ctx, json.dumps(ctx.corpus.preference(1)).encode().replace(b"couch", b"cou" + BAD))
    return train(ctx, prefs=prefs), [at(prefs, 2)]


@case("encoding", "train-povid-release-json-invalid-utf8")
def _(ctx):
    release = ctx.write("povid_release.json", b'[{"id": "1", "image": "a.png", "conversations": "' + BAD + b'"}]')
    return train(ctx, "--image-root", ctx.folder("images"), prefs=release), [release]


@case("encoding", "train-config-invalid-utf8")
def _(ctx):
    cfg = ctx.write("recipe.toml", b"images = 4\n# caf" + BAD + b"\n")
    return train(ctx, "--config", cfg), [cfg]


@case("encoding", "model-card-invalid-utf8")
def _(ctx):
    card = ctx.model_card("bad", "")
    card.write_bytes(ctx.tiny_card().encode() + b"# " + BAD + b"\n")
    return run(ctx, "chair", model="bad"), [card]


@case("encoding", "bench-card-invalid-utf8")
def _(ctx):
    card = ctx.bench_card("bad", "")
    card.write_bytes(ctx.bench_text("chair").encode() + b"\n# " + BAD + b"\n")
    return run(ctx, "bad"), [card]


@case("encoding", "doctor-bench-card-invalid-utf8")
def _(ctx):
    card = ctx.bench_card("bad", "")
    card.write_bytes(ctx.bench_text("pope").encode().replace(b'variant = "llava"', b'variant = "ll' + BAD + b'"'))
    return ["doctor", "--bench", "bad", "--results", ctx.out()], [card]


@case("encoding", "perf-captions-invalid-utf8")
def _(ctx):
    caps = ctx.write("captions.jsonl", jsonl(CAPTIONS[0], b'{"image_id": 2, "caption": "' + BAD + b'"}'))
    return ["perf", "--captions", caps, "--gt-objects", gt_file(ctx), "--json"], [at(caps, 2)]


@case("encoding", "leaderboard-metrics-invalid-utf8")
def _(ctx):
    out = ctx.tmp / "lb"
    shutil.copytree(ctx.corpus.chair_results(), out)
    metrics = out / "runs" / "tiny" / "chair" / "metrics.json"
    metrics.write_bytes(metrics.read_bytes().replace(b'"chair"', b'"ch' + BAD + b'"', 1))
    ctx.unchanged(out)
    return ["leaderboard", "--results", out], [metrics]


# ============================================================================================ 2. record shapes

for _cid, _bad in [
    ("image-id-list", {"image_id": [2], "caption": "A cat."}),
    ("image-id-object", {"image_id": {"id": 2}, "caption": "A cat."}),
    ("image-id-null", {"image_id": None, "caption": "A cat."}),
    ("image-id-float", {"image_id": 2.5, "caption": "A cat."}),
    ("image-id-bool", {"image_id": True, "caption": "A cat."}),
    ("record-number", 5),
    ("record-list", [2, "A cat."]),
    ("record-string", '"A cat."'),
    ("record-null", "null"),
    ("missing-caption", {"image_id": 2}),
    ("missing-image-id", {"caption": "A cat."}),
    ("caption-int", {"image_id": 2, "caption": 5}),
    ("caption-null", {"image_id": 2, "caption": None}),
    ("caption-list", {"image_id": 2, "caption": ["A", "cat"]}),
    ("line-not-json", '{"image_id": 2, "caption": "A cat.'),
]:

    @case("records", f"chair-captions-{_cid}")
    def _(ctx, bad=_bad):
        argv, caps = chair_lines(ctx, bad)
        return argv, [at(caps, 2)]


@case("records", "chair-captions-custom-key-missing")
def _(ctx):
    argv, caps = chair_lines(ctx, CAPTIONS[1])
    return argv + ["--caption-key", "text"], [at(caps, 1), "text"]


for _cid, _bad in [
    ("record-not-object", 5),
    ("image-id-list", {"image_id": [2], "caption": "A cat."}),
    ("caption-null", {"image_id": 2, "caption": None}),
    ("missing-caption", {"image_id": 2}),
]:

    @case("records", f"chair-captions-json-list-{_cid}")
    def _(ctx, bad=_bad):
        caps = ctx.write("captions.json", json.dumps([CAPTIONS[0], bad]))
        return chair(ctx, caps), [caps, "record 1"]


@case("records", "chair-captions-json-top-level-object")
def _(ctx):
    caps = ctx.write("captions.json", json.dumps({"captions": CAPTIONS}, indent=1))
    return chair(ctx, caps), [caps]


@case("records", "chair-captions-json-empty-list")
def _(ctx):
    caps = ctx.write("captions.json", "[]")
    return chair(ctx, caps), [caps]


@case("records", "chair-captions-empty-file")
def _(ctx):
    caps = ctx.write("captions.jsonl", "")
    return chair(ctx, caps), [caps]


@case("records", "chair-captions-blank-lines-only")
def _(ctx):
    caps = ctx.write("captions.jsonl", "\n\n  \n")
    return chair(ctx, caps), [caps]


@case("records", "chair-captions-is-folder")
def _(ctx):
    caps = ctx.folder("captions.jsonl")
    return chair(ctx, caps), [caps]


for _cid, _gt in [
    ("top-level-list", [["dog"]]),
    ("value-not-list", {"1": "dog", "2": ["cat"], "3": ["person"]}),
    ("value-list-of-ints", {"1": [1, 2], "2": ["cat"], "3": ["person"]}),
    ("imid-to-objects-not-object", {"imid_to_objects": [1, 2]}),
]:

    @case("records", f"chair-gt-objects-{_cid}")
    def _(ctx, gt_data=_gt):
        gt = ctx.write("gt.json", json.dumps(gt_data))
        return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("records", "chair-gt-objects-empty-file")
def _(ctx):
    gt = ctx.write("gt.json", "")
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("records", "chair-gt-objects-is-folder")
def _(ctx):
    gt = ctx.folder("gt.json")
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("records", "chair-caption-30mb-jsonl")
def _(ctx):
    ctx.timeout = 5.0
    caps = ctx.write("captions.jsonl", jsonl(CAPTIONS[0], {"image_id": 2, "caption": "A cat on a mat. " * 1_900_000}))
    return chair(ctx, caps), [at(caps, 2)]


@case("records", "chair-caption-30mb-json-list")
def _(ctx):
    ctx.timeout = 5.0
    huge = {"image_id": 2, "caption": "A cat on a mat. " * 1_900_000}
    caps = ctx.write("captions.json", json.dumps([CAPTIONS[0], huge]))
    return chair(ctx, caps), [caps, "record 1"]


def _coco_break(ctx, name: str, change) -> tuple[list, list]:
    ann = coco_annotations(ctx)
    path = ann / name
    data = json.loads(path.read_text())
    data = change(data)
    path.write_text(json.dumps(data))
    return coco_chair(ctx), [path]


@case("records", "coco-instances-top-level-list")
def _(ctx):
    return _coco_break(ctx, "instances_val.json", lambda d: [d])


@case("records", "coco-instances-annotation-image-id-list")
def _(ctx):
    def change(d):
        d["annotations"][0]["image_id"] = [d["annotations"][0]["image_id"]]
        return d

    return _coco_break(ctx, "instances_val.json", change)


@case("records", "coco-instances-annotation-missing-category-id")
def _(ctx):
    def change(d):
        del d["annotations"][0]["category_id"]
        return d

    return _coco_break(ctx, "instances_val.json", change)


@case("records", "coco-instances-images-not-list")
def _(ctx):
    def change(d):
        d["images"] = {"id": 1}
        return d

    return _coco_break(ctx, "instances_val.json", change)


@case("records", "coco-captions-caption-null")
def _(ctx):
    def change(d):
        d["annotations"][0]["caption"] = None
        return d

    return _coco_break(ctx, "captions_val.json", change)


@case("records", "coco-instances-empty-file")
def _(ctx):
    ann = coco_annotations(ctx)
    (ann / "instances_val.json").write_text("")
    return coco_chair(ctx), [ann / "instances_val.json"]


@case("records", "coco-instances-is-folder")
def _(ctx):
    ann = coco_annotations(ctx)
    (ann / "instances_val.json").unlink()
    (ann / "instances_val.json").mkdir()
    return coco_chair(ctx), [ann / "instances_val.json"]


for _cid, _bad in [
    ("qid-list", {"question_id": [2], "text": "No"}),
    ("qid-object", {"question_id": {"id": 2}, "text": "No"}),
    ("qid-null", {"question_id": None, "text": "No"}),
    ("qid-float", {"question_id": 2.0, "text": "No"}),
    ("record-number", 7),
    ("record-list", [2, "No"]),
    ("record-string", '"No"'),
    ("missing-text", {"question_id": 2}),
    ("missing-question-id", {"text": "No"}),
    ("text-null", {"question_id": 2, "text": None}),
    ("text-int", {"question_id": 2, "text": 0}),
    ("duplicate", {"question_id": 1, "text": "No"}),
    ("unknown-question", {"question_id": 99, "text": "No"}),
    ("line-not-json", '{"question_id": 2, "text": '),
]:

    @case("records", f"pope-answer-{_cid}")
    def _(ctx, bad=_bad):
        argv, f = pope(ctx, answers=jsonl(POPE_ANSWERS[0], bad, POPE_ANSWERS[2]))
        return argv, [at(f["answers"], 2)]


@case("records", "pope-answer-qid-bool")
def _(ctx):
    # true == 1 in Python: must not be taken for question 1
    argv, f = pope(
        ctx, answers=jsonl({"question_id": 2, "text": "No"}, {"question_id": True, "text": "Yes"}, POPE_ANSWERS[2])
    )
    return argv, [at(f["answers"], 2)]


@case("records", "pope-answers-empty-file")
def _(ctx):
    argv, f = pope(ctx, answers=b"")
    return argv, [f["answers"]]


@case("records", "pope-answers-is-folder")
def _(ctx):
    argv, f = pope(ctx)
    f["answers"].unlink()
    f["answers"].mkdir()
    return argv, [f["answers"]]


for _cid, _bad in [
    ("qid-list", dict(POPE_QUESTIONS[1], question_id=[2])),
    ("qid-object", dict(POPE_QUESTIONS[1], question_id={"id": 2})),
    ("category-list", dict(POPE_QUESTIONS[1], category=["random"])),
    ("category-int", dict(POPE_QUESTIONS[1], category=5)),
    ("missing-category", {k: v for k, v in POPE_QUESTIONS[1].items() if k != "category"}),
    ("missing-text", {k: v for k, v in POPE_QUESTIONS[1].items() if k != "text"}),
    ("text-null", dict(POPE_QUESTIONS[1], text=None)),
    ("duplicate-qid", dict(POPE_QUESTIONS[1], question_id=1)),
    ("record-number", 3),
    ("record-list", [2, "Is there a cat in the image?"]),
]:

    @case("records", f"pope-question-{_cid}")
    def _(ctx, bad=_bad):
        argv, f = pope(ctx, questions=jsonl(POPE_QUESTIONS[0], bad, POPE_QUESTIONS[2]))
        return argv, [at(f["questions"], 2)]


@case("records", "pope-questions-empty-file")
def _(ctx):
    argv, f = pope(ctx, questions=b"")
    return argv, [f["questions"]]


for _cid, _bad in [
    ("maybe", dict(POPE_LABELS[1], label="maybe")),
    ("label-null", dict(POPE_LABELS[1], label=None)),
    ("label-bool", dict(POPE_LABELS[1], label=False)),
    ("missing-label", {k: v for k, v in POPE_LABELS[1].items() if k != "label"}),
    ("text-int", dict(POPE_LABELS[1], text=5)),
    ("record-string", '"no"'),
    ("record-list", ["no"]),
]:

    @case("records", f"pope-label-{_cid}")
    def _(ctx, bad=_bad):
        argv, f = pope(ctx, labels=jsonl(POPE_LABELS[0], bad, POPE_LABELS[2]))
        return argv, [at(f["label_file"], 2)]


@case("records", "pope-label-file-empty")
def _(ctx):
    argv, f = pope(ctx, labels=b"")
    return argv, [AnyOf(f["label_file"], f["label_file"].name)]  # the name alone is unique in --labels-dir


@case("records", "pope-label-file-is-folder")
def _(ctx):
    argv, f = pope(ctx)
    f["label_file"].unlink()
    f["label_file"].mkdir()
    return argv, [AnyOf(f["label_file"], f["label_file"].name)]


@case("records", "pope-labels-dir-is-file")
def _(ctx):
    argv, f = pope(ctx)
    shutil.rmtree(f["labels"])
    f["labels"].write_text("x")
    return argv, [f["labels"]]


for _cid, _line in [
    ("2-columns", f"a.jpg\t{MME_Q[1]}"),
    ("3-columns", f"a.jpg\t{MME_Q[1]}\tNo"),
    ("5-columns", f"a.jpg\t{MME_Q[1]}\tNo\tNo\textra"),
    ("ground-truth-maybe", f"a.jpg\t{MME_Q[1]}\tMaybe\tNo"),
    ("other-image-in-pair", f"c.jpg\t{MME_Q[1]}\tNo\tNo"),
]:

    @case("records", f"mme-results-{_cid}")
    def _(ctx, line=_line):
        argv, path = mme_results(ctx, jsonl(MME_RESULTS[0], line, *MME_RESULTS[2:]))
        return argv, [at(path, 2)]


@case("records", "mme-results-odd-number-of-lines")
def _(ctx):
    argv, path = mme_results(ctx, jsonl(*MME_RESULTS[:3]))
    return argv, [path]


@case("records", "mme-results-empty-file")
def _(ctx):
    argv, path = mme_results(ctx, b"")
    return argv, [path]


@case("records", "mme-results-txt-is-folder")
def _(ctx):
    argv, path = mme_results(ctx, b"")
    path.unlink()
    path.mkdir()
    return argv, [path]


for _cid, _line in [
    ("2-columns", f"a.jpg\t{MME_Q[1]}"),
    ("4-columns", f"a.jpg\t{MME_Q[1]}\tNo\tNo"),
    ("answer-maybe", f"a.jpg\t{MME_Q[1]}\tMaybe"),
]:

    @case("records", f"mme-ground-truth-{_cid}")
    def _(ctx, line=_line):
        rows = [r.rsplit("\t", 1)[0] for r in MME_RESULTS]
        argv, f = mme_llava(ctx, gt=jsonl(rows[0], line, *rows[2:]))
        return argv, [at(f["gt"], 2)]


for _cid, _change in [
    ("qid-null", {"question_id": None}),
    ("qid-list", {"question_id": ["existence/a.jpg"]}),
    ("qid-int", {"question_id": 5}),
    ("text-null", {"text": None}),
    ("text-list", {"text": ["No"]}),
    ("prompt-int", {"prompt": 5}),
    ("prompt-null", {"prompt": None}),
    ("duplicate", {"prompt": MME_ANSWERS[0]["prompt"]}),
]:

    @case("records", f"mme-answer-{_cid}")
    def _(ctx, change=_change):
        argv, f = mme_llava(ctx, answers=jsonl(MME_ANSWERS[0], dict(MME_ANSWERS[1], **change), *MME_ANSWERS[2:]))
        return argv, [at(f["answers"], 2)]


for _cid, _bad in [
    ("record-number", 5),
    ("record-list", ["existence/a.jpg", "No"]),
    ("missing-text", {k: v for k, v in MME_ANSWERS[1].items() if k != "text"}),
]:

    @case("records", f"mme-answer-{_cid}")
    def _(ctx, bad=_bad):
        argv, f = mme_llava(ctx, answers=jsonl(MME_ANSWERS[0], bad, *MME_ANSWERS[2:]))
        return argv, [at(f["answers"], 2)]


@case("records", "mme-answers-empty-file")
def _(ctx):
    argv, f = mme_llava(ctx, answers=b"")
    return argv, [f["answers"]]


for _cid, _bad in [
    ("text-int", {"question_id": "existence/a.jpg", "text": 5}),
    ("record-list", ["existence/a.jpg"]),
    ("text-null", {"question_id": "existence/a.jpg", "text": None}),
]:

    @case("records", f"mme-question-{_cid}")
    def _(ctx, bad=_bad):
        answers = [{k: v for k, v in a.items() if k != "prompt"} for a in MME_ANSWERS]
        questions = [{"question_id": a["question_id"], "text": a["prompt"]} for a in MME_ANSWERS]
        argv, f = mme_llava(ctx, answers=jsonl(*answers), questions=jsonl(questions[0], bad, *questions[2:]))
        return argv, [at(f["questions"], 2)]


@case("records", "mmhal-responses-top-level-object")
def _(ctx):
    responses = mmhal_responses(ctx, raw=json.dumps({"records": mmhal_template()}).encode())
    return mmhal(ctx, responses=responses), [responses]


@case("records", "mmhal-responses-empty-list")
def _(ctx):
    responses = mmhal_responses(ctx, raw=b"[]")
    return mmhal(ctx, responses=responses), [responses]


@case("records", "mmhal-responses-empty-file")
def _(ctx):
    responses = mmhal_responses(ctx, raw=b"")
    return mmhal(ctx, responses=responses), [responses]


@case("records", "mmhal-responses-is-folder")
def _(ctx):
    responses = ctx.folder("mmhal/responses.json")
    return mmhal(ctx, responses=responses), [responses]


def _mmhal_record_case(change):
    def setup(ctx):
        records = [r | {"model_answer": "There is a dog."} for r in mmhal_template()]
        records[5] = change(records[5])
        responses = mmhal_responses(ctx, records)
        return mmhal(ctx, responses=responses), [responses, "record 5"]

    return setup


for _cid, _change in [
    ("record-number", lambda r: 5),
    ("record-list", lambda r: [r]),
    ("missing-model-answer", lambda r: {k: v for k, v in r.items() if k != "model_answer"}),
    ("missing-question-type", lambda r: {k: v for k, v in r.items() if k != "question_type"}),
    ("question-type-unknown", lambda r: r | {"question_type": "colour"}),
    ("question-type-list", lambda r: r | {"question_type": ["attribute"]}),
]:
    case("records", f"mmhal-responses-{_cid}")(_mmhal_record_case(_change))


for _cid, _value in [("model-answer-null", None), ("model-answer-int", 5), ("model-answer-list", ["a cup"])]:

    @case("records", f"mmhal-responses-{_cid}-rule-judge")
    def _(ctx, value=_value):
        def change(records):
            records[5]["model_answer"] = value

        responses = world_mmhal_responses(ctx, change)
        replies = ctx.absent(ctx.tmp / "out" / "replies.jsonl")
        return ["score", "mmhal", "--responses", responses, "--judge", "rule", "--save-replies", replies], [
            responses,
            "record 5",
        ]


def _replies_case(bad, line: int = 2, drop: int | None = 1):
    def setup(ctx):
        rows = [{"index": i, "reply": "Rating: 4"} for i in range(96)]
        rows[line - 1] = bad
        if drop is not None and drop != line - 1:
            rows[drop] = None
        replies = mmhal_replies(ctx, raw=jsonl(*[r for r in rows if r is not None]))
        return mmhal(ctx, replies=replies), [at(replies, line)]

    return setup


for _cid, _bad in [
    ("index-out-of-range", {"index": 96, "reply": "Rating: 4"}),
    ("index-negative", {"index": -1, "reply": "Rating: 4"}),
    ("index-bool", {"index": True, "reply": "Rating: 4"}),
    ("index-float", {"index": 1.0, "reply": "Rating: 4"}),
    ("index-string", {"index": "1", "reply": "Rating: 4"}),
    ("index-null", {"index": None, "reply": "Rating: 4"}),
    ("index-list", {"index": [1], "reply": "Rating: 4"}),
    ("reply-null", {"index": 1, "reply": None}),
    ("reply-int", {"index": 1, "reply": 4}),
    ("missing-reply", {"index": 1}),
    ("missing-index", {"reply": "Rating: 4"}),
    ("record-list", [1, "Rating: 4"]),
    ("record-string", '"Rating: 4"'),
    ("line-not-json", '{"index": 1, "reply": "Rating'),
]:
    case("records", f"mmhal-replies-{_cid}")(_replies_case(_bad))


@case("records", "mmhal-replies-duplicate-index")
def _(ctx):
    rows = [{"index": i, "reply": "Rating: 4"} for i in range(96)] + [{"index": 7, "reply": "Rating: 1"}]
    replies = mmhal_replies(ctx, rows)
    return mmhal(ctx, replies=replies), [at(replies, 97)]


@case("records", "mmhal-replies-one-missing")
def _(ctx):
    replies = mmhal_replies(ctx, [{"index": i, "reply": "Rating: 4"} for i in range(96) if i != 40])
    return mmhal(ctx, replies=replies), [replies, "40"]


@case("records", "mmhal-replies-empty-file")
def _(ctx):
    replies = mmhal_replies(ctx, raw=b"")
    return mmhal(ctx, replies=replies), [replies]


# ============================================================================================ 3. model cards

MODEL_VALUES = [
    ("threads-string", 'threads = "many"', "", "threads"),
    ("threads-negative", "threads = -1", "", "threads"),
    ("threads-float", "threads = 1.5", "", "threads"),
    ("threads-bool", "threads = true", "", "threads"),
    ("template-int", "template = 5", "", "template"),
    ("template-without-prompt-slot", 'template = "USER: <image> ASSISTANT:"', "", "template"),
    ("template-unknown-name", 'template = "vicuna_v9"', "", "template"),
    ("device-tpu", 'device = "tpu"', "", "device"),
    ("device-cuda-x", 'device = "cuda:x"', "", "device"),
    ("dtype-int4", 'dtype = "int4"', "", "dtype"),
    ("backend-grpc", 'backend = "grpc"', "", "backend"),
    ("format-x", 'format = "x"', "", "format"),
    ("concurrency-0", "concurrency = 0", "", "concurrency"),
    ("concurrency-bool", "concurrency = true", "", "concurrency"),
    ("timeout-negative", "timeout = -1", "", "timeout"),
    ("timeout-nan", "timeout = nan", "", "timeout"),
    ("timeout-string", 'timeout = "10s"', "", "timeout"),
    ("max-retries-string", 'max_retries = "x"', "", "max_retries"),
    ("max-retries-negative", "max_retries = -2", "", "max_retries"),
    ("adapter-list", "adapter = []", "", "adapter"),
    ("adapter-int", "adapter = 3", "", "adapter"),
    ("model-base-int", "model_base = 3", "", "model_base"),
    ("vision-tower-list", 'vision_tower = ["x"]', "", "vision_tower"),
    ("info-not-table", 'info = "x"', "", "info"),
    ("unknown-key", 'colour = "red"', "", "colour"),
    ("misspelt-key", "thread = 1", "", "thread"),
    ("generation-table", "", "max_new_tokens = 512", "generation"),  # decoding is the bench card's
    ("image-aspect-ratio-anyres", 'image_aspect_ratio = "anyres"', "", "image_aspect_ratio"),
    ("image-aspect-ratio-int", "image_aspect_ratio = 1", "", "image_aspect_ratio"),
]

for _cid, _extra, _gen, _key in MODEL_VALUES:

    @case("model_cards", f"model-card-{_cid}")
    def _(ctx, extra=_extra, gen=_gen, key=_key):
        card = ctx.model_card("bad", ctx.tiny_card(extra, gen))
        return run(ctx, "chair", model="bad"), [card, key]


@case("model_cards", "model-card-path-int")
def _(ctx):
    card = ctx.model_card("bad", "path = 5\n")
    return run(ctx, "chair", model="bad"), [card, "path"]


@case("model_cards", "model-card-path-empty")
def _(ctx):
    card = ctx.model_card("bad", 'path = ""\n')
    return run(ctx, "chair", model="bad"), [card, "path"]


@case("model_cards", "model-card-path-missing-folder")
def _(ctx):
    card = ctx.model_card("bad", f"path = {toml_str(ctx.tmp / 'no-such-model')}\n")
    return run(ctx, "chair", model="bad"), [AnyOf(card, ctx.tmp / "no-such-model")]


@case("model_cards", "model-card-generation-not-table")
def _(ctx):
    card = ctx.model_card("bad", ctx.tiny_card("generation = 5"))
    return run(ctx, "chair", model="bad"), [card, "generation"]


for _cid, _name in [
    ("name-dotdot", "../../x"),
    ("name-slash", "a/b"),
    ("name-empty", ""),
    ("name-int", 5),
    ("name-leading-dot", ".hidden"),
]:

    @case("model_cards", f"model-card-{_cid}")
    def _(ctx, name=_name):
        card = ctx.model_card("bad", f"name = {json.dumps(name)}\n" + ctx.tiny_card())
        return run(ctx, "chair", model="bad"), [card, "name"]


@case("model_cards", "model-card-invalid-toml")
def _(ctx):
    card = ctx.model_card("bad", ctx.tiny_card() + "threads = = 2\n")
    return run(ctx, "chair", model="bad"), [card]


@case("model_cards", "model-card-duplicate-key")
def _(ctx):
    card = ctx.model_card("bad", ctx.tiny_card("threads = 1\nthreads = 2"))
    return run(ctx, "chair", model="bad"), [card]


@case("model_cards", "model-card-is-folder")
def _(ctx):
    card = ctx.models / "bad.toml"
    card.mkdir()
    return run(ctx, "chair", model="bad"), [card]


@case("model_cards", "model-card-openai-without-base-url")
def _(ctx):
    card = ctx.model_card("bad", 'backend = "openai"\napi_model = "m"\n')
    return run(ctx, "chair", model="bad"), [card, "base_url"]


@case("model_cards", "model-card-openai-without-api-model")
def _(ctx):
    card = ctx.model_card("bad", 'backend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n')
    return run(ctx, "chair", model="bad"), [card, "api_model"]


@case("model_cards", "doctor-model-card-threads-string")
def _(ctx):
    card = ctx.model_card("bad", ctx.tiny_card('threads = "many"'))
    return ["doctor", "--model", "bad", "--results", ctx.out()], [card, "threads"]


@case("model_cards", "train-base-card-dtype-int4")
def _(ctx):
    card = ctx.model_card("bad", ctx.tiny_card('dtype = "int4"'))
    argv = train(ctx)
    argv[argv.index("--base") + 1] = "bad"
    return argv, [card, "dtype"]


@case("model_cards", "frontier-model-card-device-tpu")
def _(ctx):
    card = ctx.model_card("bad", ctx.tiny_card('device = "tpu"'))
    return ["frontier", "--model", "bad", "--biases", "0", "--limit", "1", "--results", ctx.out()], [card, "device"]


@case("model_cards", "compare-model-card-template-int")
def _(ctx):
    card = ctx.model_card("bad", ctx.tiny_card("template = 5"))
    return ["compare", "bad", "tiny", "--bench", "chair", "--results", ctx.out()], [card, "template"]


RECIPE_VALUES = [
    # (id, top-level keys, [stage1] keys, key named)
    ("unknown-key", {"epochs": "3"}, {}, "epochs"),
    ("images-string", {"images": '"many"'}, {}, "images"),
    ("images-negative", {"images": "-5"}, {}, "images"),
    ("seed-negative", {"seed": "-1"}, {}, "seed"),
    ("noise-step-out-of-range", {"noise_step": "5000"}, {}, "noise_step"),
    ("max-new-tokens-0", {"max_new_tokens": "0"}, {}, "max_new_tokens"),
    ("gen-batch-size-0", {"gen_batch_size": "0"}, {}, "gen_batch_size"),
    ("injector-weights-not-table", {"injector_weights": "3"}, {}, "injector_weights"),
    ("injector-weights-unknown-op", {"injector_weights": "{ drop = 1.0 }"}, {}, "unknown injection op(s) drop"),
    ("stage1-unknown-key", {}, {"epochs": "2"}, "stage1.epochs"),
    ("stage1-loss-foo", {}, {"loss": '"foo"'}, "stage1.loss"),
    ("stage1-noisy-form-foo", {}, {"noisy_form": '"foo"'}, "stage1.noisy_form"),
    ("stage1-batch-size-0", {}, {"batch_size": "0"}, "stage1.batch_size"),
    ("stage1-grad-accum-0", {}, {"grad_accum": "0"}, "stage1.grad_accum"),
    ("stage1-grad-accum-not-dividing", {}, {"grad_accum": "3"}, "stage1.grad_accum"),
    ("stage1-lr-string", {}, {"lr": '"fast"'}, "stage1.lr"),
    ("stage1-lr-negative", {}, {"lr": "-0.1"}, "stage1.lr"),
    ("stage1-steps-negative", {}, {"steps": "-1"}, "stage1.steps"),
    ("stage1-beta-0", {}, {"beta": "0"}, "stage1.beta"),
    ("stage1-lora-r-0", {}, {"lora_r": "0"}, "stage1.lora_r"),
    ("stage1-checkpoint-every-0", {}, {"checkpoint_every": "0"}, "stage1.checkpoint_every"),
    ("stage1-projector-lr-string", {}, {"projector_lr": '"fast"'}, "stage1.projector_lr"),
    ("stage1-projector-lr-0", {}, {"projector_lr": "0"}, "stage1.projector_lr"),
]

for _cid, _top, _stage1, _key in RECIPE_VALUES:

    @case("model_cards", f"recipe-config-{_cid}")
    def _(ctx, top=_top, stage1=_stage1, key=_key):
        cfg = ctx.write("recipe.toml", recipe_text(top, stage1))
        return train(ctx, "--config", cfg), [cfg, key]


@case("model_cards", "recipe-config-stage2-projector-without-stage1")
def _(ctx):
    cfg = ctx.write("recipe.toml", recipe_text() + "projector_lr = 0.001\n")  # under [stage2], the last table
    return train(ctx, "--config", cfg, recipe="povid"), ["stage2.projector_lr", "stage1.projector_lr"]


@case("model_cards", "recipe-config-stage1-not-table")
def _(ctx):
    cfg = ctx.write("recipe.toml", recipe_text({"stage1": "5"}, stage1_table=False))
    return train(ctx, "--config", cfg), [cfg, "stage1"]


@case("model_cards", "recipe-config-chosen-unknown")
def _(ctx):
    cfg = ctx.write("recipe.toml", recipe_text({"chosen": '"best"'}))
    argv = [a for a in train(ctx, "--config", cfg)]
    i = argv.index("--preferences")
    del argv[i : i + 2]  # the world's preferences, where `chosen` is used
    return argv, [cfg, "chosen"]


@case("model_cards", "recipe-config-invalid-toml")
def _(ctx):
    cfg = ctx.write("recipe.toml", "[stage1\nsteps = 1\n")
    return train(ctx, "--config", cfg), [cfg]


@case("model_cards", "recipe-config-missing-file")
def _(ctx):
    cfg = ctx.tmp / "no-recipe.toml"
    return train(ctx, "--config", cfg), [cfg]


@case("model_cards", "recipe-config-is-folder")
def _(ctx):
    cfg = ctx.folder("recipe.toml")
    return train(ctx, "--config", cfg), [cfg]


# ============================================================================================ 4. bench cards

BENCH_EDITS = [
    # (id, bench, old text, new text, key named)
    ("bench-foo", "chair", 'kind = "chair"', 'kind = "foo"', "kind"),
    ("bench-int", "chair", 'kind = "chair"', "kind = 5", "kind"),
    ("chair-variant-unknown", "chair", 'variant = "singularize"', 'variant = "lemma"', "variant"),
    ("pope-variant-unknown", "pope", 'variant = "llava"', 'variant = "llava2"', "variant"),
    ("mme-variant-unknown", "mme", 'variant = "eval_tool"', 'variant = "x"', "variant"),
    ("variant-int", "chair", 'variant = "singularize"', "variant = 1", "variant"),
    ("missing-variant", "chair", 'variant = "singularize"', "", "variant"),
    ("missing-bench", "chair", 'kind = "chair"', "", "kind"),
    ("chair-files-without-instances", "chair", 'instances = "annotations/instances_val.json"', "", "instances"),
    ("chair-files-without-images", "chair", 'images = "images/val"', "", "images"),
    ("pope-files-without-labels", "pope", 'labels = "pope"', "", "labels"),
    ("mme-files-without-ground-truth", "mme", 'ground_truth = "mme"', "", "ground_truth"),
    ("mmhal-files-without-template", "mmhal", 'template = "mmhal/template.json"', "", "template"),
    ("files-unknown-key", "pope", 'labels = "pope"', 'labels = "pope"\nanswers = "x.jsonl"', "answers"),
    ("files-value-int", "pope", 'labels = "pope"', "labels = 5", "labels"),
    ("files-value-empty", "pope", 'labels = "pope"', 'labels = ""', "labels"),
    ("limit-negative", "chair", "limit = 6", "limit = -1", "limit"),
    ("limit-string", "chair", "limit = 6", 'limit = "6"', "limit"),
    ("limit-float", "chair", "limit = 6", "limit = 6.5", "limit"),
    ("sample-negative", "chair", "limit = 6", "limit = 6\nsample = -3", "sample"),
    ("sample-on-pope", "pope", "limit = 12", "limit = 12\nsample = 3", "sample"),
    ("image-ids-on-pope", "pope", "limit = 12", 'limit = 12\nimage_ids = "ids.txt"', "image_ids"),
    ("mmhal-judge-gpt", "mmhal", 'judge = "rule"', 'judge = "gpt"', "judge"),
    ("mmhal-without-judge", "mmhal", 'judge = "rule"', "", "judge"),
    ("judge-on-chair", "chair", "limit = 6", 'limit = 6\njudge = "rule"', "judge"),
    ("prompt-int", "chair", 'prompt = "Describe this image."', "prompt = 7", "prompt"),
    (
        "suffix-list",
        "mme",
        'suffix = "\\nAnswer the question using a single word or phrase."',
        'suffix = ["x"]',
        "suffix",
    ),
    ("world-string", "chair", "world = true", 'world = "yes"', "world"),
    ("unknown-key", "chair", "limit = 6", "limit = 6\nprompts = 3", "prompts"),
    ("decoding-max-new-tokens-0", "chair", "max_new_tokens = 6", "max_new_tokens = 0", "decoding.max_new_tokens"),
    (
        "decoding-max-new-tokens-string",
        "chair",
        "max_new_tokens = 6",
        'max_new_tokens = "6"',
        "decoding.max_new_tokens",
    ),
    ("decoding-top-p-0", "chair", "max_new_tokens = 6", "max_new_tokens = 6\ntop_p = 0", "decoding.top_p"),
    (
        "decoding-temperature-string",
        "chair",
        "max_new_tokens = 6",
        'max_new_tokens = 6\ntemperature = "hot"',
        "decoding.temperature",
    ),
    ("decoding-unknown-key", "chair", "max_new_tokens = 6", "max_new_tokens = 6\nnum_beams = 2", "decoding.num_beams"),
    (
        "decoding-batch-size-negative",
        "chair",
        "max_new_tokens = 6",
        "max_new_tokens = 6\nbatch_size = -1",
        "decoding.batch_size",
    ),
    (
        "decoding-batch-size-float",
        "chair",
        "max_new_tokens = 6",
        "max_new_tokens = 6\nbatch_size = 1.5",
        "decoding.batch_size",
    ),
    (
        "decoding-sampling-at-temperature-0",
        "chair",
        "max_new_tokens = 6",
        "max_new_tokens = 6\ndo_sample = true\ntemperature = 0",
        "temperature",
    ),
    ("template-unknown", "chair", "limit = 6", 'limit = 6\ntemplate = "vicuna_v9"', "template"),
    ("template-int", "chair", "limit = 6", "limit = 6\ntemplate = 1", "template"),
    ("name-dotdot", "chair", "limit = 6", 'limit = 6\nname = "../../x"', "name"),
    ("name-slash", "chair", "limit = 6", 'limit = 6\nname = "a/b"', "name"),
]

for _cid, _bench, _old, _new, _key in BENCH_EDITS:

    @case("bench_cards", f"bench-card-{_cid}")
    def _(ctx, bench=_bench, old=_old, new=_new, key=_key):
        card = ctx.bench_card("bad", ctx.edit_bench(bench, old, new))
        return run(ctx, "bad"), [card, key]


@case("bench_cards", "bench-card-files-not-table")
def _(ctx):
    text = ctx.bench_text("chair")
    head, _files = text.split("[files]", 1)
    text = head.replace("limit = 6", 'limit = 6\nfiles = "x"') + "[decoding]\nmax_new_tokens = 6\n"
    card = ctx.bench_card("bad", text)
    return run(ctx, "bad"), [card, "files"]


@case("bench_cards", "bench-card-decoding-not-table")
def _(ctx):
    text = ctx.bench_text("chair").split("[decoding]", 1)[0]
    card = ctx.bench_card("bad", text.replace("limit = 6", "limit = 6\ndecoding = 3", 1))
    return run(ctx, "bad"), [card, "decoding"]


@case("bench_cards", "bench-card-missing-data")
def _(ctx):
    text = re.sub(r'data = ".*"\n', "", ctx.bench_text("chair"), count=1)
    card = ctx.bench_card("bad", text)
    return run(ctx, "bad"), [card, "data"]


@case("bench_cards", "bench-card-data-missing-folder")
def _(ctx):
    missing = ctx.tmp / "no-data"
    text = ctx.bench_text("pope").replace(toml_str(ctx.world), toml_str(missing))
    text = text.replace("world = true", "world = false")
    ctx.bench_card("bad", text)
    return run(ctx, "bad"), [missing]


@case("bench_cards", "bench-card-data-is-file")
def _(ctx):
    data = ctx.write("data.txt", "x")
    text = ctx.bench_text("mme").replace(toml_str(ctx.world), toml_str(data)).replace("world = true", "world = false")
    ctx.bench_card("bad", text)
    return run(ctx, "bad"), [data]


@case("bench_cards", "bench-card-pope-questions-missing")
def _(ctx):
    ctx.bench_card("bad", ctx.edit_bench("pope", "pope/llava_pope_test.jsonl", "pope/nope.jsonl"))
    return run(ctx, "bad"), [ctx.world / "pope" / "nope.jsonl"]


@case("bench_cards", "bench-card-mmhal-template-missing")
def _(ctx):
    ctx.bench_card("bad", ctx.edit_bench("mmhal", "mmhal/template.json", "mmhal/nope.json"))
    return run(ctx, "bad"), [ctx.world / "mmhal" / "nope.json"]


@case("bench_cards", "bench-card-chair-image-ids-missing")
def _(ctx):
    missing = ctx.tmp / "no-ids.txt"
    ctx.bench_card("bad", ctx.edit_bench("chair", "limit = 6", f"limit = 6\nimage_ids = {toml_str(missing)}"))
    return run(ctx, "bad"), [missing]


@case("bench_cards", "bench-card-chair-image-ids-not-numbers")
def _(ctx):
    ids = ctx.write("ids.txt", "1000001\nabc\n")
    ctx.bench_card("bad", ctx.edit_bench("chair", "limit = 6", f"limit = 6\nimage_ids = {toml_str(ids)}"))
    return run(ctx, "bad"), [at(ids, 2)]


@case("bench_cards", "bench-card-mmhal-judge-prompt-missing")
def _(ctx):
    missing = ctx.tmp / "no-prompt.txt"
    judge = (
        f'judge = "openai"\njudge_model = "m"\njudge_base_url = "http://127.0.0.1:9/v1"\n'
        f"judge_prompt = {toml_str(missing)}"
    )
    ctx.bench_card("bad", ctx.edit_bench("mmhal", 'judge = "rule"', judge))
    return run(ctx, "bad"), [missing]


@case("bench_cards", "bench-card-mmhal-openai-judge-without-model")
def _(ctx):
    card = ctx.bench_card("bad", ctx.edit_bench("mmhal", 'judge = "rule"', 'judge = "openai"'))
    return run(ctx, "bad"), [card, "judge_model"]


@case("bench_cards", "bench-card-invalid-toml")
def _(ctx):
    card = ctx.bench_card("bad", ctx.bench_text("chair") + "\n[files\n")
    return run(ctx, "bad"), [card]


@case("bench_cards", "bench-card-is-folder")
def _(ctx):
    card = ctx.benches / "bad.toml"
    card.mkdir()
    return run(ctx, "bad"), [card]


@case("bench_cards", "doctor-bench-card-bench-foo")
def _(ctx):
    card = ctx.bench_card("bad", ctx.edit_bench("pope", 'kind = "pope"', 'kind = "foo"'))
    return ["doctor", "--bench", "bad", "--results", ctx.out()], [card, "bench"]


@case("bench_cards", "frontier-bench-card-variant-unknown")
def _(ctx):
    card = ctx.bench_card("bad", ctx.edit_bench("chair", 'variant = "singularize"', 'variant = "lemma"'))
    return ["frontier", "--bench", "bad", "--model", "tiny", "--biases", "0", "--results", ctx.out()], [card, "variant"]


@case("bench_cards", "compare-bench-card-limit-negative")
def _(ctx):
    card = ctx.bench_card("bad", ctx.edit_bench("chair", "limit = 6", "limit = -1"))
    return ["compare", "tiny", "tiny", "--bench", "bad", "--results", ctx.out()], [card, "limit"]


@case("bench_cards", "leaderboard-bench-set-with-broken-card")
def _(ctx):
    card = ctx.bench_card(
        "chair", ctx.edit_bench("chair", 'kind = "chair"', 'kind = "chiar"'), folder=ctx.benches / "mine"
    )
    out = ctx.tmp / "lb"
    shutil.copytree(ctx.corpus.chair_results(), out)
    ctx.unchanged(out)
    return ["leaderboard", "--bench", "mine", "--results", out], [card, "bench"]


# ============================================================================================ 5. CLI values

COUNT_FLAGS = [
    ("run-batch-size-0", lambda ctx: run(ctx, "chair", "--batch-size", "0"), "--batch-size"),
    ("run-batch-size-negative", lambda ctx: run(ctx, "chair", "--batch-size", "-4"), "--batch-size"),
    ("run-batch-size-word", lambda ctx: run(ctx, "chair", "--batch-size", "x"), "--batch-size"),
    ("run-batch-size-float", lambda ctx: run(ctx, "chair", "--batch-size", "1.5"), "--batch-size"),
    ("run-batch-size-empty", lambda ctx: run(ctx, "chair", "--batch-size", ""), "--batch-size"),
    ("run-limit-negative", lambda ctx: run(ctx, "chair", "--limit", "-1"), "--limit"),
    ("run-limit-word", lambda ctx: run(ctx, "chair", "--limit", "all"), "--limit"),
    (
        "frontier-batch-size-0",
        lambda ctx: ["frontier", "--model", "tiny", "--biases", "0", "--batch-size", "0", "--results", ctx.out()],
        "--batch-size",
    ),
    (
        "frontier-limit-negative",
        lambda ctx: ["frontier", "--model", "tiny", "--biases", "0", "--limit", "-1", "--results", ctx.out()],
        "--limit",
    ),
    ("train-images-negative", lambda ctx: train(ctx, "--images", "-1"), "--images"),
    ("train-images-word", lambda ctx: train(ctx, "--images", "many"), "--images"),
    ("train-seed-negative", lambda ctx: train(ctx, "--seed", "-1"), "--seed"),
    ("world-build-seed-negative", lambda ctx: ["world", "build", "--seed", "-1", "--out", ctx.out("world")], "--seed"),
    ("world-build-seed-word", lambda ctx: ["world", "build", "--seed", "x", "--out", ctx.out("world")], "--seed"),
    (
        "pretrain-seed-word",
        lambda ctx: ["pretrain", "--seed", "x", "--world", ctx.tmp / "no-world", "--results", ctx.out("model")],
        "--seed",
    ),
    (
        "pretrain-threads-0",
        lambda ctx: ["pretrain", "--threads", "0", "--world", ctx.tmp / "no-world", "--out", ctx.out("model")],
        "--threads",
    ),
    ("perf-batch-0", lambda ctx: ["perf", "--generate", "tiny", "--device", "cpu", "--batch", "0"], "--batch"),
    ("perf-batch-word", lambda ctx: ["perf", "--generate", "tiny", "--device", "cpu", "--batch", "x"], "--batch"),
]
for _cid, _argv, _flag in COUNT_FLAGS:

    @case("cli_values", _cid)
    def _(ctx, argv=_argv, flag=_flag):
        return argv(ctx), [flag]


for _cid, _value in [
    ("nan", "nan"),
    ("inf", "inf"),
    ("minus-inf", "-inf"),
    ("empty-item", "1,,x"),
    ("empty", ""),
    ("word", "high"),
    ("trailing-comma", "0,1,"),
]:

    @case("cli_values", f"frontier-biases-{_cid}")
    def _(ctx, value=_value):
        return ["frontier", "--model", "tiny", f"--biases={value}", "--limit", "1", "--results", ctx.out()], [
            "--biases"
        ]


for _cid, _value in [
    ("3", "3"),
    ("0", "0"),
    ("word", "x"),
    ("empty", ""),
    ("float", "2.5"),
    ("1-3", "1,3"),
    ("repeated", "1,1"),
    ("negative", "-1"),
]:

    @case("cli_values", f"train-stages-{_cid}")
    def _(ctx, value=_value):
        return train(ctx, "--stages", value, recipe="povid"), ["--stages"]


@case("cli_values", "train-stages-with-dpo-recipe")
def _(ctx):
    return train(ctx, "--stages", "2", recipe="dpo"), ["--stages"]


@case("cli_values", "train-image-root-without-preferences")
def _(ctx):
    argv = train(ctx, "--image-root", ctx.folder("images"))
    i = argv.index("--preferences")
    del argv[i : i + 2]
    return argv, ["--image-root"]


@case("cli_values", "train-llm-model-without-llm-injector")
def _(ctx):
    return train(ctx, "--llm-model", "gpt-x"), ["--llm-model"]


@case("cli_values", "train-llm-injector-without-base-url")
def _(ctx):
    return train(ctx, "--injector", "llm", "--llm-model", "m"), ["--llm-base-url"]


@case("cli_values", "train-recipe-unknown")
def _(ctx):
    return train(ctx, recipe="best"), ["--recipe"]


def _out_is_file(make):
    def setup(ctx):
        path = ctx.unchanged(ctx.write("taken.txt", "not a folder\n"))
        return make(ctx, path), [path]

    return setup


for _cid, _make in [
    ("run-out-is-file", lambda ctx, p: ["run", "--bench", "chair", "--model", "tiny", "--results", p]),
    ("doctor-out-is-file", lambda ctx, p: ["doctor", "--model", "tiny", "--bench", "chair", "--results", p]),
    ("frontier-out-is-file", lambda ctx, p: ["frontier", "--model", "tiny", "--biases", "0", "--results", p]),
    ("compare-out-is-file", lambda ctx, p: ["compare", "tiny", "tiny", "--bench", "chair", "--results", p]),
    ("leaderboard-out-is-file", lambda ctx, p: ["leaderboard", "--results", p]),
    ("world-build-out-is-file", lambda ctx, p: ["world", "build", "--out", p]),
    ("train-results-is-file", lambda ctx, p: train(ctx, "--results", p)),
]:
    case("cli_values", _cid)(_out_is_file(_make))


@case("cli_values", "world-build-out-foreign-folder")
def _(ctx):
    folder = ctx.folder("mine")
    ctx.write("mine/thesis.tex", "\\documentclass{article}\n")
    ctx.unchanged(folder)
    return ["world", "build", "--out", folder], [folder]


@case("cli_values", "train-out-card-not-written-by-train")
def _(ctx):
    card = ctx.unchanged(ctx.model_card("mine", ctx.tiny_card()))
    argv = train(ctx, out="mine")
    ctx._absent.remove(ctx.models / "mine.toml")
    return argv, [card]


for _cid, _bench, _flag in [
    ("pope-image-ids", "pope", "--image-ids"),
    ("mme-image-ids", "mme", "--image-ids"),
    ("mmhal-image-ids", "mmhal", "--image-ids"),
    ("pope-judge-prompt", "pope", "--judge-prompt"),
    ("mme-judge-prompt", "mme", "--judge-prompt"),
    ("chair-judge-prompt", "chair", "--judge-prompt"),
]:

    @case("cli_values", f"run-{_cid}")
    def _(ctx, bench=_bench, flag=_flag):
        ids = world_val_ids(ctx)
        value = (
            ctx.write("ids.txt", f"{ids[0]}\n")
            if flag == "--image-ids"
            else ctx.write("prompt.txt", (FIXTURES / "mmhal" / "reference_judge_prompt.txt").read_text())
        )
        return run(ctx, bench, flag, value), [flag]


@case("cli_values", "run-mmhal-judge-prompt-with-rule-judge")
def _(ctx):
    prompt = ctx.write("prompt.txt", (FIXTURES / "mmhal" / "reference_judge_prompt.txt").read_text())
    return run(ctx, "mmhal", "--judge-prompt", prompt), [AnyOf("--judge-prompt", prompt)]


@case("cli_values", "run-image-ids-missing-file")
def _(ctx):
    path = ctx.tmp / "no-ids.txt"
    return run(ctx, "chair", "--image-ids", path), [path]


@case("cli_values", "run-image-ids-is-folder")
def _(ctx):
    path = ctx.folder("ids.txt")
    return run(ctx, "chair", "--image-ids", path), [path]


for _cid, _text, _line in [
    ("word", "{0}\nabc\n", 2),
    ("negative", "{0}\n-5\n", 2),
    ("float", "{0}\n1.5\n", 2),
    ("two-per-line", "{0} {0}\n", 1),
    ("unknown-id", "{0}\n424242\n", 2),
]:

    @case("cli_values", f"run-image-ids-{_cid}")
    def _(ctx, text=_text, line=_line, cid=_cid):
        ids = world_val_ids(ctx)
        path = ctx.write("ids.txt", text.format(ids[0]))
        where = AnyOf(at(path, line), path) if cid == "unknown-id" else at(path, line)
        return run(ctx, "chair", "--image-ids", path), [where]


for _cid, _text in [("empty", ""), ("comments-only", "# none yet\n\n")]:

    @case("cli_values", f"run-image-ids-{_cid}")
    def _(ctx, text=_text):
        path = ctx.write("ids.txt", text)
        return run(ctx, "chair", "--image-ids", path), [path]


def real_pope_card(ctx: Ctx) -> str:
    """A copy of the pope card for real data (not the synthetic world, which is built where it is missing)."""
    ctx.bench_card("popereal", ctx.bench_text("pope").replace("world = true", "world = false"))
    return "popereal"


@case("cli_values", "run-data-missing-folder")
def _(ctx):
    data = ctx.tmp / "no-data"
    return run(ctx, real_pope_card(ctx), "--data", data), [AnyOf("--data", data)]


@case("cli_values", "run-data-is-file")
def _(ctx):
    data = ctx.write("data.txt", "x")
    return run(ctx, real_pope_card(ctx), "--data", data), [AnyOf("--data", data)]


@case("cli_values", "doctor-data-missing-folder")
def _(ctx):
    data = ctx.tmp / "no-data"
    return ["doctor", "--bench", real_pope_card(ctx), "--data", data, "--results", ctx.out()], [AnyOf("--data", data)]


for _cid, _argv, _where in [
    ("run-unknown-model", lambda ctx: run(ctx, "chair", model="nosuch"), "nosuch"),
    ("run-unknown-bench", lambda ctx: run(ctx, "nosuch"), "nosuch"),
    ("doctor-unknown-model", lambda ctx: ["doctor", "--model", "nosuch", "--results", ctx.out()], "nosuch"),
    ("doctor-unknown-bench", lambda ctx: ["doctor", "--bench", "nosuch", "--results", ctx.out()], "nosuch"),
    (
        "frontier-unknown-model",
        lambda ctx: ["frontier", "--model", "nosuch", "--biases", "0", "--results", ctx.out()],
        "nosuch",
    ),
    (
        "frontier-unknown-bench",
        lambda ctx: ["frontier", "--model", "tiny", "--bench", "nosuch", "--biases", "0", "--results", ctx.out()],
        "nosuch",
    ),
    (
        "frontier-bench-not-chair",
        lambda ctx: ["frontier", "--model", "tiny", "--bench", "pope", "--biases", "0", "--results", ctx.out()],
        "--bench",
    ),
    ("train-unknown-base", lambda ctx: train(ctx, "--base", "nosuch"), "nosuch"),
    (
        "compare-unknown-bench",
        lambda ctx: ["compare", "tiny", "tiny", "--bench", "nosuch", "--results", ctx.out()],
        "nosuch",
    ),
    (
        "leaderboard-unknown-bench-set",
        lambda ctx: ["leaderboard", "--bench", "nosuch", "--results", ctx.out()],
        "nosuch",
    ),
    ("run-model-dotdot", lambda ctx: run(ctx, "chair", model="../x"), "../x"),
    ("run-bench-dotdot", lambda ctx: run(ctx, "../x"), "../x"),
    ("doctor-model-dotdot", lambda ctx: ["doctor", "--model", "../../x", "--results", ctx.out()], "../../x"),
    (
        "frontier-model-dotdot",
        lambda ctx: ["frontier", "--model", "../x", "--biases", "0", "--results", ctx.out()],
        "../x",
    ),
    ("train-base-dotdot", lambda ctx: train(ctx, "--base", "../x"), "../x"),
    ("train-out-dotdot", lambda ctx: train(ctx, "--out", "../../x"), "--out"),
    ("train-out-absolute", lambda ctx: train(ctx, "--out", str(ctx.tmp / "abs")), "--out"),
    ("train-out-empty", lambda ctx: train(ctx, "--out", ""), "--out"),
    (
        "compare-model-dotdot",
        lambda ctx: ["compare", "tiny", "../x", "--bench", "chair", "--results", ctx.out()],
        "../x",
    ),
    ("compare-model-slash", lambda ctx: ["compare", "tiny", "a/b", "--bench", "chair", "--results", ctx.out()], "a/b"),
    (
        "leaderboard-frontier-model-dotdot",
        lambda ctx: ["leaderboard", "--frontier-model", "../x", "--results", ctx.out()],
        "--frontier-model",
    ),
]:

    @case("cli_values", _cid)
    def _(ctx, argv=_argv, where=_where):
        return argv(ctx), [where]


@case("cli_values", "train-out-dotdot-one-level")
def _(ctx):
    argv = train(ctx, "--out", "../escaped")
    return argv, ["--out"]


@case("cli_values", "compare-unknown-model")
def _(ctx):
    out = ctx.tmp / "cmp"
    shutil.copytree(ctx.corpus.chair_results(), out)
    ctx.unchanged(out)
    return ["compare", "tiny", "nosuch", "--bench", "chair", "--results", out], ["nosuch"]


@case("cli_values", "compare-one-model")
def _(ctx):
    out = ctx.tmp / "cmp"
    shutil.copytree(ctx.corpus.chair_results(), out)
    ctx.unchanged(out)
    return ["compare", "tiny", "--bench", "chair", "--results", out], ["models"]


@case("cli_values", "compare-no-models")
def _(ctx):
    return ["compare", "--results", ctx.out()], ["models"]


@case("cli_values", "leaderboard-out-missing-folder")
def _(ctx):
    out = ctx.out("no-results")
    return ["leaderboard", "--results", out], [out]


@case("cli_values", "leaderboard-out-empty-folder")
def _(ctx):
    out = ctx.folder("empty-results")
    ctx.unchanged(out)
    return ["leaderboard", "--results", out], [out]


@case("cli_values", "perf-captions-missing-file")
def _(ctx):
    caps = ctx.tmp / "no-captions.jsonl"
    return ["perf", "--captions", caps, "--gt-objects", gt_file(ctx), "--json"], [AnyOf(caps, "--captions")]


@case("cli_values", "perf-gt-objects-missing-file")
def _(ctx):
    gt = ctx.tmp / "no-gt.json"
    caps = ctx.write("captions.jsonl", jsonl(*CAPTIONS))
    return ["perf", "--captions", caps, "--gt-objects", gt, "--json"], [AnyOf(gt, "--gt-objects")]


@case("cli_values", "perf-generate-with-missing-captions")
def _(ctx):
    caps = ctx.tmp / "no-captions.jsonl"
    return ["perf", "--generate", "tiny", "--device", "cpu", "--batch", "1", "--captions", caps, "--json"], [
        AnyOf(caps, "--captions")
    ]


@case("cli_values", "perf-generate-device-tpu")
def _(ctx):
    return ["perf", "--generate", "tiny", "--device", "tpu", "--batch", "1", "--json"], ["--device"]


@case("cli_values", "perf-generate-unknown-shape")
def _(ctx):
    return ["perf", "--generate", "llava-2-70b", "--device", "cpu"], ["--generate"]


@case("cli_values", "score-chair-gt-objects-missing-file")
def _(ctx):
    gt = ctx.tmp / "no-gt.json.gz"
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)), gt), [gt]


@case("cli_values", "score-chair-captions-missing-file")
def _(ctx):
    caps = ctx.tmp / "no-captions.jsonl"
    return chair(ctx, caps), [caps]


@case("cli_values", "score-chair-coco-annotations-missing-folder")
def _(ctx):
    ann = ctx.tmp / "no-annotations"
    argv = coco_chair(ctx)
    argv[argv.index("--coco-annotations") + 1] = ann
    return argv, [ann]


@case("cli_values", "score-chair-coco-annotations-is-file")
def _(ctx):
    ann = ctx.write("annotations.json", "{}")
    argv = coco_chair(ctx)
    argv[argv.index("--coco-annotations") + 1] = ann
    return argv, [ann]


@case("cli_values", "score-chair-coco-annotations-without-instances")
def _(ctx):
    ann = ctx.folder("empty-annotations")
    argv = coco_chair(ctx)
    argv[argv.index("--coco-annotations") + 1] = ann
    return argv, [ann]


@case("cli_values", "score-chair-both-ground-truths")
def _(ctx):
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS))) + ["--coco-annotations", coco_annotations(ctx)], [
        "--coco-annotations"
    ]


@case("cli_values", "score-chair-variant-unknown")
def _(ctx):
    return chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS))) + ["--variant", "lemma"], ["--variant"]


@case("cli_values", "score-chair-without-captions-flag")
def _(ctx):
    return ["score", "chair", "--gt-objects", gt_file(ctx)], ["--captions"]


@case("cli_values", "score-chair-save-details-is-folder")
def _(ctx):
    details = ctx.unchanged(ctx.folder("details.jsonl"))
    argv = chair(ctx, ctx.write("captions.jsonl", jsonl(*CAPTIONS)))
    argv[argv.index("--save-details") + 1] = details
    return argv, [AnyOf(details, "--save-details")]


@case("cli_values", "score-pope-parser-unknown")
def _(ctx):
    argv, _f = pope(ctx)
    return argv + ["--parser", "loose"], ["--parser"]


@case("cli_values", "score-pope-labels-dir-missing")
def _(ctx):
    argv, f = pope(ctx)
    shutil.rmtree(f["labels"])
    return argv, [f["labels"]]


@case("cli_values", "score-mme-results-dir-and-answers")
def _(ctx):
    argv, _p = mme_results(ctx, jsonl(*MME_RESULTS))
    return argv + ["--answers", ctx.write("a.jsonl", jsonl(*MME_ANSWERS))], ["--results-dir"]


@case("cli_values", "score-mme-questions-with-results-dir")
def _(ctx):
    argv, _p = mme_results(ctx, jsonl(*MME_RESULTS))
    return argv + ["--questions", ctx.write("q.jsonl", "")], ["--questions"]


@case("cli_values", "score-mme-nothing-to-score")
def _(ctx):
    return ["score", "mme", "--json"], ["--results-dir"]


@case("cli_values", "score-mme-results-dir-missing")
def _(ctx):
    folder = ctx.tmp / "no-results"
    return ["score", "mme", "--results-dir", folder], [folder]


@case("cli_values", "score-mme-results-dir-without-subtasks")
def _(ctx):
    folder = ctx.folder("mme_results")
    ctx.write("mme_results/readme.txt", "hello\n")
    return ["score", "mme", "--results-dir", folder], [folder]


@case("cli_values", "score-mmhal-judge-prompt-with-rule-judge")
def _(ctx):
    prompt = ctx.write("prompt.txt", (FIXTURES / "mmhal" / "reference_judge_prompt.txt").read_text())
    return ["score", "mmhal", "--responses", world_mmhal_responses(ctx), "--judge", "rule", "--judge-prompt", prompt], [
        "--judge-prompt"
    ]


@case("cli_values", "score-mmhal-judge-model-with-judge-replies")
def _(ctx):
    return mmhal(ctx) + ["--judge-model", "gpt-4"], ["--judge-model"]


@case("cli_values", "score-mmhal-openai-judge-without-model")
def _(ctx):
    return [
        "score",
        "mmhal",
        "--responses",
        mmhal_responses(ctx),
        "--judge",
        "openai",
        "--judge-base-url",
        "http://127.0.0.1:9/v1",
    ], ["--judge-model"]


@case("cli_values", "score-mmhal-judge-prompt-three-slots")
def _(ctx):
    prompt = ctx.write("prompt.txt", "Rate {} {} {}.\n")
    return [
        "score",
        "mmhal",
        "--responses",
        mmhal_responses(ctx),
        "--judge",
        "openai",
        "--judge-model",
        "m",
        "--judge-base-url",
        "http://127.0.0.1:9/v1",
        "--judge-prompt",
        prompt,
    ], [prompt]


@case("cli_values", "score-mmhal-judge-unknown")
def _(ctx):
    return ["score", "mmhal", "--responses", mmhal_responses(ctx), "--judge", "gpt"], ["--judge"]


@case("cli_values", "score-mmhal-save-replies-is-folder")
def _(ctx):
    replies = ctx.unchanged(ctx.folder("replies.jsonl"))
    argv = ["score", "mmhal", "--responses", world_mmhal_responses(ctx), "--judge", "rule", "--save-replies", replies]
    return argv, [AnyOf(replies, "--save-replies")]


@case("cli_values", "score-unknown-bench")
def _(ctx):
    return ["score", "chairs", "--captions", "x"], ["chairs"]


@case("cli_values", "unknown-command")
def _(ctx):
    return ["evaluate", "--bench", "chair"], ["evaluate"]


@case("cli_values", "run-without-bench")
def _(ctx):
    return ["run", "--model", "tiny", "--results", ctx.out()], ["--bench"]


@case("cli_values", "run-unknown-flag")
def _(ctx):
    return ["run", "--bench", "chair", "--model", "tiny", "--batchsize", "4", "--results", ctx.out()], ["--batchsize"]


@case("cli_values", "pretrain-world-missing")
def _(ctx):
    world = ctx.tmp / "no-world"
    return ["pretrain", "--world", world, "--out", ctx.out("model")], [world]


@case("cli_values", "pretrain-world-manifest-corrupt")
def _(ctx):
    world = ctx.folder("bad-world")
    manifest = ctx.write("bad-world/manifest.json", '{"seed": 0, ')
    return ["pretrain", "--world", world, "--out", ctx.out("model")], [manifest]


# ============================================================================================ 6. results and caches


def _copy_results(ctx: Ctx, *models: str) -> Path:
    """A results folder with the session's finished tiny/chair run, also under each name of ``models``."""
    out = ctx.tmp / "res"
    shutil.copytree(ctx.corpus.chair_results(), out)
    for m in models:
        shutil.copytree(out / "runs" / "tiny", out / "runs" / m)
    return out


def _compare(ctx: Ctx, out: Path) -> list:
    ctx.unchanged(out)
    return ["compare", "tiny", "other", "--bench", "chair", "--results", out]


def _samples_case(lines_change, line: int, where_file: bool = False):
    def setup(ctx):
        out = _copy_results(ctx, "other")
        samples = out / "runs" / "other" / "chair" / "samples.jsonl"
        rows = samples.read_bytes().splitlines()
        samples.write_bytes(b"\n".join(lines_change(rows)) + b"\n")
        return _compare(ctx, out), [samples if where_file else at(samples, line)]

    return setup


def _json_line(change):
    def edit(rows):
        rec = json.loads(rows[1])
        rows[1] = json.dumps(change(rec)).encode()
        return rows

    return edit


for _cid, _change, _line, _file in [
    ("line-without-key", _json_line(lambda r: {k: v for k, v in r.items() if k != "key"}), 2, False),
    ("key-int", _json_line(lambda r: r | {"key": 5}), 2, False),
    ("line-not-json-in-the-middle", lambda rows: rows[:2] + [b'{"key": "x", "text": '] + rows[2:], 3, False),
    ("line-json-list", lambda rows: rows[:1] + [b"[1, 2]"] + rows[2:], 2, False),
    (
        "line-invalid-utf8",
        lambda rows: rows[:1] + [rows[1].replace(b'"text": "', b'"text": "' + BAD)] + rows[2:],
        2,
        False,
    ),
    ("text-null", _json_line(lambda r: r | {"text": None}), 2, False),
    ("text-int", _json_line(lambda r: r | {"text": 3}), 2, False),
    ("missing-text", _json_line(lambda r: {k: v for k, v in r.items() if k != "text"}), 2, False),
    (
        "image-id-list",
        _json_line(lambda r: r | {"image_id": [r["image_id"]], "question_id": [r["question_id"]]}),
        2,
        False,
    ),
    ("one-sample-missing", lambda rows: rows[:1] + rows[2:], 0, True),
]:
    case("results_caches", f"compare-samples-{_cid}")(_samples_case(_change, _line, _file))


@case("results_caches", "compare-samples-is-folder")
def _(ctx):
    out = _copy_results(ctx, "other")
    samples = out / "runs" / "other" / "chair" / "samples.jsonl"
    samples.unlink()
    samples.mkdir()
    return _compare(ctx, out), [samples]


def _metrics_case(change, key: str | None = None):
    def setup(ctx):
        out = _copy_results(ctx, "other")
        metrics = out / "runs" / "other" / "chair" / "metrics.json"
        metrics.write_bytes(change(metrics.read_bytes()))
        return _compare(ctx, out), [metrics] + ([key] if key else [])

    return setup


def _metrics_json(change):
    return lambda data: json.dumps(change(json.loads(data))).encode()


for _cid, _change, _key in [
    ("not-json", lambda d: d[: len(d) // 2], None),
    ("empty-file", lambda d: b"", None),
    ("top-level-list", _metrics_json(lambda m: [m]), None),
    ("limit-string", _metrics_json(lambda m: m | {"limit": "six"}), "limit"),
    ("overrides-unknown-field", _metrics_json(lambda m: m | {"overrides": {"colour": "red"}}), "overrides"),
    ("overrides-string", _metrics_json(lambda m: m | {"overrides": "x"}), "overrides"),
]:
    case("results_caches", f"compare-metrics-{_cid}")(_metrics_case(_change, _key))


def _frontier_case(content: bytes, key: str | None = None, command: str = "compare"):
    def setup(ctx):
        out = _copy_results(ctx, "other")
        frontier = out / "runs" / "tiny" / "frontier" / "chair" / "frontier.json"
        frontier.parent.mkdir(parents=True, exist_ok=True)
        frontier.write_bytes(content)
        if command == "compare":
            return _compare(ctx, out), [frontier] + ([key] if key else [])
        ctx.unchanged(out)
        return ["leaderboard", "--frontier-model", "tiny", "--results", out], [frontier] + ([key] if key else [])

    return setup


_POINT = {"bias": 0.0, "n": 6, "CHAIRs": 0.5, "CHAIRi": 0.2, "Recall": 0.5, "Len": 0.1, "mean_words": 5.0}
for _cmd in ("compare", "leaderboard"):
    for _cid, _content, _key in [
        ("not-json", b'{"points": [', None),
        ("points-missing", json.dumps({"model": "tiny"}).encode(), "points"),
        ("points-empty", json.dumps({"points": []}).encode(), "points"),
        ("point-not-object", json.dumps({"points": [5]}).encode(), "points"),
        (
            "recall-string",
            json.dumps({"points": [_POINT | {"Recall": "high"}, _POINT | {"bias": 1.0}]}).encode(),
            "Recall",
        ),
        (
            "recall-missing",
            json.dumps({"points": [{k: v for k, v in _POINT.items() if k != "Recall"}]}).encode(),
            "Recall",
        ),
    ]:
        case("results_caches", f"{_cmd}-frontier-json-{_cid}")(_frontier_case(_content, _key, _cmd))


def _leaderboard_metrics_case(change, key: str | None = None):
    def setup(ctx):
        out = _copy_results(ctx)
        metrics = out / "runs" / "tiny" / "chair" / "metrics.json"
        metrics.write_bytes(change(metrics.read_bytes()))
        ctx.unchanged(out)
        return ["leaderboard", "--results", out], [metrics] + ([key] if key else [])

    return setup


for _cid, _change, _key in [
    ("not-json", lambda d: d[: len(d) // 2], None),
    ("top-level-list", _metrics_json(lambda m: [m]), None),
    ("without-metrics", _metrics_json(lambda m: {k: v for k, v in m.items() if k != "metrics"}), "metrics"),
    ("metric-string", _metrics_json(lambda m: m | {"metrics": m["metrics"] | {"CHAIRs": "low"}}), "CHAIRs"),
    ("metric-null", _metrics_json(lambda m: m | {"metrics": m["metrics"] | {"CHAIRi": None}}), "CHAIRi"),
    ("intervals-list", _metrics_json(lambda m: m | {"intervals": [1, 2]}), "intervals"),
    ("interval-wrong-shape", _metrics_json(lambda m: m | {"intervals": m["intervals"] | {"CHAIRs": [0.1]}}), "CHAIRs"),
]:
    case("results_caches", f"leaderboard-metrics-{_cid}")(_leaderboard_metrics_case(_change, _key))


def _run_samples_case(change, line: int | None):
    def setup(ctx):
        out = _copy_results(ctx)
        samples = out / "runs" / "tiny" / "chair" / "samples.jsonl"
        rows = samples.read_bytes().splitlines()
        samples.write_bytes(b"\n".join(change(rows)) + b"\n")
        ctx.unchanged(out)
        return ["run", "--bench", "chair", "--model", "tiny", "--results", out], [
            at(samples, line) if line else samples
        ]

    return setup


for _cid, _change, _line in [
    ("line-without-key", _json_line(lambda r: {k: v for k, v in r.items() if k != "key"}), 2),
    ("line-not-json-in-the-middle", lambda rows: rows[:2] + [b'{"key": '] + rows[2:], 3),
    ("line-json-list", lambda rows: rows[:1] + [b'["key", "1"]'] + rows[2:], 2),
    ("line-invalid-utf8", lambda rows: rows[:1] + [rows[1].replace(b'"text": "', b'"text": "' + BAD)] + rows[2:], 2),
    ("text-null", _json_line(lambda r: r | {"text": None}), 2),
    ("other-protocol", _json_line(lambda r: r | {"protocol": "0123456789abcdef"}), 2),
]:
    case("results_caches", f"run-samples-{_cid}")(_run_samples_case(_change, _line))


def _gt_cache_files(cache: Path) -> list[Path]:
    found = sorted(p for p in cache.rglob("*") if p.is_file() and "gt" in p.name)
    assert found, f"setup: no ground-truth cache file under {cache}: {sorted(cache.rglob('*'))}"
    return found


def _coco_cache_case(corrupt):
    def setup(ctx):
        argv = coco_chair(ctx)
        details = Path(argv[argv.index("--save-details") + 1])
        assert invoke(argv) == 0, "setup: the good COCO scoring failed"
        details.unlink()
        files = _gt_cache_files(ctx.cache)
        for f in files:
            corrupt(f)
        return argv, [AnyOf(*files)]

    return setup


def _corrupt_json(change):
    def corrupt(path: Path):
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return corrupt


for _cid, _corrupt in [
    ("not-json", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    ("empty", lambda p: p.write_bytes(b"")),
    ("invalid-utf8", lambda p: p.write_bytes(BAD + p.read_bytes())),
    ("top-level-list", _corrupt_json(lambda d: list(d))),
    ("values-not-lists", _corrupt_json(lambda d: {k: 5 for k in d})),
]:
    case("results_caches", f"coco-gt-cache-{_cid}")(_coco_cache_case(_corrupt))


@case("results_caches", "run-coco-gt-cache-not-json")
def _(ctx):
    out = _copy_results(ctx)
    argv = ["run", "--bench", "chair", "--model", "tiny", "--results", out]
    assert invoke(argv) == 0, "setup: the cached rerun failed"
    files = _gt_cache_files(ctx.cache)
    for f in files:
        f.write_text("{")
    ctx.unchanged(out)
    return argv, [AnyOf(*files)]


def _start_server(ctx: Ctx, answer):
    from chat_server import ChatServer

    server = ChatServer(answer)
    server.__enter__()
    ctx.finalizers.append(lambda: server.__exit__(None, None, None))
    return server


def _judge_cache_case(corrupt):
    def setup(ctx):
        server = _start_server(ctx, lambda body: "Looks right.\nRating: 4")
        ctx.setenv("OPENAI_API_KEY", "sk-test")
        records = [r | {"model_answer": "There is a dog."} for r in mmhal_template()[:8]]
        responses = mmhal_responses(ctx, records)
        argv = [
            "score",
            "mmhal",
            "--responses",
            responses,
            "--judge",
            "openai",
            "--judge-model",
            "judge-m",
            "--judge-base-url",
            server.url,
            "--json",
        ]
        assert invoke(argv) == 0, "setup: the good judged scoring failed"
        files = sorted(p for p in (ctx.cache / "judge").rglob("*") if p.is_file())
        assert len(files) == 8, f"setup: expected 8 cached replies, found {files}"
        for f in files:
            corrupt(f)
        return argv, [AnyOf(*files)]

    return setup


for _cid, _corrupt in [
    ("not-json", lambda p: p.write_bytes(p.read_bytes()[:20])),
    ("invalid-utf8", lambda p: p.write_bytes(BAD + p.read_bytes())),
    ("top-level-list", _corrupt_json(lambda d: [d])),
    ("without-reply", _corrupt_json(lambda d: {k: v for k, v in d.items() if k != "reply"})),
    ("reply-int", _corrupt_json(lambda d: d | {"reply": 4})),
]:
    case("results_caches", f"judge-cache-{_cid}")(_judge_cache_case(_corrupt))


def _chat_cache_case(corrupt):
    def setup(ctx):
        server = _start_server(ctx, lambda body: "A cup on a table.")
        ctx.model_card("api", f'backend = "openai"\nbase_url = {toml_str(server.url)}\napi_model = "tiny-api"\n')
        assert invoke(["run", "--bench", "chair", "--model", "api", "--results", ctx.tmp / "first"]) == 0, (
            "setup: the good API run failed"
        )
        files = sorted(p for p in (ctx.cache / "api").rglob("*") if p.is_file())
        assert files, "setup: no cached chat answers"
        for f in files:
            corrupt(f)
        return ["run", "--bench", "chair", "--model", "api", "--results", ctx.out()], [AnyOf(*files)]

    return setup


for _cid, _corrupt in [
    ("not-json", lambda p: p.write_bytes(p.read_bytes()[:20])),
    ("without-content", _corrupt_json(lambda d: {k: v for k, v in d.items() if k != "content"})),
    ("content-list", _corrupt_json(lambda d: d | {"content": ["A cup."]})),
]:
    case("results_caches", f"chat-cache-{_cid}")(_chat_cache_case(_corrupt))


def _train_resume_case(target: str, corrupt):
    """Rerun the session's finished training on a copy of its training folder with one file broken."""

    def setup(ctx):
        results, argv = ctx.corpus.trained()
        copy = ctx.tmp / "results"
        shutil.copytree(results, copy)
        run_dir = copy / "train" / "tr"
        [path] = sorted(run_dir.glob(target))
        corrupt(path)
        ctx.unchanged(copy)
        ctx.absent(ctx.models / "tr.toml")
        return argv + ["--results", copy], [path]

    return setup


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


for _cid, _target, _corrupt in [
    ("checkpoint-adapter-truncated", "stage1/checkpoints/step-*/adapter_model.safetensors", _truncate),
    ("checkpoint-adapter-empty", "stage1/checkpoints/step-*/adapter_model.safetensors", lambda p: p.write_bytes(b"")),
    ("checkpoint-optimizer-truncated", "stage1/checkpoints/step-*/optimizer.safetensors", _truncate),
    ("checkpoint-optimizer-groups-not-json", "stage1/checkpoints/step-*/optimizer_groups.json", _truncate),
    ("checkpoint-state-not-json", "stage1/checkpoints/step-*/state.json", _truncate),
    ("checkpoint-state-list", "stage1/checkpoints/step-*/state.json", _corrupt_json(lambda d: [d])),
    (
        "checkpoint-state-step-string",
        "stage1/checkpoints/step-*/state.json",
        _corrupt_json(lambda d: d | {"step": "2"}),
    ),
    ("request-json-not-json", "request.json", _truncate),
    ("request-json-list", "request.json", _corrupt_json(lambda d: [d])),
]:
    case("results_caches", f"train-{_cid}")(_train_resume_case(_target, _corrupt))


def _train_log_case(change, line: int):
    def setup(ctx):
        argv, where = _train_resume_case("stage1/train_log.jsonl", lambda p: p.write_bytes(change(p.read_bytes())))(ctx)
        return argv, [at(where[0], line)]

    return setup


for _cid, _change, _line in [
    ("line-not-json", lambda d: d.splitlines(keepends=True)[0] + b'{"step": 1, "loss"\n', 2),
    ("line-without-step", lambda d: d.splitlines(keepends=True)[0] + b'{"loss": 0.6}\n', 2),
    ("line-json-list", lambda d: d.splitlines(keepends=True)[0] + b"[1]\n", 2),
    ("line-invalid-utf8", lambda d: d.splitlines(keepends=True)[0] + b'{"step": 1, "x": "' + BAD + b'"}\n', 2),
]:
    case("results_caches", f"train-log-{_cid}")(_train_log_case(_change, _line))


@case("results_caches", "run-trained-adapter-truncated")
def _(ctx):
    results, _argv = ctx.corpus.trained()
    adapter = ctx.tmp / "adapter"
    shutil.copytree(results / "train" / "tr" / "stage1" / "adapter", adapter)
    weights = adapter / "adapter_model.safetensors"
    _truncate(weights)
    ctx.model_card("trx", f"path = {toml_str(ctx.tiny)}\nadapter = {toml_str(adapter)}\n")
    return run(ctx, "chair", model="trx"), [AnyOf(weights, adapter)]


@case("results_caches", "run-trained-adapter-config-not-json")
def _(ctx):
    results, _argv = ctx.corpus.trained()
    adapter = ctx.tmp / "adapter"
    shutil.copytree(results / "train" / "tr" / "stage1" / "adapter", adapter)
    config = adapter / "adapter_config.json"
    _truncate(config)
    ctx.model_card("trx", f"path = {toml_str(ctx.tiny)}\nadapter = {toml_str(adapter)}\n")
    return run(ctx, "chair", model="trx"), [AnyOf(config, adapter)]


# ============================================================================================ 7. images


def _first_image(ctx: Ctx, bench: str, world: Path) -> Path:
    if bench == "chair":
        data = json.loads((world / "annotations" / "instances_val.json").read_text())
        first = min(data["images"], key=lambda im: im["id"])
        return world / "images" / "val" / first["file_name"]
    if bench == "pope":
        first = json.loads((world / "pope" / "llava_pope_test.jsonl").read_text().splitlines()[0])
        return world / "images" / "val" / first["image"]
    if bench == "mme":
        image = (world / "mme" / "existence.txt").read_text().split("\t", 1)[0]
        return world / "mme" / "images" / "existence" / image
    first = json.loads((world / "mmhal" / "template.json").read_text())[0]
    return world / first["image_src"]


def _break_image(kind: str, path: Path, ctx: Ctx) -> None:
    if kind == "900-megapixel":
        shutil.copy(ctx.corpus.big_png(), path)
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "text-file":
        path.write_text("this is not a picture\n")
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "is-folder":
        path.unlink()
        path.mkdir()
    else:
        raise AssertionError(kind)


for _bench, _kind in [
    ("chair", "900-megapixel"),
    ("chair", "truncated"),
    ("chair", "text-file"),
    ("chair", "zero-bytes"),
    ("chair", "is-folder"),
    ("pope", "truncated"),
    ("pope", "900-megapixel"),
    ("mme", "zero-bytes"),
    ("mme", "text-file"),
    ("mmhal", "text-file"),
    ("mmhal", "900-megapixel"),
]:

    @case("images", f"run-{_bench}-image-{_kind}")
    def _(ctx, bench=_bench, kind=_kind):
        world = ctx.world_copy()
        image = _first_image(ctx, bench, world)
        _break_image(kind, image, ctx)
        return run(ctx, bench), [image]


for _kind in ("900-megapixel", "truncated", "text-file", "zero-bytes", "is-folder"):

    @case("images", f"train-preference-image-{_kind}")
    def _(ctx, kind=_kind):
        image = ctx.tmp / "images" / "broken.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ctx.corpus.train_images()[0], image)
        _break_image(kind, image, ctx)
        # two records, a batch of two: the broken image is in every step
        bad = ctx.corpus.preference(1) | {"image": str(image)}
        prefs = ctx.write("prefs.jsonl", jsonl(ctx.corpus.preference(0), bad))
        return train(ctx, prefs=prefs), [image]


@case("images", "train-povid-release-image-truncated")
def _(ctx):
    folder = ctx.folder("coco")
    for i, src in enumerate(ctx.corpus.train_images()[:2]):
        shutil.copy(src, folder / f"img{i}.png")
    _break_image("truncated", folder / "img1.png", ctx)
    release = ctx.write("povid.json", json.dumps([_release_entry(i, f"img{i}.png") for i in range(2)]))
    return train(ctx, "--image-root", folder, prefs=release), [folder / "img1.png"]


# ============================================================================================ 8. preferences


def _release_entry(i: int, image: str) -> dict:
    return {
        "id": f"r{i}",
        "image": image,
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe this image."},
            {"from": "gpt", "value": "A dog sits on a couch."},
        ],
        "rejected_conversations": [
            {"from": "human", "value": "<image>\nDescribe this image."},
            {"from": "gpt", "value": "A cat sits on a couch."},
        ],
    }


def _pref(ctx: Ctx, **change) -> dict:
    rec = ctx.corpus.preference(1)
    for k, v in change.items():
        if v is ...:
            rec.pop(k)
        else:
            rec[k] = v
    return rec


for _cid, _change in [
    ("missing-chosen", {"chosen": ...}),
    ("missing-rejected-text", {"rejected_text": ...}),
    ("missing-image", {"image": ...}),
    ("missing-id", {"id": ...}),
    ("empty-chosen", {"chosen": ""}),
    ("blank-chosen", {"chosen": "   "}),
    ("chosen-int", {"chosen": 5}),
    ("prompt-null", {"prompt": None}),
    ("rejected-text-list", {"rejected_text": ["A cat."]}),
    ("rejected-noisy-empty", {"rejected_noisy": ""}),
    ("image-not-found", {"image": "nope/missing.png"}),
    ("image-absolute-missing", {"image": "/nonexistent/povid/missing.png"}),
    ("image-int", {"image": 5}),
    ("image-null", {"image": None}),
    ("image-empty", {"image": ""}),
    ("duplicate-id", {"id": "p0"}),
    ("id-null", {"id": None}),
    ("id-list", {"id": ["p1"]}),
    ("id-object", {"id": {"n": 1}}),
    ("id-bool", {"id": True}),
    ("unknown-field", {"rejected_image": "x.png"}),
    ("rejected-noisy-ids-string", {"rejected_noisy": "A cat.", "rejected_noisy_ids": "1 2 3"}),
    ("rejected-noisy-ids-bools", {"rejected_noisy": "A cat.", "rejected_noisy_ids": [True, False]}),
    ("rejected-noisy-ids-negative", {"rejected_noisy": "A cat.", "rejected_noisy_ids": [-7]}),
    ("noise-step-string", {"noise_step": "500"}),
    ("noise-step-out-of-range", {"noise_step": 5000}),
    ("noise-seed-float", {"noise_seed": 1.5}),
]:

    @case("preferences", f"preferences-{_cid}")
    def _(ctx, change=_change):
        prefs = prefs_file(ctx, _pref(ctx, **change))
        return train(ctx, prefs=prefs), [at(prefs, 2)]


for _cid, _bad in [
    ("record-number", 5),
    ("record-list", ["p1", "a.png"]),
    ("record-string", '"p1"'),
    ("record-null", "null"),
    ("line-not-json", '{"id": "p1", "image": '),
]:

    @case("preferences", f"preferences-{_cid}")
    def _(ctx, bad=_bad):
        prefs = prefs_file(ctx, bad)
        return train(ctx, prefs=prefs), [at(prefs, 2)]


@case("preferences", "preferences-empty-file")
def _(ctx):
    prefs = ctx.write("prefs.jsonl", "")
    return train(ctx, prefs=prefs), [prefs]


@case("preferences", "preferences-file-missing")
def _(ctx):
    prefs = ctx.tmp / "no-prefs.jsonl"
    return train(ctx, prefs=prefs), [prefs]


@case("preferences", "preferences-file-is-folder")
def _(ctx):
    prefs = ctx.folder("prefs.jsonl")
    return train(ctx, prefs=prefs), [prefs]


@case("preferences", "preferences-image-root-missing")
def _(ctx):
    root = ctx.tmp / "no-images"
    prefs = ctx.write("prefs.jsonl", jsonl(*[_pref(ctx, id=f"q{i}", image=f"img{i}.png") for i in range(2)]))
    return train(ctx, "--image-root", root, prefs=prefs), [AnyOf(root, "--image-root")]


def _release_case(build, where_record: str | None = "record 1", image_root: bool = True):
    def setup(ctx):
        folder = ctx.folder("coco")
        for i, src in enumerate(ctx.corpus.train_images()[:4]):
            shutil.copy(src, folder / f"img{i}.png")
        entries = [_release_entry(i, f"img{i}.png") for i in range(4)]
        release = ctx.write("povid.json", build(entries))
        extra = ("--image-root", folder) if image_root else ()
        return train(ctx, *extra, prefs=release), [release] + ([where_record] if where_record else [])

    return setup


def _gpt_answer(entry: dict, value) -> dict:
    """The entry with its preferred (gpt) answer replaced by ``value``."""
    return entry | {"conversations": [entry["conversations"][0], {"from": "gpt", "value": value}]}


def _entry1(change):
    def build(entries):
        entries[1] = change(entries[1])
        return json.dumps(entries)

    return build


for _cid, _build, _where in [
    ("top-level-object", lambda e: json.dumps({"data": e}), None),
    ("empty-list", lambda e: "[]", None),
    ("not-json", lambda e: json.dumps(e)[:100], None),
    ("record-not-object", _entry1(lambda r: "r1"), "record 1"),
    ("missing-conversations", _entry1(lambda r: {k: v for k, v in r.items() if k != "conversations"}), "record 1"),
    ("missing-image", _entry1(lambda r: {k: v for k, v in r.items() if k != "image"}), "record 1"),
    ("conversations-string", _entry1(lambda r: r | {"conversations": "hello"}), "record 1"),
    ("conversations-without-gpt-turn", _entry1(lambda r: r | {"conversations": r["conversations"][:1]}), "record 1"),
    ("conversations-turns-are-strings", _entry1(lambda r: r | {"conversations": ["<image>\nQ", "A"]}), "record 1"),
    ("rejected-conversations-object", _entry1(lambda r: r | {"rejected_conversations": {"from": "gpt"}}), "record 1"),
    ("gpt-value-null", _entry1(lambda r: _gpt_answer(r, None)), "record 1"),
    ("gpt-value-empty", _entry1(lambda r: _gpt_answer(r, "")), AnyOf("record 1", "'r1'")),
    ("image-not-found", _entry1(lambda r: r | {"image": "COCO_train2014_000000000009.jpg"}), "record"),
    ("image-int", _entry1(lambda r: r | {"image": 9}), "record"),
    ("id-list", _entry1(lambda r: r | {"id": ["r1"]}), "record"),
    ("duplicate-id", _entry1(lambda r: r | {"id": "r0"}), "record"),
]:
    case("preferences", f"povid-release-{_cid}")(_release_case(_build, _where))


@case("preferences", "povid-release-without-image-root")
def _(ctx):
    argv, where = _release_case(lambda e: json.dumps(e), None, image_root=False)(ctx)
    return argv, where + ["--image-root"]


# ============================================================================================ the tests


def test_corpus_is_generous():
    counts = {c: len(CASES[c]) for c in CATEGORIES}
    assert sum(counts.values()) >= 200 and all(n >= 5 for n in counts.values()), counts


@pytest.mark.parametrize("setup", CASES["encoding"])
def test_encoding(setup, ctx):
    run_case(setup, ctx)


@pytest.mark.parametrize("setup", CASES["records"])
def test_record_shapes(setup, ctx):
    run_case(setup, ctx)


@pytest.mark.parametrize("setup", CASES["model_cards"])
def test_model_cards(setup, ctx):
    run_case(setup, ctx)


@pytest.mark.parametrize("setup", CASES["bench_cards"])
def test_bench_cards(setup, ctx):
    run_case(setup, ctx)


@pytest.mark.parametrize("setup", CASES["cli_values"])
def test_cli_values(setup, ctx):
    run_case(setup, ctx)


@pytest.mark.parametrize("setup", CASES["results_caches"])
def test_results_caches(setup, ctx):
    run_case(setup, ctx)


@pytest.mark.parametrize("setup", CASES["images"])
def test_images(setup, ctx):
    run_case(setup, ctx)


@pytest.mark.parametrize("setup", CASES["preferences"])
def test_preferences(setup, ctx):
    run_case(setup, ctx)
