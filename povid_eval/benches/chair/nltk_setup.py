"""Put the NLTK data that CHAIR needs where NLTK finds it without any environment variable.

CHAIR tokenises captions with ``nltk.word_tokenize`` (``punkt_tab``); its ``wordnet`` variant also tags
(``averaged_perceptron_tagger_eng``) and lemmatises (``wordnet``). The data goes to ``<sys.prefix>/nltk_data``,
one of NLTK's default search paths, so the project's virtual environment carries its own copy.

Order of attempts, per missing resource:
1. ``nltk.download`` (what a user with internet gets; skipped with ``POVID_EVAL_NLTK_DOWNLOAD=0``);
2. offline assembly from package registries, as described in ``shared/NLTK_OFFLINE.md``:
   WordNet 3.0 from the Debian packages ``wordnet-base`` + ``wordnet-sense-index``, punkt_tab from the
   ``llama-index-core`` wheel, and the tagger from ``textblob-aptagger`` (its averaged-perceptron pickle is
   converted once, here, to NLTK's JSON format; the file is checked against a pinned SHA-256 first).

Run as ``python -m povid_eval.benches.chair.nltk_setup`` (``make setup`` does). Idempotent: it returns at once when the
data is there. Each resource is assembled in a temporary folder and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from povid_eval.core.io import staging_dir

#: resource name -> the path nltk.data.find() resolves
RESOURCES = {
    "punkt_tab": "tokenizers/punkt_tab/english/",
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/",
    "wordnet": "corpora/wordnet",
}

PUNKT_WHEEL = (
    "llama-index-core==0.14.25",
    "llama_index_core-0.14.25-py3-none-any.whl",
    "caa7d9c5ac9b13dc33400cf8d5e92e689b6d1e4497eb9bfa50d6f52ca2eb22a1",
)
TAGGER_WHEEL = (
    "textblob-aptagger==0.2.0",
    "textblob_aptagger-0.2.0-py2.py3-none-any.whl",
    "1ed281f37b3646475503ce77347d0ed92a5f4de176a63c6ab4d1064636067dcc",
)
TAGGER_PICKLE = (
    "textblob_aptagger/trontagger-0.1.0.pickle",
    "1109164b3d28dce58f96b763128bab2fd8754c3921fd3330de2724ac6d1ada7c",
)
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = (
    [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("adj", "adv", "noun", "verb")]
    + [f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")]
    + ["cntlist.rev", "index.sense"]
)

#: WordNet 3.0 lexicographer files in number order (lexnames(5WN)); Debian's packages lack this file.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class SetupError(RuntimeError):
    """A resource could not be assembled; the message says what to do instead."""


def data_dir() -> Path:
    """The NLTK data folder of this environment (on NLTK's default search path)."""
    return Path(sys.prefix) / "nltk_data"


def missing_resources() -> list[str]:
    """Names of the CHAIR resources NLTK cannot find."""
    import nltk

    missing = []
    for name, path in RESOURCES.items():
        try:
            nltk.data.find(path)
        except LookupError:
            missing.append(name)
    return missing


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_online(names: list[str], target: Path) -> list[str]:
    """Try nltk.download; return the names still missing."""
    if os.environ.get("POVID_EVAL_NLTK_DOWNLOAD", "1") == "0":
        return names

    import nltk

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        for name in names:
            try:  # nltk prints its own errors (to print_error_to); offline they would be three paragraphs
                with contextlib.redirect_stdout(io.StringIO()):
                    nltk.download(
                        name, download_dir=str(target), quiet=True, raise_on_error=True, print_error_to=io.StringIO()
                    )
            except Exception:  # offline: any network error means "use the offline route"
                pass
    finally:
        socket.setdefaulttimeout(old)
    return missing_resources()


def _pip_download(spec: str, filename: str, digest: str, workdir: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--disable-pip-version-check",
        spec,
        "-d",
        str(workdir),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    path = workdir / filename
    if result.returncode != 0 or not path.exists():
        raise SetupError(f"could not download {spec} from the package registry: {result.stderr.strip()[-300:]}")
    if sha256(path) != digest:
        raise SetupError(f"{filename}: SHA-256 differs from the pinned {digest}; refusing to use it")
    return path


def _install_into(target: Path, relpath: str, build) -> None:
    """Run build(tmpdir) and rename the result to target/relpath (atomic per resource)."""
    final = target / relpath
    with staging_dir(final) as tmp:
        build(tmp)


def _punkt_tab(target: Path, workdir: Path) -> None:
    wheel = _pip_download(*PUNKT_WHEEL, workdir)
    prefix = "llama_index/core/_static/nltk_cache/tokenizers/punkt_tab/"

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                rel = member[len(prefix) :]
                if member.startswith(prefix) and (rel == "README" or rel.startswith("english/")):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(zf.read(member))

    _install_into(target, "tokenizers/punkt_tab", build)


def _tagger(target: Path, workdir: Path) -> None:

    wheel = _pip_download(*TAGGER_WHEEL, workdir)
    member, digest = TAGGER_PICKLE
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(member)
    if hashlib.sha256(raw).hexdigest() != digest:
        raise SetupError(f"{member}: SHA-256 differs from the pinned {digest}; refusing to unpickle it")
    # The one pickle this project ever loads: a known, hash-checked file, converted to JSON at set-up.
    weights, tagdict, classes = pickle.loads(raw, encoding="latin1")
    name = "averaged_perceptron_tagger_eng"

    def build(tmp: Path) -> None:
        for suffix, obj in (("weights", weights), ("tagdict", tagdict), ("classes", sorted(classes))):
            (tmp / f"{name}.{suffix}.json").write_text(json.dumps(obj))

    _install_into(target, f"taggers/{name}", build)


def _wordnet(target: Path) -> None:
    if not (WORDNET_DIR / "data.noun").exists():
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            raise SetupError(
                "WordNet 3.0 missing: install the Debian packages wordnet-base and "
                "wordnet-sense-index, or run `python -m nltk.downloader wordnet` with internet"
            )
        install = [apt, "install", "-y", "-q", "--no-install-recommends", "wordnet-base", "wordnet-sense-index"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run([apt, "update", "-q"], capture_output=True, env=env)
            result = subprocess.run(install, capture_output=True, text=True, env=env)
            if result.returncode != 0:
                raise SetupError(f"apt-get install wordnet-base wordnet-sense-index failed: {result.stderr[-300:]}")

    def build(tmp: Path) -> None:
        for name in WORDNET_FILES:
            shutil.copyfile(WORDNET_DIR / name, tmp / name)  # copies: NLTK refuses links leaving its root
        lines = [f"{i:02d}\t{name}\t{POS_NUMBER[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
        (tmp / "lexnames").write_text("\n".join(lines) + "\n")

    _install_into(target, "corpora/wordnet", build)


def ensure_nltk_data(verbose: bool = True) -> list[str]:
    """Make every CHAIR resource findable; return the names that were added."""
    missing = missing_resources()
    if not missing:
        return []
    target = data_dir()
    target.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"NLTK data missing ({', '.join(missing)}); assembling it in {target}", flush=True)
    still = _download_online(missing, target)
    if still and verbose:
        print(f"nltk.download unavailable for {', '.join(still)}: assembling from package registries", flush=True)
    with tempfile.TemporaryDirectory() as work:
        builders = {
            "punkt_tab": lambda: _punkt_tab(target, Path(work)),
            "averaged_perceptron_tagger_eng": lambda: _tagger(target, Path(work)),
            "wordnet": lambda: _wordnet(target),
        }
        for name in still:
            builders[name]()
    left = missing_resources()
    if left:
        raise SetupError(f"NLTK data still missing after set-up: {', '.join(left)}")
    return missing


def main() -> int:
    try:
        ensure_nltk_data()
    except SetupError as e:
        print(f"povid-eval setup: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
