"""Per-object grounding (benches/chair/grounding.py): co-occurring absent objects, rates, per category."""

import itertools
import json
from statistics import NormalDist

import numpy as np
import pytest

from povid_eval.benches import coco
from povid_eval.benches.chair import files as chair_files
from povid_eval.benches.chair import grounding
from povid_eval.benches.chair import scorer as chair

GT = {
    "1": {"dog", "frisbee"},
    "2": {"dog", "frisbee", "bench"},
    "3": {"dog", "person"},
    "4": {"frisbee", "bench"},
}


def test_absent_cooccurring_is_popes_adversarial_ranking():
    cooc = grounding.Cooccurrence(GT)
    assert cooc.counts[cooc.index["dog"], cooc.index["frisbee"]] == 2
    assert cooc.counts[cooc.index["dog"], cooc.index["dog"]] == 0
    # present {dog}: frisbee 2, then bench 1 and person 1 (a tie, by name)
    assert cooc.absent_cooccurring({"dog"}) == ["frisbee", "bench", "person"]
    # present {frisbee}: dog 2, bench 2 (tie, by name); person never co-occurs with a frisbee: not a partner
    assert cooc.absent_cooccurring({"frisbee"}) == ["bench", "dog"]
    assert grounding.Cooccurrence(GT, k=1).absent_cooccurring({"dog", "bench"}) == ["frisbee"]
    assert cooc.absent_cooccurring({"zebra"}) == []


def _brute_force(captions, gt, variant="singularize", k=3):
    """The module docstring's definitions, written out with dicts and loops."""
    pairs = {}
    for objects in gt.values():
        for a, b in itertools.permutations(sorted(objects), 2):
            pairs[a, b] = pairs.get((a, b), 0) + 1
    cats = sorted({o for objects in gt.values() for o in objects})
    named_present = present = named_absent = absent = halluc = halluc_cooc = 0
    for image_id, caption in captions:
        g = gt[image_id]
        score = {c: sum(pairs.get((p, c), 0) for p in g) for c in cats if c not in g}
        a = sorted((c for c in score if score[c] > 0), key=lambda c: (-score[c], c))[:k]
        m = chair.caption_mentions(caption, variant)
        named = set(m.objects)
        named_present += len(named & g)
        present += len(g)
        named_absent += len(named & set(a))
        absent += len(a)
        halluc += sum(o not in g for o in m.objects)
        halluc_cooc += sum(o not in g and o in a for o in m.objects)
    z = NormalDist().inv_cdf
    z_hit, z_false = z((named_present + 0.5) / (present + 1)), z((named_absent + 0.5) / (absent + 1))
    return {
        "named_cooc_absent": named_absent / absent,
        "grounding_gap": named_present / present - named_absent / absent,
        "cooc_share": halluc_cooc / halluc,
        "d_prime": z_hit - z_false,
        "criterion": -(z_hit + z_false) / 2,
    }


def test_llava_captions_against_the_definitions(fixtures):
    gt = coco.load_gt_objects(fixtures / "chair/coco2014_gt_objects.json.gz")
    path = fixtures / "chair/llava-1.5-7b_greedy_captions.jsonl"
    captions = [(str(r["image_id"]), r["caption"]) for r in map(json.loads, path.read_text().splitlines())]
    plain = chair_files.chair_from_files(path, gt_objects=fixtures / "chair/coco2014_gt_objects.json.gz")
    got = chair_files.chair_from_files(
        path, gt_objects=fixtures / "chair/coco2014_gt_objects.json.gz", with_grounding=True
    )
    want = _brute_force(captions, gt)
    for key, value in want.items():
        assert got["metrics"][key] == pytest.approx(value, rel=1e-12), key
    for key, value in plain["metrics"].items():  # CHAIR's own numbers are untouched
        assert got["metrics"][key] == value, key


def test_units_bootstrap_and_details(tmp_path):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({k: sorted(v) for k, v in GT.items()}))
    captions = tmp_path / "captions.jsonl"
    rows = [
        {"image_id": 1, "caption": "A dog with a frisbee on a bench."},  # bench hallucinated, a partner of both
        {"image_id": 3, "caption": "A man and a dog."},
        {"image_id": 4, "caption": "A bench and a cat."},  # cat: hallucinated, not a partner
    ]
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    details = tmp_path / "details.jsonl"
    out = chair_files.chair_from_files(
        captions, gt_objects=gt_path, with_grounding=True, with_units=True, save_details=details
    )
    matrix, from_sums = out["units"]
    assert matrix.shape == (3, len(chair.UNIT_COLUMNS) + len(grounding.UNIT_COLUMNS))
    # image 1: A = [bench, person]; image 3: A = [frisbee, bench]; image 4: A = [dog]
    assert matrix[:, -3:].tolist() == [[1, 2, 1], [0, 2, 0], [0, 1, 0]]
    m = out["metrics"]
    assert m["named_cooc_absent"] == pytest.approx(1 / 5)
    assert m["grounding_gap"] == pytest.approx(m["Recall"] - 1 / 5)
    assert m["cooc_share"] == pytest.approx(1 / 2)
    batched = from_sums(np.stack([matrix.sum(axis=0), matrix[:2].sum(axis=0)]))  # bootstrap resamples
    assert batched["cooc_share"].tolist() == [0.5, 1.0]
    written = [json.loads(line) for line in details.read_text().splitlines()]
    assert [r["cooc_absent"] for r in written] == [["bench", "person"], ["frisbee", "bench"], ["dog"]]
    per = grounding.per_category(written)
    assert per["bench"] == {
        "present": 1,
        "named_present": 1.0,
        "cooc_absent": 2,
        "named_cooc_absent": 0.5,
        "gap": 0.5,
    }
    assert per["person"]["named_present"] == 1.0 and per["person"]["cooc_absent"] == 1
    assert per["frisbee"]["gap"] == 0.5 and "cat" not in per  # named in 1 of its 2 images, never when absent


def _sums(hits, present, false_alarms, absent):
    """CHAIR and grounding unit sums holding only what the signal-detection numbers read."""
    c = np.zeros(len(chair.UNIT_COLUMNS))
    c[chair.UNIT_COLUMNS.index("recalled")], c[chair.UNIT_COLUMNS.index("gt_objects")] = hits, present
    return c, np.array([false_alarms, absent, 0.0])


def test_d_prime_separates_discrimination_from_criterion():
    z, phi = NormalDist().inv_cdf, NormalDist().cdf
    n = 10**7  # the log-linear correction is negligible at this size
    # one observer (d' = 2) at three criteria: saying less of everything moves c, not d'
    for c in (-0.5, 0.0, 0.7):
        hits, false_alarms = round(n * phi(1 - c)), round(n * phi(-1 - c))
        m = grounding.from_sums(*_sums(hits, n, false_alarms, n))
        assert m["d_prime"] == pytest.approx(2.0, abs=1e-3) and m["criterion"] == pytest.approx(c, abs=1e-3)
    # small counts: Hautus's (k + 0.5) / (n + 1), finite at rates of 0 and 1
    m = grounding.from_sums(*_sums(20, 20, 0, 10))
    assert m["d_prime"] == pytest.approx(z(20.5 / 21) - z(0.5 / 11), rel=1e-12)
    assert m["criterion"] == pytest.approx(-(z(20.5 / 21) + z(0.5 / 11)) / 2, rel=1e-12)
    chance = grounding.from_sums(*_sums(30, 60, 15, 30))  # names half of each: no discrimination, c = 0
    assert chance["d_prime"] == pytest.approx(0.0, abs=1e-12) and chance["criterion"] == pytest.approx(0.0, abs=1e-12)
    batched = grounding.from_sums(np.stack(_sums(30, 60, 15, 30)[0:1] * 2), np.array([[15, 30, 0], [3, 30, 0]]))
    assert batched["d_prime"].shape == (2,) and batched["d_prime"][1] > batched["d_prime"][0]
