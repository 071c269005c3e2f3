"""MME (Fu et al., "MME: A Comprehensive Evaluation Benchmark for Multimodal Large Language Models", 2023).

Each image has two yes/no questions (one true "Yes", one true "No"), on consecutive lines of its subtask file.
Following the official eval_tool (calculation.py), per subtask:

    parse(pred)  = lower-cased; exactly "yes"/"no", else "yes" if "yes" occurs in its first 4 characters,
                   else "no" if "no" does, else "other" (counted in other_num, always wrong)
    acc          = 100 * correct questions / questions
    acc_plus     = 100 * images with both questions correct / images
    score        = acc + acc_plus                          (points, at most 200)

perception = sum of the scores of the 10 perception subtasks, cognition = sum over the 4 cognition subtasks
(each sum over the subtasks present).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from povid_eval.benches.common import ratio

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION


@dataclass(frozen=True)
class Question:
    """One MME question with its ground truth ("yes"/"no") and the model's raw answer."""

    image: str
    question: str
    answer: str
    prediction: str


def parse_prediction(text: str) -> str:
    """The eval_tool rule (see module docstring)."""
    pred = text.lower()
    if pred in ("yes", "no"):
        return pred
    head = pred[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def score_subtask(questions: list[Question]) -> dict[str, float | int]:
    """acc, acc_plus, score (points), other_num, n_questions; questions come in image pairs (see module)."""
    if len(questions) % 2:
        raise ValueError(f"{len(questions)} questions: MME scores image pairs, an even number is needed")
    preds = [parse_prediction(q.prediction) for q in questions]
    correct = [p == q.answer.lower() for p, q in zip(preds, questions)]
    pairs = len(questions) // 2
    both = sum(correct[2 * i] and correct[2 * i + 1] for i in range(pairs))
    # Same operations in the same order as the eval_tool, so totals agree to the last bit.
    acc = sum(correct) / len(questions) * 100
    acc_plus = both / pairs * 100
    return {
        "acc": acc,
        "acc_plus": acc_plus,
        "score": 0 + acc + acc_plus,
        "other_num": sum(p == "other" for p in preds),
        "n_questions": len(questions),
    }


def score(subtasks: dict[str, list[Question]]) -> dict:
    """{perception, cognition, subtasks: {name: score_subtask(...)}} for the subtasks given."""
    results = {name: score_subtask(qs) for name, qs in subtasks.items()}
    ordered = {name: results[name] for name in SUBTASKS if name in results}
    ordered.update({name: r for name, r in results.items() if name not in ordered})
    return {
        "perception": sum((r["score"] for n, r in ordered.items() if n in PERCEPTION), 0.0),
        "cognition": sum((r["score"] for n, r in ordered.items() if n in COGNITION), 0.0),
        "subtasks": ordered,
    }


def units(subtasks: dict[str, list[Question]]):
    """Per image-pair unit rows for the bootstrap: (matrix, from_sums).

    Columns per subtask: correct questions, pairs with both right, questions, pairs; from_sums gives each
    subtask's score and the perception / cognition totals (as in score(), in points).
    """
    names = list(subtasks)
    matrix = np.zeros((sum(len(q) // 2 for q in subtasks.values()), 4 * len(names)))
    row = 0
    for j, name in enumerate(names):
        qs = subtasks[name]
        for a, b in zip(qs[::2], qs[1::2]):
            right = [parse_prediction(q.prediction) == q.answer.lower() for q in (a, b)]
            matrix[row, 4 * j : 4 * j + 4] = [sum(right), all(right), 2, 1]
            row += 1

    def from_sums(sums) -> dict:
        s = np.asarray(sums, dtype=float)
        out = {}
        for j, name in enumerate(names):
            correct, both, questions, pairs = (s[..., 4 * j + i] for i in range(4))
            out[f"subtasks.{name}.score"] = ratio(correct, questions) * 100 + ratio(both, pairs) * 100
        for group, members in (("perception", PERCEPTION), ("cognition", COGNITION)):
            out[group] = sum((out[f"subtasks.{n}.score"] for n in names if n in members), np.zeros(s.shape[:-1]))
        return out

    return matrix, from_sums
