"""Bad input: one line naming the file and the line or field, exit code 2, no traceback, nothing written."""

import json
import shutil

import pytest


def assert_clean_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("povid-eval: error: ")
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    assert proc.stdout == ""


@pytest.fixture
def gt(fixtures):
    return fixtures / "chair" / "coco2014_gt_objects.json.gz"


def chair_cli(cli, captions, gt, details):
    return cli("score", "chair", "--captions", captions, "--gt-objects", gt, "--save-details", details, "--json")


def test_missing_file(cli, tmp_path, gt):
    proc = chair_cli(cli, tmp_path / "nope.jsonl", gt, tmp_path / "d.jsonl")
    assert_clean_error(proc, tmp_path / "nope.jsonl", "not found")
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.parametrize(
    "content, line, fragment",
    [
        ('{"image_id": 226988, "caption": "A dog."}\n{"image_id": 1, "caption": \n', 2, "invalid JSON"),
        ('{"image_id": 226988, "caption": "A dog."}\n\n{"caption": "A cat."}\n', 3, "missing field 'image_id'"),
    ],
)
def test_bad_caption_line(cli, tmp_path, gt, content, line, fragment):
    caps = tmp_path / "caps.jsonl"
    caps.write_text(content)
    proc = chair_cli(cli, caps, gt, tmp_path / "d.jsonl")
    assert_clean_error(proc, f"{caps}:{line}:", fragment)
    assert not (tmp_path / "d.jsonl").exists()


def test_caption_list_record_without_caption(cli, tmp_path, gt):
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps([{"image_id": 226988, "caption": "A dog."}, {"image_id": 226988}]))
    assert_clean_error(chair_cli(cli, caps, gt, tmp_path / "d.jsonl"), caps, "record 1", "missing field 'caption'")


def test_caption_of_unknown_image(cli, tmp_path, gt):
    caps = tmp_path / "caps.jsonl"
    caps.write_text('{"image_id": 999999999, "caption": "A dog."}\n')
    assert_clean_error(chair_cli(cli, caps, gt, tmp_path / "d.jsonl"), f"{caps}:1:", "no ground truth")


def test_pope_answer_without_label(cli, tmp_path, fixtures):
    d = fixtures / "pope"
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 1, "text": "Yes"}\n{"question_id": 424242, "text": "No"}\n')
    proc = cli("score", "pope", "--answers", answers, "--questions", d / "llava_pope_test.jsonl", "--labels-dir", d)
    assert_clean_error(proc, f"{answers}:2:", "424242", "no label")


def test_pope_missing_label_file(cli, tmp_path, fixtures):
    d = fixtures / "pope"
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(d / "coco_pope_random.json", labels)
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": 1, "text": "Yes"}\n')  # an adversarial question
    proc = cli(
        "score", "pope", "--answers", answers, "--questions", d / "llava_pope_test.jsonl", "--labels-dir", labels
    )
    assert_clean_error(proc, labels, "coco_pope_adversarial.json")


def test_mme_odd_number_of_lines(cli, tmp_path):
    (tmp_path / "existence.txt").write_text(
        "a.jpg\tIs there a dog?\tYes\tYes\na.jpg\tIs there a cat?\tNo\tNo\nb.jpg\tIs there a dog?\tYes\tNo\n"
    )
    proc = cli("score", "mme", "--results-dir", tmp_path)
    assert_clean_error(proc, tmp_path / "existence.txt", "3 questions", "even")


def test_mme_bad_columns(cli, tmp_path):
    (tmp_path / "count.txt").write_text("a.jpg\tIs there a dog?\tYes\n")
    assert_clean_error(cli("score", "mme", "--results-dir", tmp_path), f"{tmp_path / 'count.txt'}:1:", "4 tab")


def test_mmhal_record_missing_field(cli, tmp_path, fixtures):
    records = json.loads((fixtures / "mmhal" / "response_template.json").read_text())
    for r in records:
        r["model_answer"] = "x"
    del records[7]["question"]
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(records))
    replies = tmp_path / "replies.jsonl"
    replies.write_text("".join(json.dumps({"index": i, "reply": "Rating: 4"}) + "\n" for i in range(96)))
    proc = cli("score", "mmhal", "--responses", responses, "--judge-replies", replies)
    assert_clean_error(proc, responses, "record 7", "missing field 'question'")


def test_mmhal_missing_replies(cli, tmp_path, fixtures):
    template = fixtures / "mmhal" / "response_template.json"
    replies = tmp_path / "replies.jsonl"
    replies.write_text("".join(json.dumps({"index": i, "reply": "Rating: 4"}) + "\n" for i in range(90)))
    proc = cli("score", "mmhal", "--responses", template, "--judge-replies", replies)
    assert_clean_error(proc, replies, "no reply for record(s) 90, 91")
