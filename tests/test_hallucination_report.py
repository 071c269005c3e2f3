"""Prior-driven hallucination shares on world-style annotations."""

import json

from povid_eval.benches.chair.sources import prior_share


def test_prior_and_break_shares(tmp_path):
    instances = {
        "categories": [
            {"id": 52, "name": "banana"},
            {"id": 78, "name": "microwave"},
            {"id": 79, "name": "oven"},
            {"id": 81, "name": "sink"},
            {"id": 82, "name": "refrigerator"},
            {"id": 18, "name": "dog"},
        ],
        "images": [{"id": 1, "scene": "kitchen", "missing": ["sink"]}, {"id": 2, "scene": "kitchen", "missing": []}],
        "annotations": [
            {"image_id": 1, "category_id": 79, "visibility": "clear"},
            {"image_id": 2, "category_id": 79, "visibility": "faint"},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    rows = [
        {"image_id": 1, "hallucinated": [["sink", "sink"], ["dog", "dog"], ["banana", "banana"]]},
        {"image_id": 2, "hallucinated": [["sink", "sink"]]},
    ]  # no clearly visible partner in image 2
    (tmp_path / "details.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {
        "scenes": {
            "kitchen": {
                "core": ["oven", "refrigerator", "sink", "microwave"],
                "extras": ["bowl", "cup", "bottle", "banana"],
            }
        }
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    share = prior_share(tmp_path / "details.jsonl", tmp_path / "instances.json", tmp_path / "manifest.json")
    assert (share["hallucinated"], share["prior"], share["break"]) == (4, 2, 1)
    assert share["prior_share"] == 0.5 and share["break_share"] == 0.25
