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

from typing import Callable, Iterable

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


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def split_metrics(counts: dict[str, int]) -> dict[str, float | int]:
    """accuracy, precision, recall, f1, yes_ratio and the counts, from confusion()."""
    tp, fp, tn, fn, n = counts["TP"], counts["FP"], counts["TN"], counts["FN"], counts["n"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    out = {
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "yes_ratio": _ratio(counts["yes"], n),
        "n": n, "TP": tp, "FP": fp, "TN": tn, "FN": fn,
    }
    if counts["unknown"]:
        out["unknown"] = counts["unknown"]
    return out


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
