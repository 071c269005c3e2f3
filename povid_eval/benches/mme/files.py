"""MME's inputs: LLaVA-layout answers joined with the ground-truth folder (<subtask>.txt: image, question,
Yes/No), or an eval_tool results folder (<subtask>.txt with the prediction as a 4th column); the items of an
MME bench card, image pairs kept whole; each question's right / wrong for McNemar's test."""

from __future__ import annotations

from pathlib import Path

from povid_eval.benches.base import Item
from povid_eval.benches.common import attach_units, records, result
from povid_eval.benches.common import name as source_name
from povid_eval.benches.mme import scorer
from povid_eval.core.errors import InputError
from povid_eval.core.io import iter_jsonl, read_lines, require_dir, require_fields, require_id, require_text


def _check_pairs(path: Path, rows: list[tuple[int, scorer.Question]]) -> list[scorer.Question]:
    """Rows come in image pairs (consecutive lines of the same image)."""
    if not rows:
        raise InputError(path, "no questions (an MME subtask file has two lines per image)")
    if len(rows) % 2:
        raise InputError(path, f"{len(rows)} questions: MME needs two per image (an even number of lines)")
    for (line_a, a), (line_b, b) in zip(rows[::2], rows[1::2]):
        if a.image != b.image:
            raise InputError(
                path,
                f"lines {line_a} and {line_b} should be the two questions of one image, "
                f"got {a.image!r} and {b.image!r}",
                line=line_b,
            )
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
    files = {p.stem: p for p in sorted(folder.glob("*.txt")) if p.stem in scorer.SUBTASKS}
    for path in files.values():
        if not path.is_file():
            raise InputError(path, "MME subtask file expected, found a folder")
    if not files:
        raise InputError(folder, f"no MME subtask files (<subtask>.txt for {', '.join(scorer.SUBTASKS)})")
    return files


def _mme_result(subtasks: dict, with_units: bool) -> dict:
    out = result("mme", "eval_tool", sum(len(q) for q in subtasks.values()), scorer.score(subtasks))
    return attach_units(out, scorer.units(subtasks)) if with_units else out


def mme_from_results_dir(results_dir: str | Path, with_units: bool = False) -> dict:
    """MME from an eval_tool results folder: <subtask>.txt, lines `image<TAB>question<TAB>gt<TAB>prediction`."""
    folder = require_dir(results_dir, "MME results folder")
    subtasks = {}
    for name, path in _subtask_files(folder).items():
        rows = [(ln, scorer.Question(p[0], p[1], p[2].strip().lower(), p[3])) for ln, p in read_mme_tsv(path, 4)]
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


def mme_from_llava(
    answers, ground_truth_dir: str | Path, questions: str | Path | None = None, with_units: bool = False
) -> dict:
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
    for i, (line, rec) in enumerate(records(answers)):
        require_fields(source_name(answers), rec, ("question_id", "text"), line=line)
        qid = str(require_id(source_name(answers), rec["question_id"], "question_id", line=line))
        require_text(source_name(answers), rec["text"], "text", line=line)
        prompt = rec.get("prompt")
        if prompt is not None:
            require_text(source_name(answers), prompt, "prompt", line=line)
        if question_list is not None:
            if i >= len(question_list):
                raise InputError(source_name(answers), f"more answers than questions in {questions}", line=line)
            q_line, q = question_list[i]
            require_fields(Path(questions), q, ("question_id", "text"), line=q_line)
            require_id(questions, q["question_id"], "question_id", line=q_line)
            if str(q["question_id"]) != qid:
                raise InputError(
                    source_name(answers),
                    f"question_id {qid!r} but line {q_line} of {questions} has "
                    f"{q['question_id']!r} (answers must follow the questions' order)",
                    line=line,
                )
            prompt = require_text(questions, q["text"], "text", line=q_line)
        if prompt is None:
            raise InputError(
                source_name(answers), "answer has no 'prompt'; pass the questions file (--questions)", line=line
            )
        subtask, image = qid.split("/")[0], qid.split("/")[-1]
        if subtask not in gt_rows:
            raise InputError(
                source_name(answers),
                f"subtask {subtask!r} of question_id {qid!r} has no {subtask}.txt in {gt_dir}",
                line=line,
            )
        pos = next(
            (index[(subtask, image, c)] for c in gt_question_candidates(prompt) if (subtask, image, c) in index), None
        )
        if pos is None:
            raise InputError(
                source_name(answers),
                f"no ground truth in {gt_dir / (subtask + '.txt')} for image {image!r} and question {prompt!r}",
                line=line,
            )
        if pos in answered.setdefault(subtask, {}):
            raise InputError(source_name(answers), f"second answer for the same question of {qid!r}", line=line)
        answered[subtask][pos] = rec["text"]
    if not answered:
        raise InputError(source_name(answers), "no answers")
    subtasks = {}
    for name in [s for s in scorer.SUBTASKS if s in answered]:
        rows, got = gt_rows[name], answered[name]
        for first in range(0, len(rows) - 1, 2):
            if (first in got) != (first + 1 in got):
                image = rows[first][1][0]
                raise InputError(
                    source_name(answers),
                    f"only one of the two questions of {name}/{image} is answered; MME scores image pairs",
                )
        kept = [
            (rows[p][0], scorer.Question(rows[p][1][0], rows[p][1][1], rows[p][1][2].strip().lower(), got[p]))
            for p in sorted(got)
        ]
        subtasks[name] = _check_pairs(gt_dir / f"{name}.txt", kept)
    return _mme_result(subtasks, with_units)


def items(card) -> list[Item]:
    """Two items per image (its yes and its no question), subtask by subtask in the release's order."""
    gt_dir, images = card.data_path("ground_truth"), card.data_path("images")
    out = []
    for subtask_ in scorer.SUBTASKS:
        path = gt_dir / f"{subtask_}.txt"
        if not path.is_file():
            continue
        for k, (_, (image, question, _answer)) in enumerate(read_mme_tsv(path, 3)):
            out.append(
                Item(
                    f"{subtask_}/{image}/{k % 2}",
                    image_path(images, subtask_, image),
                    card.ask(question),
                    {"question_id": f"{subtask_}/{image}"},
                )
            )
    return out


def image_path(root: Path, subtask: str, image: str) -> Path:
    """An MME image: <subtask>/<image>, or <subtask>/images/<image> as the release ships five subtasks
    (artwork, celebrity, landmark, posters, scene)."""
    flat = root / subtask / image
    nested = root / subtask / "images" / image
    return nested if not flat.exists() and nested.exists() else flat


def correctness(card, samples) -> dict[str, list[bool]]:
    """Whether each question is answered right (eval_tool's parser), over all questions, in sample order."""
    answers = {}
    for subtask_ in scorer.SUBTASKS:
        path = card.data_path("ground_truth") / f"{subtask_}.txt"
        if path.is_file():
            for k, (_, (image, _q, answer)) in enumerate(read_mme_tsv(path, 3)):
                answers[f"{subtask_}/{image}/{k % 2}"] = answer.lower()
    return {"accuracy": [scorer.parse_prediction(rec["text"]) == answers[rec["key"]] for _, rec in samples]}
