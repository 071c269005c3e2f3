"""MMHal-Bench: the original rating parser, and a score table computed by hand."""

import json

import pytest

from povid_eval.benches.mmhal import scorer as mmhal


@pytest.mark.parametrize(
    "reply, want",
    [
        ("Explanation... Rating: 5", 5),
        ("rating: 0, not informative", 0),
        ("RATING: 6", 6),
        ("Rating: 2 ... on reflection Rating: 4", None),
        ("no rating here", None),
        ("Rating: 7", None),
        ("Rating:3", None),
    ],
)
def test_parse_rating(reply, want):
    assert mmhal.parse_rating(reply) == want


def test_template_order_is_type_cycle(fixtures):
    records = json.loads((fixtures / "mmhal" / "response_template.json").read_text())
    assert len(records) == 96
    assert [r["question_type"] for r in records] == [mmhal.TYPES[i % 8] for i in range(96)]


def test_score_by_hand(tmp_path, fixtures, cli):
    records = json.loads((fixtures / "mmhal" / "response_template.json").read_text())
    for r in records:
        r["model_answer"] = "An answer."
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(records))
    # record i gets rating i % 7, except records 5 and 40 which are unparseable (scored 0)
    replies = []
    for i in range(96):
        reply = (
            f"Short explanation.\nRating: {i % 7}" if i not in (5, 40) else "I cannot decide. Rating: 3 or Rating: 4"
        )
        replies.append({"index": i, "reply": reply})
    judge = tmp_path / "replies.jsonl"
    judge.write_text("".join(json.dumps(r) + "\n" for r in reversed(replies)))
    ratings = [0 if i in (5, 40) else i % 7 for i in range(96)]
    per_type = {t: sum(ratings[k] for k in range(j, 96, 8)) / 12 for j, t in enumerate(mmhal.TYPES)}
    proc = cli("score", "mmhal", "--responses", responses, "--judge-replies", judge, "--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)["metrics"]
    assert m["score"] == pytest.approx(sum(ratings) / 96)
    assert m["hallucination_rate"] == pytest.approx(sum(r < 3 for r in ratings) / 96)
    assert m["per_type"] == pytest.approx(per_type) and list(m["per_type"]) == list(mmhal.TYPES)
    assert m["parse_failures"] == 2 and m["n"] == 96
    assert sum(ratings) == 273  # 13 cycles of 0..6 (273) + 0..4 (10) - the two failures (5 + 5)
