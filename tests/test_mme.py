"""MME reproduces the eval_tool numbers, from LLaVA's layout and from an eval_tool results folder."""

import json

import pytest

from povid_eval.benches.mme import files as mme_files
from povid_eval.benches.mme import scorer as mme


def check_against_expected(metrics, want):
    for group in ("perception", "cognition"):
        assert round(metrics[group], 4) == want[group]["total"]
        for name, sub in want[group]["subtasks"].items():
            got = metrics["subtasks"][name]
            assert {k: round(v, 4) for k, v in got.items()} == sub, name


@pytest.fixture(scope="module")
def llava_result(fixtures):
    d = fixtures / "mme"
    return mme_files.mme_from_llava(
        d / "llava-v1.5-13b" / "answers.jsonl", d / "ground_truth", d / "llava-v1.5-13b" / "llava_mme.jsonl"
    )


def test_reference_numbers_llava_layout(llava_result, expected):
    m = llava_result["metrics"]
    check_against_expected(m, expected("mme")["llava-v1.5-13b"])
    assert (round(m["perception"], 2), round(m["cognition"], 2)) == (1531.32, 295.36)
    assert llava_result["n"] == 2374 and list(m["subtasks"]) == list(mme.SUBTASKS)


def test_prompt_from_answers_without_questions_file(fixtures, llava_result):
    d = fixtures / "mme"
    result = mme_files.mme_from_llava(d / "llava-v1.5-13b" / "answers.jsonl", d / "ground_truth")
    assert result == llava_result


def test_results_dir_gives_same_numbers(tmp_path, fixtures, expected):
    """Write the eval_tool's 4-column files (ground-truth order) and score them."""
    d = fixtures / "mme"
    answers = [json.loads(x) for x in (d / "llava-v1.5-13b" / "answers.jsonl").read_text().splitlines()]
    by_key = {}
    for a in answers:
        sub, image = a["question_id"].split("/")[0], a["question_id"].split("/")[-1]
        for q in mme_files.gt_question_candidates(a["prompt"]):
            by_key[(sub, image, q)] = a["text"]
    for gt in sorted((d / "ground_truth").glob("*.txt")):
        rows = []
        for line in gt.read_text().splitlines():
            image, question, answer = line.split("\t")
            rows.append("\t".join([image, question, answer, by_key[(gt.stem, image, question)]]))
        (tmp_path / gt.name).write_text("\n".join(rows) + "\n")
    result = mme_files.mme_from_results_dir(tmp_path)
    check_against_expected(result["metrics"], expected("mme")["llava-v1.5-13b"])


@pytest.mark.parametrize(
    "text, want",
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes, it is.", "yes"),
        ("No, it is not", "no"),
        ("Not sure", "no"),
        ("I think yes", "other"),
        ("", "other"),
        ("nope", "no"),
    ],
)
def test_parse_prediction(text, want):
    assert mme.parse_prediction(text) == want


def test_acc_plus_needs_both_questions():
    qs = [
        mme.Question("a.jpg", "q1", "yes", "Yes"),
        mme.Question("a.jpg", "q2", "no", "Yes"),
        mme.Question("b.jpg", "q1", "yes", "Yes"),
        mme.Question("b.jpg", "q2", "no", "No"),
    ]
    r = mme.score({"existence": qs})
    assert r["subtasks"]["existence"]["acc"] == 75.0 and r["subtasks"]["existence"]["acc_plus"] == 50.0
    assert r["perception"] == 125.0 and r["cognition"] == 0
