"""`povid-eval doctor`: before a long run, check in seconds every asset it will need, and say how to get
what is missing.

Each check is a ``Check(asset, ok, detail, fix)``: the asset kind (model weights, tokenizer, images, ...), the
verdict, what was found or is missing (with the path), and the exact command or download that fixes it.
Checks never load weights, never send a model request (an endpoint is probed with ``GET {base_url}/models``,
5 s timeout) and never print a key. ``povid-eval run`` calls the same checks first (bench data always, the
model only when something must be generated) and stops with one line per problem.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from povid_eval import cards
from povid_eval.core.errors import MissingAssetError

MIN_FREE_GB = 1.0
PROBE_TIMEOUT_S = 5.0

FIX = {
    "coco_images": "wget http://images.cocodataset.org/zips/val2014.zip && unzip val2014.zip -d {root}/coco/",
    "coco_annotations": "wget http://images.cocodataset.org/annotations/annotations_trainval2014.zip && "
                        "unzip annotations_trainval2014.zip -d {root}/coco/",
    "pope": "LLaVA's playground/data/eval/pope/llava_pope_test.jsonl (haotian-liu/LLaVA) and "
            "output/coco/coco_pope_{{random,popular,adversarial}}.json (github.com/RUCAIBox/POPE) into {root}/pope/",
    "mme": "the MME release (request it at github.com/BradyFU/Awesome-Multimodal-Large-Language-Models, "
           "Evaluation branch): unzip MME_Benchmark_release_version and eval_tool into {root}/MME/",
    "mmhal": "hf download Shengcao1006/MMHal-Bench --repo-type dataset --local-dir {root}/mmhal",
    "nltk": "make setup (assembles the NLTK data offline), or with internet: "
            "python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet",
}


@dataclass(frozen=True)
class Check:
    asset: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.asset}: {self.detail}" + (f" (fix: {self.fix})" if self.fix and not self.ok else "")


def _file(asset: str, path: Path, fix: str = "") -> Check:
    return Check(asset, path.is_file(), f"{path}" + ("" if path.is_file() else " not found"), fix)


def _images(asset: str, paths: list[Path], fix: str) -> Check:
    missing = [p for p in dict.fromkeys(paths) if not p.is_file()]
    total = len(set(paths))
    if missing:
        return Check(asset, False, f"{len(missing)} of {total} images missing (e.g. {missing[0]})", fix)
    return Check(asset, True, f"{total} images under {os.path.commonpath([str(p) for p in paths]) if paths else '-'}")


# ----------------------------------------------------------------------------------------------- model

def _device_check(device: str) -> Check | None:
    if not device.startswith("cuda"):
        return None
    import torch

    ok = torch.cuda.is_available()
    return Check("device", ok, f"{device}: " + ("CUDA available" if ok else "CUDA is not available here"),
                 "run on a GPU node, or set device = \"cpu\" (slow for 7B models)")


def probe_endpoint(base_url: str, key_env: str, asset: str) -> list[Check]:
    """Key presence and ``GET {base_url}/models`` (5 s): reachable, and the key accepted.

    The GET goes through the chat client's opener (openai_client.open_endpoint): a redirect to another origin
    fails the check and the key is not sent there; the key is redacted from every detail."""
    import http.client

    from povid_eval.core.http import ChatAPIError, open_endpoint, redact

    out = []
    key = os.environ.get(key_env) if key_env else None
    if key_env:
        out.append(Check(f"{asset} key", bool(key), f"${key_env} " + ("is set" if key else "is not set"),
                         f"export {key_env}=<your key>"))

    def endpoint(ok: bool, detail: str, fix: str = "") -> Check:
        return Check(f"{asset} endpoint", ok, redact(detail, key), fix)

    try:
        with open_endpoint(base_url.rstrip("/") + "/models", key, PROBE_TIMEOUT_S) as response:
            out.append(endpoint(True, f"{base_url} answers (HTTP {response.status})"))
    except urllib.error.HTTPError as e:
        ok = e.code not in (401, 403)
        out.append(endpoint(ok, f"{base_url} answers HTTP {e.code}" + ("" if ok else ": the key was refused"),
                            f"check ${key_env or 'the key'}"))
    except ChatAPIError as e:  # a redirect refused (another origin): one line that says so, the key redacted
        out.append(endpoint(False, str(e)))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        out.append(endpoint(False, f"{base_url} unreachable ({reason})",
                            "start the server or check base_url (and that this node can reach it)"))
    return out


def model_checks(card: cards.ModelCard) -> list[Check]:
    if card.backend == "openai":
        return probe_endpoint(card.base_url, card.api_key_env, "model")
    from povid_eval.vlm.convert import cached_snapshot
    from povid_eval.vlm.model import (adapter_problems, allow_downloads, detect_format, download_command, is_hub_id,
                                      model_dir_problems)

    out = []
    path = card.resolve(card.path)
    if not path.exists() and is_hub_id(card.path):
        cached = cached_snapshot(card.path)
        name = card.path.split("/")[-1]
        fix = f"{download_command(card.path)} and set path = \"models/{name}\" in the card"
        if cached is None:
            allowed = allow_downloads()
            out.append(Check("model weights", allowed, f"{card.path}: not in the local HF cache" +
                             (" (will be downloaded: POVID_EVAL_ALLOW_DOWNLOADS=1)" if allowed else ""), fix))
            return out
        path = cached
    if not path.is_dir():
        return [Check("model weights", False, f"{path}: folder not found", "download the checkpoint there, or fix "
                      f"`path` in models/{card.name}.toml")]
    fmt = detect_format(path) if card.format == "auto" else card.format
    if fmt == "llava":
        from povid_eval.vlm.convert import check_original_llava

        problems = check_original_llava(path, model_base=card.resolve(card.model_base) if card.model_base else None,
                                        vision_tower=card.resolve(card.vision_tower) if card.vision_tower else None)
        out += [Check("model (original LLaVA format)", False, p) for p in problems]
        if not problems:
            out.append(Check("model (original LLaVA format)", True, f"{path}: converted on load"))
    else:
        missing = model_dir_problems(path)
        kinds = {"weights": "model weights", "tokenizer": "tokenizer", "image processor": "processor",
                 "config.json": "model config"}
        for key, asset in kinds.items():
            gone = [m for m in missing if m.startswith(key)]
            out.append(Check(asset, not gone, f"{path}: " + (f"missing {gone[0]}" if gone else "present"),
                             "re-download the checkpoint folder completely"))
    if card.adapter:
        adapter = card.resolve(card.adapter)
        missing = adapter_problems(adapter)
        out.append(Check("adapter", not missing, f"{adapter}: " + (f"missing {', '.join(missing)}" if missing
                         else "PEFT adapter"), "train it (povid-eval train) or fix `adapter` in the card"))
    device = _device_check(card.device)
    return out + ([device] if device else [])


# ----------------------------------------------------------------------------------------------- bench

def _nltk_check(variant: str) -> Check:
    from povid_eval.benches.chair.nltk_setup import missing_resources

    needed = {"punkt_tab"} | ({"averaged_perceptron_tagger_eng", "wordnet"} if variant == "wordnet" else set())
    missing = sorted(set(missing_resources()) & needed)
    return Check("NLTK data", not missing, f"missing {', '.join(missing)}" if missing else
                 f"{', '.join(sorted(needed))} found", FIX["nltk"])


def _chair_checks(card: cards.BenchCard, root: str) -> list[Check]:
    out = [_file("annotations (instances)", card.data_path("instances"), FIX["coco_annotations"].format(root=root))]
    ann = card.data_path("annotations")
    captions = sorted(ann.glob("captions_*.json")) if ann.is_dir() else []
    out.append(Check("annotations (captions)", bool(captions), f"{ann}: " + (", ".join(p.name for p in captions)
                     if captions else "no captions_*.json"), FIX["coco_annotations"].format(root=root)))
    if card.image_ids:
        out.append(_file("image list", cards.resolve_path(card.image_ids), "pass --image-ids FILE or fix the card"))
    return out + [_nltk_check(card.variant)]


def _pope_checks(card: cards.BenchCard, root: str) -> list[Check]:
    from povid_eval.core.io import iter_jsonl

    fix = FIX["pope"].format(root=root)
    out = [_file("POPE questions", card.data_path("questions"), fix)]
    if not out[0].ok:
        return out
    for split in sorted({q.get("category", "?") for _, q in iter_jsonl(card.data_path("questions"))}):
        out.append(_file(f"POPE labels ({split})", card.data_path("labels") / f"coco_pope_{split}.json", fix))
    return out


def _mme_checks(card: cards.BenchCard, root: str) -> list[Check]:
    from povid_eval.benches.mme import scorer as mme

    gt = card.data_path("ground_truth")
    present = [s for s in mme.SUBTASKS if (gt / f"{s}.txt").is_file()]
    return [Check("MME ground truth", bool(present), f"{gt}: {len(present)} of {len(mme.SUBTASKS)} subtask files"
                  + ("" if present else " (none)"), FIX["mme"].format(root=root))]


def judge_checks(card: cards.BenchCard, judge_prompt: str | Path | None = None) -> list[Check]:
    """MMHal's judge: a rule judge on real data, the judge model, key and endpoint, the prompt's four slots."""
    out = []
    if card.bench != "mmhal":
        return out
    if card.judge == "rule" and not card.world:
        out.append(Check("judge", False, "the rule judge is valid on the synthetic world only",
                         "set judge = \"openai\" (or \"hf\") and judge_model in the bench card"))
    elif card.judge == "openai":
        if not card.judge_model:
            out.append(Check("judge", False, "judge = \"openai\" needs judge_model (a pinned model name)",
                             "set judge_model in the bench card"))
        out += probe_endpoint(card.judge_base_url or "https://api.openai.com/v1",
                              card.judge_key_env or "OPENAI_API_KEY", "judge")
    elif card.judge == "hf":
        folder = cards.resolve_path(card.judge_model) if card.judge_model else None
        ok = folder is not None and (folder / "config.json").is_file()
        out.append(Check("judge model", ok, f"{folder or '(judge_model not set)'}" + ("" if ok else ": no config.json"),
                         "set judge_model to a local causal LM folder"))
    prompt = Path(judge_prompt) if judge_prompt else None  # a --judge-prompt path is relative to the cwd
    if prompt is None and card.judge_prompt:
        prompt = cards.resolve_path(card.judge_prompt)
    if prompt is not None:
        from povid_eval.core.errors import PovidError
        from povid_eval.benches.mmhal.judges import load_judge_prompt

        try:
            load_judge_prompt(prompt)
            out.append(Check("judge prompt", True, f"{prompt}: four {{}} slots"))
        except PovidError as e:
            out.append(Check("judge prompt", False, str(e), "use a prompt with four {} slots: image contents, "
                             "question, standard answer, model answer"))
    return out


def _mmhal_checks(card: cards.BenchCard, root: str) -> list[Check]:
    return [_file("MMHal template", card.data_path("template"), FIX["mmhal"].format(root=root))]


_DATA_CHECKS = {"chair": _chair_checks, "pope": _pope_checks, "mme": _mme_checks, "mmhal": _mmhal_checks}
_IMAGE_FIX = {"chair": "coco_images", "pope": "coco_images", "mme": "mme", "mmhal": "mmhal"}


def _world_pending(card: cards.BenchCard) -> bool:
    return card.world and not (card.data_path() / "manifest.json").is_file()


def data_checks(card: cards.BenchCard) -> list[Check]:
    """The files a bench's items are built from (annotations, question files, ground truth, template, image
    list) and the NLTK data CHAIR scores with; images are ``image_check``'s."""
    if _world_pending(card):
        return [Check("synthetic world", True, f"{card.data_path()}: built on first use (under a minute)")]
    return _DATA_CHECKS[card.bench](card, card.data)


def image_check(card: cards.BenchCard, items) -> Check:
    """Every image the bench's items (runner.card_items) name is there."""
    fix = f"povid-eval world build --out {card.data}" if card.world else FIX[_IMAGE_FIX[card.bench]]
    return _images("images", [it.image for it in items], fix.format(root=card.data))


def bench_checks(card: cards.BenchCard, judge_prompt: str | Path | None = None) -> list[Check]:
    """data_checks, then (when they pass and the data exists) image_check of the bench's items, judge_checks."""
    out = data_checks(card)
    if all(c.ok for c in out) and not _world_pending(card):
        from povid_eval.run.runner import card_items

        out.append(image_check(card, card_items(card)))
    return out + judge_checks(card, judge_prompt)


def disk_check(out: str | Path, need_gb: float = MIN_FREE_GB) -> Check:
    folder = Path(out).resolve()
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        why = "a read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else "no write permission"
        return Check("disk", False, f"{folder} is not writable ({why})", "give a folder you can write to with --out")
    free = shutil.disk_usage(folder).free / 1e9
    return Check("disk", free >= need_gb, f"{free:.1f} GB free under {folder} ({need_gb:g} GB wanted for results)",
                 "free some space or pass --out on a larger disk")


def checks(model: str | None = None, bench: str | None = None, *, out: str | Path = "results",
           data: str | None = None, judge_prompt: str | None = None) -> list[Check]:
    """Every check for a model card and/or bench cards (``bench`` may be a set: all, real)."""
    import dataclasses

    found = []
    if model:
        found += model_checks(cards.load_model_card(model))
    for name in cards.bench_names(bench) if bench else []:
        card = cards.load_bench_card(name)
        if data:
            card = dataclasses.replace(card, data=str(Path(data).resolve()))
        found += [dataclasses.replace(c, asset=f"{card.name}: {c.asset}") for c in bench_checks(card, judge_prompt)]
    return found + [disk_check(out)]


def require(found: list[Check], what: str) -> None:
    """Raise MissingAssetError naming every failed check with its fix, on one line."""
    failed = [c for c in found if not c.ok]
    if failed:
        raise MissingAssetError(f"{what}: " + "; ".join(c.line() for c in failed) + " (`povid-eval doctor` checks all)")


def report(found: list[Check]) -> str:
    width = max((len(c.asset) for c in found), default=0)
    lines = []
    for c in found:
        lines.append(f"{'ok' if c.ok else 'MISSING':<8} {c.asset:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':<8} {'':<{width}}  fix: {c.fix}")
    failed = sum(not c.ok for c in found)
    lines.append(f"{len(found) - failed} ok, {failed} missing" + ("" if failed else ": ready to run"))
    return "\n".join(lines)


def as_json(found: list[Check]) -> str:
    return json.dumps([c.__dict__ for c in found])
