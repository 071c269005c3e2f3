"""Preference records for POVID / DPO training, as jsonl, and import of the POVID release's json.

One record per image-question (Zhou et al., "Aligning Modalities in Vision Large Language Models via
Preference Fine-tuning", 2024):

    {"id": "...", "image": "path/to/image.png", "prompt": "Describe this image.",
     "chosen": y_w,                    the ground-truth (preferred) answer
     "rejected_text": y_l^t,           y_w with injected hallucinations (train/inject.py, train/llm_inject.py)
     "rejected_noisy": y_l^n,          optional: the model's greedy answer under the diffusion-noised image
     "rejected_noisy_ids": [...],      optional: y_l^n's token ids exactly as generated (scored as they are:
                                       decoding and re-tokenising can change tokens)
     "noise_step": 500, "noise_seed": 7}  optional: how the noisy image is made again (vlm/noise.py)

``prompt`` is the bare question; the model card's template wraps it (``USER: <image>\\n{prompt} ASSISTANT:``).
``image`` is relative to the image root given when reading (default: the file's folder) unless absolute.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from povid_eval.core.errors import InputError
from povid_eval.core.io import (
    atomic_write_jsonl,
    check_image,
    iter_jsonl,
    read_json,
    require_dir,
    require_id,
    require_text,
)

REQUIRED = ("id", "image", "prompt", "chosen", "rejected_text")
ANSWER_KINDS = {"chosen": "y_w", "rejected_text": "y_l^t", "rejected_noisy": "y_l^n"}  # field -> the paper's symbol
TEXT_FIELDS = ("prompt", *ANSWER_KINDS)


@dataclass(frozen=True)
class Preference:
    id: str
    image: str
    prompt: str
    chosen: str
    rejected_text: str
    rejected_noisy: str | None = None
    rejected_noisy_ids: tuple[int, ...] | None = None
    noise_step: int | None = None
    noise_seed: int | None = None

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["rejected_noisy_ids"] is not None:
            d["rejected_noisy_ids"] = list(d["rejected_noisy_ids"])
        return {k: v for k, v in d.items() if v is not None}


def _check(
    path: Path, line: int | None, rec, image_root: Path | None, check_images: bool, where: str | None = None
) -> Preference:
    """One record, checked: the fields and their types (an id is an integer or a non-empty string; texts are
    non-empty strings; token ids are integers >= 0; noise_step in 1..1000, noise_seed an integer >= 0) and,
    with ``check_images``, that the image is a file. An InputError names the file, line and record."""
    if not isinstance(rec, dict):
        raise InputError(path, f"expected a JSON object, got {type(rec).__name__}", line=line, field=where)
    if "id" in rec:
        require_id(path, rec["id"], "id", line=line, field=where)
        where = where or f"record {rec['id']!r}"
    for key in REQUIRED:
        if key not in rec:
            raise InputError(path, f"missing field '{key}' (expected {', '.join(REQUIRED)})", line=line, field=where)
    unknown = set(rec) - {f.name for f in dataclasses.fields(Preference)}
    if unknown:
        raise InputError(path, f"unknown field(s) {', '.join(sorted(unknown))}", line=line, field=where)
    for key in TEXT_FIELDS:
        value = rec.get(key)
        if value is None and key == "rejected_noisy":
            continue
        if not isinstance(value, str) or not value.strip():
            raise InputError(path, f"'{key}' must be a non-empty string", line=line, field=where)
        require_text(path, value, key, line=line, field=where)
    ids = rec.get("rejected_noisy_ids")
    if ids is not None and (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids)
    ):
        raise InputError(
            path, "'rejected_noisy_ids' must be a non-empty list of token ids (integers >= 0)", line=line, field=where
        )
    for key, low, high in (("noise_step", 1, 1000), ("noise_seed", 0, None)):
        value = rec.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < low or high is not None and value > high
        ):
            bounds = f"in {low}..{high}" if high is not None else f">= {low}"
            raise InputError(
                path, f"'{key}' must be an integer {bounds}, got {json.dumps(value)[:40]}", line=line, field=where
            )
    if not isinstance(rec["image"], str) or not rec["image"]:
        raise InputError(
            path,
            f"'image' must be a path (a non-empty string), got {json.dumps(rec['image'])[:60]}",
            line=line,
            field=where,
        )
    image = Path(rec["image"])
    if not image.is_absolute() and image_root is not None:
        image = image_root / image
    if check_images:
        try:
            check_image(image)
        except InputError as e:
            raise InputError(path, f"{e.message}: {image}", line=line, field=where) from None
    fields = {**rec, "id": str(rec["id"]), "image": str(image)}
    if ids is not None:
        fields["rejected_noisy_ids"] = tuple(ids)
    return Preference(**fields)


def read_preferences(
    path: str | Path, image_root: str | Path | None = None, *, check_images: bool = True
) -> list[Preference]:
    """Records of a preference jsonl, validated: a missing field, an empty response or a missing image is a
    one-line InputError naming the file, the line and the record's id. Duplicate ids are an error too."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if image_root is not None:
        require_dir(root, "image root (--image-root)")
    out, seen = [], {}
    for line, rec in iter_jsonl(path):
        pref = _check(path, line, rec, root, check_images)
        if pref.id in seen:
            raise InputError(
                path, f"duplicate id (first on line {seen[pref.id]})", line=line, field=f"record {pref.id!r}"
            )
        seen[pref.id] = line
        out.append(pref)
    if not out:
        raise InputError(path, "no preference records")
    return out


def answer_lengths(records: Iterable[Preference]) -> dict[str, dict[str, float]]:
    """Mean length of each answer kind over the records that have it: words, and object mentions (CHAIR's
    vocabulary, train/inject.find_mentions); kinds no record has are left out.

    DPO compares summed log-probs, so rejected answers that are systematically longer than y_w give it a
    shortcut: the policy can win by ending its answers early, without looking at the image. On the tiny base,
    y_l^t names 5.0 objects and y_l^n 6.8 against y_w's 4.5, and the tuned model ends its lists early
    (README, "POVID training")."""
    from povid_eval.train.inject import find_mentions

    sums: dict[str, list[float]] = {}
    for r in records:
        for kind in ANSWER_KINDS:
            text = getattr(r, kind)
            if text:
                acc = sums.setdefault(kind, [0, 0, 0])
                acc[0] += 1
                acc[1] += len(text.split())
                acc[2] += len(find_mentions(text))
    return {k: {"words": round(w / n, 2), "objects": round(o / n, 2)} for k, (n, w, o) in sums.items()}


def length_note(lengths: dict[str, dict[str, float]]) -> str:
    """One log line: each kind's mean words / objects, and the rejected kinds that name more objects than y_w."""
    line = "answer lengths (words / objects): " + ", ".join(
        f"{ANSWER_KINDS[k]} {v['words']:.1f} / {v['objects']:.1f}" for k, v in lengths.items()
    )
    if "chosen" not in lengths:
        return line
    base = lengths["chosen"]["objects"]
    longer = [ANSWER_KINDS[k] for k, v in lengths.items() if k != "chosen" and v["objects"] > base]
    if longer:
        line += f"; {' and '.join(longer)} name more objects than y_w: DPO can learn to end answers early"
    return line


def write_preferences(path: str | Path, records: Iterable[Preference]) -> None:
    """Write records as jsonl, atomically."""
    atomic_write_jsonl(path, (r.as_dict() for r in records))


def _conversation_text(conv, role: str, path: Path, field: str) -> str:
    for turn in conv if isinstance(conv, list) else []:
        if isinstance(turn, dict) and turn.get("from") == role and isinstance(turn.get("value"), str):
            return turn["value"]
    raise InputError(path, f"no '{role}' turn with a 'value' string", field=field)


def import_povid_release(path: str | Path, image_folder: str | Path, *, check_images: bool = True) -> list[Preference]:
    """The POVID release's preference json (LLaVA conversations) as records.

    Each entry: ``{"id", "image": "COCO_train2014_....jpg", "conversations": [{"from": "human", "value":
    "<image>\\nquestion"}, {"from": "gpt", "value": y_w}], "rejected_conversations": [..., {"from": "gpt",
    "value": y_l^t}]}``. The ``<image>`` marker and surrounding whitespace are removed from the question (our
    template puts the image back). y_l^n is not in the release: POVID generates it during training.
    """
    path, folder = Path(path), require_dir(image_folder, "image root (--image-root)")
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise InputError(path, "expected a non-empty JSON list of LLaVA conversation records")
    out, seen = [], {}
    for i, entry in enumerate(data):
        where = f"record {i}"
        if not isinstance(entry, dict):
            raise InputError(path, "expected an object", field=where)
        for key in ("image", "conversations", "rejected_conversations"):
            if key not in entry:
                raise InputError(path, f"missing '{key}'", field=where)
        question = _conversation_text(entry["conversations"], "human", path, f"{where}.conversations")
        rec = {
            "id": entry.get("id", i),
            "image": entry["image"],
            "prompt": question.replace("<image>", "").strip(),
            "chosen": _conversation_text(entry["conversations"], "gpt", path, f"{where}.conversations"),
            "rejected_text": _conversation_text(
                entry["rejected_conversations"], "gpt", path, f"{where}.rejected_conversations"
            ),
        }
        pref = _check(path, None, rec, folder, check_images, where=where)
        if pref.id in seen:
            raise InputError(path, f"duplicate id {pref.id!r} (first in record {seen[pref.id]})", field=where)
        seen[pref.id] = i
        out.append(pref)
    return out
