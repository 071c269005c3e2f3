"""Score existing model outputs, in the file formats people already have (`povid-eval score BENCH`).

Each function reads the files, checks them (an InputError names the file, the line or field, and what was
expected), joins answers with ground truth, and calls the bench's pure scorer. The result is
``{"bench", "variant", "n", "metrics"}``. Nothing is written unless asked (CHAIR's details file, atomically).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from povid_eval.benches import coco
from povid_eval.benches.chair import scorer as chair
from povid_eval.benches.mme import scorer as mme
from povid_eval.benches.mmhal import scorer as mmhal
from povid_eval.benches.pope import scorer as pope
from povid_eval.core.errors import InputError
from povid_eval.core.io import (atomic_write_jsonl, iter_jsonl, read_json, read_lines, read_records, require_dir,
                           require_fields, require_id, require_text)


def _result(bench: str, variant: str, n: int, metrics: dict) -> dict:
    return {"bench": bench, "variant": variant, "n": n, "metrics": metrics}


def _records(source, *, listing: bool = False) -> list:
    """(line, record) pairs from a file path, or a list of them as given (samples held in memory)."""
    if isinstance(source, (str, Path)):
        return read_records(source) if listing else list(iter_jsonl(source))
    return list(source)


def _with_units(result: dict, units) -> dict:
    """Attach (unit matrix, from_sums) for bootstrap intervals (report.stats); not part of the JSON output."""
    return {**result, "units": units}


class Located(list):
    """(line, record) pairs held in memory, with the file they were read from (named in errors)."""

    def __init__(self, pairs, path: str | Path):
        super().__init__(pairs)
        self.path = path


def _name(source) -> str | Path:
    return source if isinstance(source, (str, Path)) else getattr(source, "path", "samples")


def _where(line: int | None, index: int) -> dict:
    """Location kwargs for InputError: the line of a jsonl file, else the record index of a JSON list."""
    return {"line": line} if line is not None else {"field": f"record {index}"}


# ------------------------------------------------------------------------------------------------ CHAIR

def chair_from_files(captions, *, gt_objects: str | Path | None = None,
                     coco_annotations: str | Path | None = None, variant: str = chair.DEFAULT_VARIANT,
                     image_id_key: str = "image_id", caption_key: str = "caption",
                     save_details: str | Path | None = None, split: str | None = None,
                     with_units: bool = False) -> dict:
    """CHAIR of a captions file (json list or jsonl; or (line, record) pairs) against a ground-truth map or
    COCO annotations (all instances_*/captions_* files of the folder, or those of one split)."""
    if (gt_objects is None) == (coco_annotations is None):
        raise InputError(None, "give exactly one of --gt-objects FILE or --coco-annotations DIR")
    chair.check_variant(variant)
    records = _records(captions, listing=True)
    if gt_objects is not None:
        gt, gt_source = coco.load_gt_objects(gt_objects), gt_objects
    else:
        gt, gt_source = coco.gt_objects_from_coco(coco_annotations, variant, split), coco_annotations
    scores, texts = [], []
    for i, (line, rec) in enumerate(records):
        where = _where(line, i)
        require_fields(_name(captions), rec, (image_id_key, caption_key), **where)
        caption = require_text(_name(captions), rec[caption_key], caption_key, **where)
        image_id = chair.normalize_image_id(require_id(_name(captions), rec[image_id_key], image_id_key, **where))
        if image_id not in gt:
            raise InputError(_name(captions), f"image_id {rec[image_id_key]!r} has no ground truth in {gt_source}", **where)

        scores.append(chair.score_caption(image_id, caption, gt[image_id], variant))
        texts.append(caption)
    if not scores:
        raise InputError(_name(captions), "no captions")
    if save_details is not None:
        atomic_write_jsonl(save_details, [s.as_dict(t) for s, t in zip(scores, texts)])
    result = _result("chair", variant, len(scores), chair.aggregate(scores))
    return _with_units(result, (chair.unit_matrix(scores), chair.from_sums)) if with_units else result


# ------------------------------------------------------------------------------------------------- POPE

def load_pope_questions(path: str | Path) -> dict:
    """question_id -> (category, index within its category, text, image)."""
    questions, per_category = {}, {}
    for line, rec in iter_jsonl(path):
        require_fields(Path(path), rec, ("question_id", "category", "text"), line=line)
        qid = require_id(path, rec["question_id"], "question_id", line=line)
        category = rec["category"]
        if not isinstance(category, str) or not category:
            raise InputError(path, f"'category' must be a split name (random, popular, adversarial), got "
                                   f"{json.dumps(category)}", line=line)
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


def pope_from_files(answers, questions: str | Path, labels_dir: str | Path,
                    parser: str = pope.DEFAULT_PARSER, with_units: bool = False) -> dict:
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
    for line, rec in _records(answers):
        require_fields(_name(answers), rec, ("question_id", "text"), line=line)
        qid = require_id(_name(answers), rec["question_id"], "question_id", line=line)
        require_text(_name(answers), rec["text"], "text", line=line)
        if qid not in qs:
            raise InputError(_name(answers), f"question_id {qid!r} has no question in {questions}, so no label", line=line)
        if qid in seen:
            raise InputError(_name(answers), f"duplicate answer for question_id {qid!r}", line=line)
        seen.add(qid)
        split, index, text, image = qs[qid]
        if split not in labels:
            labels[split] = load_pope_labels(labels_dir, split)
        if index >= len(labels[split]):
            raise InputError(_name(answers), f"question_id {qid!r} has no label: coco_pope_{split}.json has only "
                                      f"{len(labels[split])} lines", line=line)
        label_line, label = labels[split][index]
        if "text" in label and not str(text).startswith(label["text"]):
            raise InputError(labels_dir / f"coco_pope_{split}.json", f"label line does not match question "
                             f"{qid!r} of {questions} ({label['text']!r} vs {text!r})", line=label_line)
        by_split.setdefault(split, []).append((index, rec["text"], label["label"], image))
    if not by_split:
        raise InputError(_name(answers), "no answers")
    ordered = [s for s in pope.SPLITS if s in by_split] + sorted(s for s in by_split if s not in pope.SPLITS)
    pairs = {s: [(t, lab) for _, t, lab, _ in sorted(by_split[s])] for s in ordered}
    result = _result("pope", parser, len(seen), pope.score(pairs, parser))
    if not with_units:
        return result
    rows = [(s, image, pope.PARSE[parser](t), lab) for s in ordered for _, t, lab, image in by_split[s]]
    return _with_units(result, pope.units(rows, ordered))


# -------------------------------------------------------------------------------------------------- MME

def _check_pairs(path: Path, rows: list[tuple[int, mme.Question]]) -> list[mme.Question]:
    """Rows come in image pairs (consecutive lines of the same image)."""
    if not rows:
        raise InputError(path, "no questions (an MME subtask file has two lines per image)")
    if len(rows) % 2:
        raise InputError(path, f"{len(rows)} questions: MME needs two per image (an even number of lines)")
    for (line_a, a), (line_b, b) in zip(rows[::2], rows[1::2]):
        if a.image != b.image:
            raise InputError(path, f"lines {line_a} and {line_b} should be the two questions of one image, "
                                   f"got {a.image!r} and {b.image!r}", line=line_b)
    return [q for _, q in rows]


def read_mme_tsv(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    """(line, columns) of an MME file: `image<TAB>question<TAB>Yes|No` (+ `<TAB>prediction` when columns == 4),
    exactly that many columns (as eval_tool's calculation.py unpacks them); the third column is checked to
    be a yes/no ground truth."""
    rows = []
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != columns:
            raise InputError(path, f"expected {columns} tab-separated columns, got {len(parts)}", line=lineno)
        if parts[2].strip().lower() not in ("yes", "no"):
            raise InputError(path, f"ground-truth answer must be Yes or No, got {parts[2]!r}", line=lineno)
        rows.append((lineno, parts))
    return rows


def _subtask_files(folder: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(folder.glob("*.txt")) if p.stem in mme.SUBTASKS}
    for path in files.values():
        if not path.is_file():
            raise InputError(path, "MME subtask file expected, found a folder")
    if not files:
        raise InputError(folder, f"no MME subtask files (<subtask>.txt for {', '.join(mme.SUBTASKS)})")
    return files


def _mme_result(subtasks: dict, with_units: bool) -> dict:
    result = _result("mme", "eval_tool", sum(len(q) for q in subtasks.values()), mme.score(subtasks))
    return _with_units(result, mme.units(subtasks)) if with_units else result


def mme_from_results_dir(results_dir: str | Path, with_units: bool = False) -> dict:
    """MME from an eval_tool results folder: <subtask>.txt, lines `image<TAB>question<TAB>gt<TAB>prediction`."""
    folder = require_dir(results_dir, "MME results folder")
    subtasks = {}
    for name, path in _subtask_files(folder).items():
        rows = [(ln, mme.Question(p[0], p[1], p[2].strip().lower(), p[3])) for ln, p in read_mme_tsv(path, 4)]
        subtasks[name] = _check_pairs(path, rows)
    return _mme_result(subtasks, with_units)


LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."
YES_NO = "Please answer yes or no."


def gt_question_candidates(prompt: str) -> list[str]:
    """MME ground-truth question texts a LLaVA-style prompt may stand for (see fixtures README).

    The LLaVA suffix is removed and " Please answer yes or no." appended; 7 ground-truth lines of the
    release have two spaces before "Please", so that spelling is tried second.
    """
    question = prompt.split(LLAVA_SUFFIX)[0].strip()
    if YES_NO in question:
        return [question]
    return [f"{question} {YES_NO}", f"{question}  {YES_NO}"]


def mme_from_llava(answers, ground_truth_dir: str | Path, questions: str | Path | None = None,
                   with_units: bool = False) -> dict:
    """MME in LLaVA's layout: answers jsonl (question_id "<subtask>/<image>", text, prompt) joined with the
    ground-truth folder (<subtask>.txt, `image<TAB>question<TAB>answer`, pairs on consecutive lines).

    The question text comes from the answer's ``prompt``, or from the questions file (same line order).
    Scores keep the ground-truth file's order, so acc+ pairs are the release's pairs.
    """
    gt_dir = require_dir(ground_truth_dir, "MME ground-truth folder")
    gt_rows = {name: read_mme_tsv(path, 3) for name, path in _subtask_files(gt_dir).items()}
    index = {(name, parts[0], parts[1]): pos for name, rows in gt_rows.items() for pos, (_, parts) in enumerate(rows)}
    question_list = list(iter_jsonl(questions)) if questions is not None else None
    answered: dict[str, dict[int, str]] = {}
    for i, (line, rec) in enumerate(_records(answers)):
        require_fields(_name(answers), rec, ("question_id", "text"), line=line)
        qid = str(require_id(_name(answers), rec["question_id"], "question_id", line=line))
        require_text(_name(answers), rec["text"], "text", line=line)
        prompt = rec.get("prompt")
        if prompt is not None:
            require_text(_name(answers), prompt, "prompt", line=line)
        if question_list is not None:
            if i >= len(question_list):
                raise InputError(_name(answers), f"more answers than questions in {questions}", line=line)
            q_line, q = question_list[i]
            require_fields(Path(questions), q, ("question_id", "text"), line=q_line)
            require_id(questions, q["question_id"], "question_id", line=q_line)
            if str(q["question_id"]) != qid:
                raise InputError(_name(answers), f"question_id {qid!r} but line {q_line} of {questions} has "
                                          f"{q['question_id']!r} (answers must follow the questions' order)", line=line)
            prompt = require_text(questions, q["text"], "text", line=q_line)
        if prompt is None:
            raise InputError(_name(answers), "answer has no 'prompt'; pass the questions file (--questions)", line=line)
        subtask, image = qid.split("/")[0], qid.split("/")[-1]
        if subtask not in gt_rows:
            raise InputError(_name(answers), f"subtask {subtask!r} of question_id {qid!r} has no {subtask}.txt in {gt_dir}",
                             line=line)
        pos = next((index[(subtask, image, c)] for c in gt_question_candidates(prompt)
                    if (subtask, image, c) in index), None)
        if pos is None:
            raise InputError(_name(answers), f"no ground truth in {gt_dir / (subtask + '.txt')} for image {image!r} and "
                                      f"question {prompt!r}", line=line)
        if pos in answered.setdefault(subtask, {}):
            raise InputError(_name(answers), f"second answer for the same question of {qid!r}", line=line)
        answered[subtask][pos] = rec["text"]
    if not answered:
        raise InputError(_name(answers), "no answers")
    subtasks = {}
    for name in [s for s in mme.SUBTASKS if s in answered]:
        rows, got = gt_rows[name], answered[name]
        for first in range(0, len(rows) - 1, 2):
            if (first in got) != (first + 1 in got):
                image = rows[first][1][0]
                raise InputError(_name(answers), f"only one of the two questions of {name}/{image} is answered; "
                                          "MME scores image pairs")
        kept = [(rows[p][0], mme.Question(rows[p][1][0], rows[p][1][1], rows[p][1][2].strip().lower(), got[p]))
                for p in sorted(got)]
        subtasks[name] = _check_pairs(gt_dir / f"{name}.txt", kept)
    return _mme_result(subtasks, with_units)


# ------------------------------------------------------------------------------------------------ MMHal

def load_mmhal_template(path: str | Path, *, need_answer: bool = True) -> list[dict]:
    """The MMHal-Bench records (a JSON list), each checked for the template's fields."""
    records = read_json(path)
    if not isinstance(records, list) or not records:
        raise InputError(path, "expected a non-empty JSON list of MMHal-Bench records")
    fields = mmhal.RECORD_FIELDS + (("model_answer",) if need_answer else ())
    for i, rec in enumerate(records):
        require_fields(Path(path), rec, fields, field=f"record {i}")
        for key in ("question", "gt_answer") + (("model_answer",) if need_answer else ()):
            require_text(path, rec[key], key, field=f"record {i}")
        if rec["question_type"] not in mmhal.TYPES:
            raise InputError(path, f"question_type {rec['question_type']!r} is not one of {', '.join(mmhal.TYPES)}",
                             field=f"record {i}")
    return records


def load_judge_replies(path: str | Path, n: int) -> list[str]:
    """jsonl of {"index": i, "reply": "..."}, exactly one per record 0..n-1."""
    replies: dict[int, str] = {}
    for line, rec in iter_jsonl(path):
        require_fields(Path(path), rec, ("index", "reply"), line=line)
        i = rec["index"]
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
            raise InputError(path, f"index must be an integer in 0..{n - 1}, got {i!r}", line=line)
        if i in replies:
            raise InputError(path, f"second reply for record {i}", line=line)
        require_text(path, rec["reply"], "reply", line=line)
        replies[i] = rec["reply"]
    missing = [i for i in range(n) if i not in replies]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise InputError(path, f"no reply for record(s) {shown} (one per template record expected)")
    return [replies[i] for i in range(n)]


def mmhal_result(records: list[dict], replies: list[str], variant: str, with_units: bool = False,
                 judge: dict | None = None) -> dict:
    """Score judge replies with the original parser; ``judge`` (kind, model, prompt_sha256) is recorded in the
    result. Replies without a single 'Rating: N' score 0, as in the original, are counted in
    ``parse_failures`` and announced by a warning line on stderr."""
    metrics = mmhal.score([r["question_type"] for r in records], replies)
    if metrics["parse_failures"]:
        print(f"povid-eval: warning: {metrics['parse_failures']} of {metrics['n']} MMHal judge replies have no single "
              "'Rating: N' (N in 0-6); scored 0 as the original does (metrics.parse_failures)", file=sys.stderr)
    result = _result("mmhal", variant, metrics["n"], metrics)
    if judge is not None:
        result["judge"] = judge
    return _with_units(result, mmhal.units(replies)) if with_units else result


def mmhal_from_files(responses: str | Path, judge_replies: str | Path | None = None, *, judge=None,
                     save_replies: str | Path | None = None) -> dict:
    """MMHal-Bench from the filled template and either judge replies obtained elsewhere (``judge_replies``,
    variant "judge-replies") or a judge to ask now (``judge``: judges.make_judge / build_judge, or any
    callable(record) -> reply; variant "original-parser"). ``save_replies`` writes the judge's replies in the
    --judge-replies layout. Both are read with the original parse rule."""
    if (judge_replies is None) == (judge is None):
        raise InputError(None, "give exactly one of --judge-replies FILE or --judge rule|openai|hf")
    records = load_mmhal_template(responses)
    if judge_replies is not None:
        return mmhal_result(records, load_judge_replies(judge_replies, len(records)), "judge-replies")
    from povid_eval.benches.mmhal import judges

    replies = judges.judge_all(judge, records)
    if save_replies is not None:
        atomic_write_jsonl(save_replies, [{"index": i, "reply": reply} for i, reply in enumerate(replies)])
    return mmhal_result(records, replies, "original-parser", judge=judges.describe(judge))
