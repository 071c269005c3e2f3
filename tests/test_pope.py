"""POPE reproduces LLaVA's eval_pope.py numbers; parser rules and the question/label join."""

import json

import pytest

from povid_eval.benches.pope import files as pope_files
from povid_eval.benches.pope import scorer as pope


def test_reference_numbers(fixtures, expected):
    d = fixtures / "pope"
    result = pope_files.pope_from_files(d / "llava-v1.5-13b_answers.jsonl", d / "llava_pope_test.jsonl", d)
    want = expected("pope")
    got = result["metrics"]
    assert got["mean_f1"] == want["mean_f1"]
    for split in pope.SPLITS:
        assert got[split] == {k: want[split][k] for k in got[split]}
        assert set(got[split]) == {"accuracy", "precision", "recall", "f1", "yes_ratio", "n", "TP", "FP", "TN", "FN"}
    assert result["n"] == 8910 and round(got["mean_f1"], 6) == 0.859469


def test_cli_json(fixtures, cli):
    d = fixtures / "pope"
    proc = cli(
        "score",
        "pope",
        "--answers",
        d / "llava-v1.5-13b_answers.jsonl",
        "--questions",
        d / "llava_pope_test.jsonl",
        "--labels-dir",
        d,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metrics"]["adversarial"]["TP"] == 1182


@pytest.mark.parametrize(
    "text, want",
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("No.", "no"),
        ("There is no dog.", "no"),
        ("Yes, there is not.", "no"),
        ("It is not present", "no"),
        ("NO", "yes"),
        ("no, there is none", "no"),
        ("Yes. No.", "yes"),
        ("", "yes"),
    ],
)
def test_llava_parser(text, want):
    assert pope.parse_llava(text) == want  # the reference rule, quirks included ("NO" is a yes)


def test_strict_parser_counts_unknown():
    assert [pope.parse_strict(t) for t in ("Yes.", " no ", "Yes, there is", "maybe")] == [
        "yes",
        "no",
        "unknown",
        "unknown",
    ]
    m = pope.score({"random": [("Yes", "yes"), ("maybe", "yes"), ("maybe", "no"), ("No", "no")]}, parser="strict")
    r = m["random"]
    assert (r["TP"], r["FN"], r["TN"], r["FP"], r["unknown"]) == (1, 1, 1, 0, 2)
    assert r["accuracy"] == 0.5 and r["yes_ratio"] == 0.25


def test_zero_denominators_are_zero():
    r = pope.score({"random": [("No", "no"), ("No", "yes")]})["random"]
    assert r["precision"] == 0.0 and r["f1"] == 0.0 and r["recall"] == 0.0


def test_partial_answers_join_by_question(tmp_path, fixtures):
    d = fixtures / "pope"
    lines = (d / "llava-v1.5-13b_answers.jsonl").read_text().splitlines()
    subset = [x for x in lines if json.loads(x)["question_id"] > 10000000][:50]  # random/popular only
    subset.reverse()  # order of the answers file does not matter
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(subset) + "\n")
    result = pope_files.pope_from_files(answers, d / "llava_pope_test.jsonl", d)
    assert list(result["metrics"]) == ["random", "mean_f1"] and result["n"] == 50
