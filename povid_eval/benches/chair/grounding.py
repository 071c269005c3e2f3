"""Per-object grounding: does a captioner name what is in the image more often than what usually goes with it?

CHAIR says how many named objects are absent; it does not say whether a model names an object because it sees
it or because it usually comes with what it sees. On an annotation set with ground-truth object sets G_I (CHAIR's:
instance categories and objects the reference captions name; Rohrbach et al. 2018):

    C[a, b]  = number of images whose G holds both a and b (a != b)                 co-occurrence counts
    A_I      = the K = 3 categories absent from G_I with the largest  sum_{p in G_I} C[p, c] > 0  (ties: by name):
               the image's absent co-occurring objects, as POPE's adversarial negatives are drawn (Li et al.
               2023, "Evaluating Object Hallucination in Large Vision-Language Models")
    N_I      = the categories the caption names (CHAIR's mentions)

    named_present      = sum_I |N_I & G_I| / sum_I |G_I|          (CHAIR's recall)
    named_cooc_absent  = sum_I |N_I & A_I| / sum_I |A_I|
    grounding_gap      = named_present - named_cooc_absent        (1: names what is there, never its partners;
                                                                   0: names partners as often as real objects)
    cooc_share         = hallucinated mentions whose object is in A_I / hallucinated mentions

and per category c the same two rates over the images where c is present, and where c is in A_I.

The gap mixes two things a tuning can change. Signal detection theory (Green & Swets 1966; Macmillan &
Creelman 2005, "Detection Theory: A User's Guide", ch. 1-2) separates them, with hit rate H = named_present and
false-alarm rate F = named_cooc_absent, each with the log-linear correction (Hautus 1995): (k + 0.5) / (n + 1)
for k named of n, so that rates of 0 or 1 stay finite:

    d_prime    = z(H) - z(F)              how well naming tells present objects from their absent partners
                                          (0: not at all; unchanged when a model only says more or less)
    criterion  = -(z(H) + z(F)) / 2       how much evidence the model needs before it names an object
                                          (higher: names less, whether present or absent)

with z the standard normal quantile. Under the model behind them (present and absent objects give normally
distributed evidence of equal spread; an object is named above a threshold), a tuning that only moves the
threshold (says less of everything) lowers F and H together and leaves d_prime where it was; one that grounds
the captions raises d_prime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import NormalDist

import numpy as np

from povid_eval.benches.chair.scorer import UNIT_COLUMNS as CHAIR_COLUMNS
from povid_eval.benches.chair.scorer import from_sums as chair_from_sums
from povid_eval.benches.common import ratio

K = 3

#: unit columns appended to CHAIR's (scorer.UNIT_COLUMNS) when grounding is scored
UNIT_COLUMNS = ("named_cooc", "cooc_absent", "hallucinated_cooc")


class Cooccurrence:
    """Co-occurrence counts of an annotation set's ground-truth object sets, and each image's A_I."""

    def __init__(self, gt: Mapping[str, Iterable[str]], k: int = K):
        self.k = k
        self.categories = sorted({o for objects in gt.values() for o in objects})
        self.index = {c: i for i, c in enumerate(self.categories)}
        presence = np.zeros((len(gt), len(self.categories)), dtype=np.int64)
        for row, objects in enumerate(gt.values()):
            presence[row, [self.index[o] for o in set(objects)]] = 1
        self.counts = presence.T @ presence
        np.fill_diagonal(self.counts, 0)

    def absent_cooccurring(self, present: Iterable[str]) -> list[str]:
        """A_I of an image whose ground truth is ``present`` (module docstring), most co-occurring first."""
        rows = [self.index[o] for o in set(present) if o in self.index]
        if not rows:
            return []
        score = self.counts[rows].sum(axis=0)
        score[rows] = 0
        ranked = sorted((-int(s), self.categories[i]) for i, s in enumerate(score) if s > 0)
        return [name for _, name in ranked[: self.k]]


def unit_row(named: list[str], hallucinated: list[tuple[str, str]], cooc: list[str]) -> list[int]:
    """The image's UNIT_COLUMNS: |N & A|, |A|, hallucinated mentions (with repeats, as CHAIR_i) in A."""
    absent = set(cooc)
    return [len(set(named) & absent), len(absent), sum(o in absent for _, o in hallucinated)]


def from_sums(chair_sums, grounding_sums) -> dict:
    """The grounding metrics of the module docstring from summed CHAIR and grounding unit columns (shape
    (..., 8) and (..., 3)); named_present is CHAIR's Recall."""
    c = np.asarray(chair_sums, dtype=float)
    g = np.asarray(grounding_sums, dtype=float)
    hits, n_present = c[..., CHAIR_COLUMNS.index("recalled")], c[..., CHAIR_COLUMNS.index("gt_objects")]
    present = ratio(hits, n_present)
    absent = ratio(g[..., 0], g[..., 1])
    d_prime, criterion = signal_detection(hits, n_present, g[..., 0], g[..., 1])
    return {
        "named_cooc_absent": absent,
        "grounding_gap": present - absent,
        "cooc_share": ratio(g[..., 2], c[..., CHAIR_COLUMNS.index("hallucinated")]),
        "d_prime": d_prime,
        "criterion": criterion,
    }


_z = np.vectorize(NormalDist().inv_cdf, otypes=[float])  # standard normal quantile, elementwise


def signal_detection(hits, present, false_alarms, absent):
    """(d_prime, criterion) of the module docstring from counts (floats or arrays), with the log-linear
    correction (k + 0.5) / (n + 1) of both rates."""
    z_hit = _z((np.asarray(hits, dtype=float) + 0.5) / (np.asarray(present, dtype=float) + 1))
    z_false = _z((np.asarray(false_alarms, dtype=float) + 0.5) / (np.asarray(absent, dtype=float) + 1))
    return z_hit - z_false, -(z_hit + z_false) / 2


def chair_and_grounding(sums) -> dict:
    """CHAIR's metrics and the grounding metrics from summed rows of CHAIR's and the grounding unit columns."""
    s = np.asarray(sums, dtype=float)
    n = len(CHAIR_COLUMNS)
    return {**chair_from_sums(s[..., :n]), **from_sums(s[..., :n], s[..., n:])}


def per_category(rows: Iterable[dict]) -> dict[str, dict]:
    """Per category, from CHAIR details rows (``mentions``, ``gt_objects``, ``cooc_absent``): {present: images
    where it is present, named_present: the share of them whose caption names it, cooc_absent: images where it is
    an absent co-occurring object, named_cooc_absent: the share of those naming it, gap}. Categories that are
    never present nor absent-co-occurring are left out."""
    tally: dict[str, list[int]] = {}
    for row in rows:
        named = {o for _, o in row["mentions"]}
        for cat in row["gt_objects"]:
            t = tally.setdefault(cat, [0, 0, 0, 0])
            t[0] += 1
            t[1] += cat in named
        for cat in row.get("cooc_absent", []):
            t = tally.setdefault(cat, [0, 0, 0, 0])
            t[2] += 1
            t[3] += cat in named
    out = {}
    for cat, (n_present, n_named, n_absent, n_named_absent) in sorted(tally.items()):
        present = n_named / n_present if n_present else None
        absent = n_named_absent / n_absent if n_absent else None
        out[cat] = {
            "present": n_present,
            "named_present": present,
            "cooc_absent": n_absent,
            "named_cooc_absent": absent,
            "gap": present - absent if present is not None and absent is not None else None,
        }
    return out
