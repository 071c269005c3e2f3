"""POPE's inputs in LLaVA's layout: the answers (jsonl {question_id, text}), the question file (jsonl with
``category`` = the split) and the label files (coco_pope_<split>.json); the items of a POPE bench card; and
each question's right / wrong for McNemar's test."""

from __future__ import annotations

import json
from pathlib import Path

from povid_eval.benches.base import Item
from povid_eval.benches.common import attach_units, name, records, result
from povid_eval.benches.pope import scorer as pope
from povid_eval.core.errors import InputError
from povid_eval.core.io import iter_jsonl, require_dir, require_fields, require_id, require_text


def load_pope_questions(path: str | Path) -> dict:
    """question_id -> (category, index within its category, text, image)."""
    questions, per_category = {}, {}
    for line, rec in iter_jsonl(path):
        require_fields(Path(path), rec, ("question_id", "category", "text"), line=line)
        qid = require_id(path, rec["question_id"], "question_id", line=line)
        category = rec["category"]
        if not isinstance(category, str) or not category:
            raise InputError(
                path,
                f"'category' must be a split name (random, popular, adversarial), got {json.dumps(category)}",
                line=line,
            )
        require_text(path, rec["text"], "text", line=line)
        if qid in questions:
            raise InputError(path, f"duplicate question_id {qid!r}", line=line)
        index = per_category.get(category, 0)
        per_category[category] = index + 1
        questions[qid] = (category, index, rec["text"], str(rec.get("image", qid)))
    if not questions:
        raise InputError(path, "no questions")
    return questions


def load_pope_labels(labels_dir: Path, split: str) -> list[tuple[int, dict]]:
    path = labels_dir / f"coco_pope_{split}.json"
    if not path.is_file():
        raise InputError(labels_dir, f"no label file coco_pope_{split}.json for questions of category '{split}'")
    labels = list(iter_jsonl(path))
    for line, rec in labels:
        require_fields(path, rec, ("label",), line=line)
        if rec["label"] not in ("yes", "no"):
            raise InputError(path, f"label must be 'yes' or 'no', got {rec['label']!r}", line=line)
        if "text" in rec:
            require_text(path, rec["text"], "text", line=line)
    return labels


def label_mismatch(questions: Path, labels_dir: Path) -> str | None:
    """Why the label files do not belong to the question file (None when they do): per split, the label file
    must have one line per question of that split, and each label line's text (when it has one) must begin
    its question's text, as LLaVA's eval_pope.py pairs them line by line."""
    qs = load_pope_questions(questions)
    by_split: dict[str, list] = {}
    for category, index, text, _ in qs.values():
        by_split.setdefault(category, []).append((index, text))
    for split, rows in sorted(by_split.items()):
        labels = load_pope_labels(Path(labels_dir), split)
        if len(labels) != len(rows):
            return (
                f"coco_pope_{split}.json has {len(labels)} lines for the {len(rows)} {split} questions of "
                f"{Path(questions).name}: another release of the label files"
            )
        for index, text in sorted(rows):
            line, label = labels[index]
            if "text" in label and not str(text).startswith(label["text"]):
                return (
                    f"coco_pope_{split}.json line {line} ({label['text']!r}) does not begin question {index + 1} "
                    f"of {split} ({text!r}): another release of the label files"
                )
    return None


def pope_from_files(
    answers, questions: str | Path, labels_dir: str | Path, parser: str = pope.DEFAULT_PARSER, with_units: bool = False
) -> dict:
    """POPE in LLaVA's layout: answers jsonl + questions jsonl (with category) + coco_pope_<split>.json labels.

    As in LLaVA's eval_pope.py, the k-th question of a category is labelled by line k of that split's label
    file; the label line's text must begin the question's text, so mismatched files are caught.
    """
    if parser not in pope.PARSE:
        raise InputError(None, f"unknown POPE parser '{parser}' (known: {', '.join(pope.PARSERS)})")
    labels_dir = require_dir(labels_dir, "POPE labels folder")
    qs = load_pope_questions(questions)
    labels: dict[str, list] = {}
    by_split: dict[str, list[tuple[int, str, str]]] = {}
    seen = set()
    for line, rec in records(answers):
        require_fields(name(answers), rec, ("question_id", "text"), line=line)
        qid = require_id(name(answers), rec["question_id"], "question_id", line=line)
        require_text(name(answers), rec["text"], "text", line=line)
        if qid not in qs:
            raise InputError(
                name(answers), f"question_id {qid!r} has no question in {questions}, so no label", line=line
            )
        if qid in seen:
            raise InputError(name(answers), f"duplicate answer for question_id {qid!r}", line=line)
        seen.add(qid)
        split, index, text, image = qs[qid]
        if split not in labels:
            labels[split] = load_pope_labels(labels_dir, split)
        if index >= len(labels[split]):
            raise InputError(
                name(answers),
                f"question_id {qid!r} has no label: coco_pope_{split}.json has only {len(labels[split])} lines",
                line=line,
            )
        label_line, label = labels[split][index]
        if "text" in label and not str(text).startswith(label["text"]):
            raise InputError(
                labels_dir / f"coco_pope_{split}.json",
                f"label line does not match question {qid!r} of {questions} ({label['text']!r} vs {text!r})",
                line=label_line,
            )
        by_split.setdefault(split, []).append((index, rec["text"], label["label"], image))
    if not by_split:
        raise InputError(name(answers), "no answers")
    ordered = [s for s in pope.SPLITS if s in by_split] + sorted(s for s in by_split if s not in pope.SPLITS)
    pairs = {s: [(t, lab) for _, t, lab, _ in sorted(by_split[s])] for s in ordered}
    out = result("pope", parser, len(seen), pope.score(pairs, parser))
    if not with_units:
        return out
    rows = [(s, image, pope.PARSE[parser](t), lab) for s in ordered for _, t, lab, image in by_split[s]]
    return attach_units(out, pope.units(rows, ordered))


def items(card) -> list[Item]:
    """One item per question of the card's question file, in file order."""
    path, images = card.data_path("questions"), card.data_path("images")
    out = []
    for line, q in iter_jsonl(path):
        require_fields(path, q, ("question_id", "image", "text", "category"), line=line)
        require_id(path, q["question_id"], "question_id", line=line)
        if not isinstance(q["image"], str) or not q["image"]:
            raise InputError(path, f"'image' must be a file name, got {json.dumps(q['image'])[:60]}", line=line)
        out.append(
            Item(
                str(q["question_id"]),
                images / q["image"],
                card.ask(require_text(path, q["text"], "text", line=line)),
                {"question_id": q["question_id"], "category": q["category"]},
            )
        )
    return out


def correctness(card, samples) -> dict[str, list[bool]]:
    """Whether each question is answered right (the card's parser), per split, in sample order."""
    questions = load_pope_questions(card.data_path("questions"))
    labels: dict[str, list] = {}
    out: dict[str, list[bool]] = {}
    for _, rec in samples:
        split, index, _, _ = questions[rec["question_id"]]
        if split not in labels:
            labels[split] = load_pope_labels(card.data_path("labels"), split)
        out.setdefault(f"{split}.accuracy", []).append(
            pope.PARSE[card.variant](rec["text"]) == labels[split][index][1]["label"]
        )
    return out
