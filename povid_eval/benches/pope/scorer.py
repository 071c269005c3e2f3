"""POPE: Polling-based Object Probing Evaluation (Li et al., "Evaluating Object Hallucination in Large
Vision-Language Models", EMNLP 2023).

Binary questions "Is there a {object} in the image?" with label yes/no; positive = yes. Per split:

    accuracy  = (TP + TN) / N          precision = TP / (TP + FP)       recall = TP / (TP + FN)
    f1        = 2 P R / (P + R)        yes_ratio = #(predicted yes) / N

and LLaVA-1.5's headline ``mean_f1`` = the mean F1 of the random, popular and adversarial splits.
A ratio with a zero denominator is reported as 0.0 (the reference code divides by zero).

Answer parsers:
    ``llava``   the reference rule (LLaVA eval_pope.py): keep the text before the first '.', drop ',',
                split on ' '; "no" when the words contain "No", "no" or "not", otherwise "yes".
    ``strict``  lower-cased, stripped of surrounding space and final punctuation, the answer must be exactly
                "yes" or "no"; anything else is "unknown": wrong for accuracy, a false negative when the label
                is yes, never a predicted yes; counted in ``unknown``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import numpy as np

from povid_eval.benches.common import as_floats, ratio

SPLITS = ("adversarial", "popular", "random")  # sorted, as LLaVA lists the label files
PARSERS = ("llava", "strict")
DEFAULT_PARSER = "llava"


def parse_llava(text: str) -> str:
    """LLaVA's POPE rule (see module docstring)."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse_strict(text: str) -> str:
    answer = text.strip().lower().rstrip(".!").strip()
    return answer if answer in ("yes", "no") else "unknown"


PARSE: dict[str, Callable[[str], str]] = {"llava": parse_llava, "strict": parse_strict}


def confusion(predictions: Iterable[str], labels: Iterable[str]) -> dict[str, int]:
    """TP/FP/TN/FN (positive = yes) and the count of unknown predictions."""
    counts = {"TP": 0, "FP": 0, "TN": 0, "FN": 0, "unknown": 0, "n": 0, "yes": 0}
    for pred, label in zip(predictions, labels, strict=True):
        counts["n"] += 1
        positive = label == "yes"
        if pred == "yes":
            counts["yes"] += 1
            counts["TP" if positive else "FP"] += 1
        elif pred == "no":
            counts["FN" if positive else "TN"] += 1
        else:
            counts["unknown"] += 1
            if positive:
                counts["FN"] += 1
    return counts


RATE_COLUMNS = ("TP", "FP", "TN", "FN", "yes", "n")


def rates(tp, fp, tn, fn, yes, n) -> dict:
    """accuracy, precision, recall, f1, yes_ratio from counts (floats or arrays of bootstrap sums)."""
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "accuracy": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "yes_ratio": ratio(yes, n),
    }


def split_metrics(counts: dict[str, int]) -> dict[str, float | int]:
    """accuracy, precision, recall, f1, yes_ratio and the counts, from confusion()."""
    out = {
        **as_floats(rates(*(counts[c] for c in RATE_COLUMNS))),
        **{c: counts[c] for c in ("n", "TP", "FP", "TN", "FN")},
    }
    if counts["unknown"]:
        out["unknown"] = counts["unknown"]
    return out


def units(rows: list[tuple[str, str, str, str]], splits: list[str]):
    """Per-image unit rows for the bootstrap, from (split, image, prediction, label) of each question.

    Returns (matrix, from_sums): columns RATE_COLUMNS for each split in order; from_sums gives each split's
    rates and mean_f1, so all questions of an image (in every split) move together.
    """
    images = {image: i for i, image in enumerate(dict.fromkeys(r[1] for r in rows))}
    matrix = np.zeros((len(images), len(splits) * len(RATE_COLUMNS)))
    width = len(RATE_COLUMNS)
    for split, image, pred, label in rows:
        c = confusion([pred], [label])
        base = splits.index(split) * width
        matrix[images[image], base : base + width] += [c[k] for k in RATE_COLUMNS]

    def from_sums(sums) -> dict:
        s = np.asarray(sums, dtype=float)
        out = {}
        for j, split in enumerate(splits):
            for name, value in rates(*(s[..., j * width + i] for i in range(width))).items():
                out[f"{split}.{name}"] = value
        out["mean_f1"] = sum(out[f"{split}.f1"] for split in splits) / len(splits)
        return out

    return matrix, from_sums


def score(answers_by_split: dict[str, list[tuple[str, str]]], parser: str = DEFAULT_PARSER) -> dict:
    """Metrics per split from {split: [(answer text, label), ...]}, plus mean_f1 over the splits present."""
    if parser not in PARSE:
        raise ValueError(f"unknown POPE parser '{parser}' (known: {', '.join(PARSERS)})")
    parse = PARSE[parser]
    metrics: dict = {}
    for split, pairs in answers_by_split.items():
        metrics[split] = split_metrics(confusion([parse(t) for t, _ in pairs], [label for _, label in pairs]))
    f1s = [metrics[s]["f1"] for s in answers_by_split]
    metrics["mean_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
    return metrics


# ------------------------------------------------------------------------------------------ question builder

STRATEGIES = ("random", "popular", "adversarial")
QUESTION = "Is there a {} in the image?"


def build_pope_questions(
    image_objects: dict,
    n_images: int,
    seed: int,
    strategy: str,
    frequency: dict[str, int] | None = None,
    cooccurrence: dict[str, dict[str, int]] | None = None,
) -> list[dict]:
    """POPE questions (Li et al. 2023) from ground-truth objects: ``{image: [category, ...]}`` in annotation
    order (e.g. povid_eval.benches.coco.image_objects of a COCO instances file; keys become the ``image`` field).

        images     those with >= 3 distinct categories; n_images of them drawn with random.Random(seed)
                   (the same images for every strategy)
        positives  the first three distinct categories of the image, each followed by one negative:
        random       uniform over the categories absent from the image (random.Random(f"pope:{seed}"))
        popular      the most frequent absent categories, most frequent first
        adversarial  for the i-th positive, the absent category that co-occurs with it most often (ties:
                     co-occurrence with all the image's objects, then frequency, then name); never twice
        frequency    images containing a category; cooccurrence[a][b] = images containing both. Both are
                     computed from image_objects unless given (e.g. from a larger annotation set).
    Records: {"question_id" (from 1), "image", "text": "Is there a {object} in the image?", "label"}.
    Categories are those of image_objects, frequency and cooccurrence together.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown POPE strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    from povid_eval.benches import coco

    objects = {image: list(dict.fromkeys(objs)) for image, objs in image_objects.items()}
    frequency = frequency if frequency is not None else coco.frequency_from_objects(objects)
    cooccurrence = cooccurrence if cooccurrence is not None else coco.cooccurrence_from_objects(objects)
    categories = sorted({c for objs in objects.values() for c in objs} | set(frequency) | set(cooccurrence))
    eligible = sorted((image for image, objs in objects.items() if len(objs) >= 3), key=str)
    images = random.Random(seed).sample(eligible, min(n_images, len(eligible)))
    rng = random.Random(f"pope:{seed}")
    questions = []
    for image in images:
        positives = objects[image][:3]
        absent = [c for c in categories if c not in objects[image]]
        negatives = _negatives(strategy, positives, objects[image], absent, frequency, cooccurrence, rng)
        for pos, neg in zip(positives, negatives):
            for name, label in ((pos, "yes"), (neg, "no")):
                questions.append(
                    {
                        "question_id": len(questions) + 1,
                        "image": str(image),
                        "text": QUESTION.format(name),
                        "label": label,
                    }
                )
    return questions


def _negatives(strategy, positives, present, absent, frequency, cooccurrence, rng) -> list[str]:
    if len(absent) < len(positives):
        raise ValueError(f"only {len(absent)} categories absent from an image: POPE needs {len(positives)}")
    if strategy == "random":
        return rng.sample(absent, len(positives))
    if strategy == "popular":
        return sorted(absent, key=lambda c: (-frequency.get(c, 0), c))[: len(positives)]
    chosen: list[str] = []
    for pos in positives:
        row = cooccurrence.get(pos, {})
        total = {c: sum(cooccurrence.get(p, {}).get(c, 0) for p in present) for c in absent}
        best = min(
            (c for c in absent if c not in chosen), key=lambda c: (-row.get(c, 0), -total[c], -frequency.get(c, 0), c)
        )
        chosen.append(best)
    return chosen
