"""A toy fifth bench, in one folder, to show that adding a bench touches nothing else: "name the scene".

Items: one question per line of the card's ``questions`` file (jsonl ``{"id", "image", "question", "answer"}``,
images relative to ``images``). Score: accuracy = mean over questions of [answer word in the model's text]
(case-insensitive); the unit is one question, ``from_sums`` = (correct, n) -> accuracy. `povid-eval score toy
--answers A --questions Q` scores existing answers (jsonl ``{"question_id", "text"}``).
"""

from __future__ import annotations

import numpy as np

from povid_eval.benches.base import Bench, Item, Metric
from povid_eval.benches.common import Located, attach_units, name, records, result
from povid_eval.core.errors import InputError
from povid_eval.core.io import iter_jsonl, require_fields, require_text


def read_questions(path) -> dict[str, dict]:
    out = {}
    for line, rec in iter_jsonl(path):
        require_fields(path, rec, ("id", "image", "question", "answer"), line=line)
        out[str(rec["id"])] = rec
    return out


def from_sums(sums):
    sums = np.asarray(sums, dtype=float)
    return {"accuracy": np.divide(sums[..., 0], sums[..., 1], out=np.zeros(sums.shape[:-1]), where=sums[..., 1] > 0)}


def score_answers(answers, questions_path, with_units: bool = False) -> dict:
    questions = read_questions(questions_path)
    rows = []
    for line, rec in records(answers):
        require_fields(name(answers), rec, ("question_id", "text"), line=line)
        qid = str(rec["question_id"])
        if qid not in questions:
            raise InputError(name(answers), f"question_id {qid!r} is not in {questions_path}", line=line)
        text = require_text(name(answers), rec["text"], "text", line=line)
        rows.append([float(questions[qid]["answer"].lower() in text.lower()), 1.0])
    if not rows:
        raise InputError(name(answers), "no answers")
    units = np.array(rows)
    out = result("toy", "contains", len(rows), {"accuracy": float(from_sums(units.sum(0))["accuracy"])})
    return attach_units(out, (units, from_sums)) if with_units else out


class ToyBench(Bench):
    name = "toy"
    title = "Toy scenes"
    variants = ("contains",)
    files = ("questions", "images")
    metrics = (Metric("accuracy", "Toy accuracy", True, panel=("Toy accuracy (higher is better)", "fraction")),)
    score_help = "the toy scene bench"

    def items(self, card):
        folder = card.data_path("images")
        return [
            Item(qid, folder / q["image"], card.ask(q["question"]), {"question_id": qid})
            for qid, q in read_questions(card.data_path("questions")).items()
        ]

    def score(self, card, samples, *, with_units=False, details=None, **options):
        return score_answers(
            Located(samples, getattr(samples, "path", "samples")), card.data_path("questions"), with_units=with_units
        )

    def add_score_arguments(self, p):
        p.add_argument("--answers", required=True, help="jsonl of {question_id, text}")
        p.add_argument("--questions", required=True, help="jsonl of {id, image, question, answer}")

    def score_files(self, args):
        return score_answers(args.answers, args.questions)


BENCH = ToyBench()
