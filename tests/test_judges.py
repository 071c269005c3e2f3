"""The rule judge (synthetic world only): ratings on the MMHal 0-6 rubric, read by the original parser."""

import pytest

from povid_eval.benches.mmhal import scorer as mmhal
from povid_eval.world import judge as world_judge

RECORD = {
    "question_type": "attribute",
    "image_content": ["red dog", "blue car", "green bench"],
    "question": "What color is the dog?",
    "gt_answer": "The dog is red.",
}


@pytest.mark.parametrize(
    "answer, rating",
    [
        ("The dog is red.", 5),  # covers dog + red, nothing false
        ("The dog is red and stands next to a car.", 6),  # plus a true extra object
        ("It is a dog.", 4),  # partial
        ("I cannot tell.", 3),  # nothing, nothing false
        ("The dog is red and there is a cat.", 2),  # full coverage, an absent object
        ("The dog is blue.", 1),  # wrong colour
        ("There is a cat.", 0),  # absent object only
    ],
)
def test_rule_judge_ratings(answer, rating):
    reply = world_judge.rule_judge(RECORD | {"model_answer": answer})
    assert mmhal.parse_rating(reply) == rating


def test_yes_no_contradiction():
    rec = {"image_content": ["cat"], "gt_answer": "No, there is no dog.", "question": "Is there a dog?"}
    assert mmhal.parse_rating(world_judge.rule_judge(rec | {"model_answer": "No."})) == 5
    assert mmhal.parse_rating(world_judge.rule_judge(rec | {"model_answer": "Yes, there is a dog."})) == 0


def test_scene_question():
    rec = {
        "image_content": ["a gray bench", "a brown dog"],
        "gt_answer": "The picture was taken in a park.",
        "question": "Where was this picture taken?",
    }
    assert mmhal.parse_rating(world_judge.rule_judge(rec | {"model_answer": "In a park."})) == 5
    assert mmhal.parse_rating(world_judge.rule_judge(rec | {"model_answer": "In a living room."})) == 0


def test_negated_mention_is_not_a_hallucination():
    rec = {
        "image_content": ["a red car"],
        "gt_answer": "No, there is no such object in the image.",
        "question": "What color is the kite in the image?",
    }
    assert mmhal.parse_rating(world_judge.rule_judge(rec | {"model_answer": "No, there is no kite."})) == 5
    assert mmhal.parse_rating(world_judge.rule_judge(rec | {"model_answer": "The kite is red."})) == 0
