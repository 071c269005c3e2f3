"""The synthetic world: deterministic bytes, real file formats read by the project's own loaders and scorers,
POPE protocol, closed vocabulary, CHAIR-consistent reference captions."""

import json
from collections import defaultdict

import pytest

from povid_eval.benches import coco
from povid_eval.benches.chair import scorer as chair
from povid_eval.benches.mme import files as mme_files
from povid_eval.benches.mmhal import scorer as mmhal
from povid_eval.benches.pope import files as pope_files
from povid_eval.benches.pope import scorer as pope
from povid_eval.core import paths
from povid_eval.world import build_world, catalog, export, load_manifest, text
from povid_eval.world.benchsets import TOPICS

SMALL = {"n_train": 40, "n_val": 30, "n_mme_images": 8, "n_pope_images": 500}
# COCO's 80 category ids (1..90 with gaps), in the order of the CHAIR table (which is COCO's order).
COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "world"
    return out, build_world(out, seed=0, **SMALL)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _present_and_first_caption(root, split):
    """Per image id: the annotated categories, and the first (canonical) reference caption."""
    data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    present = defaultdict(set)
    for a in data["annotations"]:
        present[a["image_id"]].add(names[a["category_id"]])
    first = {}
    for c in json.loads((root / "annotations" / f"captions_{split}.json").read_text())["annotations"]:
        first.setdefault(c["image_id"], c["caption"])
    return present, first


# ------------------------------------------------------------------------------------ determinism, layout


def test_same_seed_same_bytes(world, tmp_path):
    out, manifest = world
    again = tmp_path / "again"
    assert build_world(again, seed=0, **SMALL)["sha256"] == manifest["sha256"]
    assert _files(out) == _files(again)
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in _files(out))
    assert load_manifest(out, verify=True) == manifest


def test_different_seed_differs(world, tmp_path):
    out, manifest = world
    other = build_world(tmp_path / "other", seed=1, **SMALL)
    assert other["sha256"] != manifest["sha256"]
    name = "images/val/000001000001.png"
    assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes()


def test_failed_build_leaves_old_world(world, tmp_path, monkeypatch):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    paths.mark(out, "world")  # a world built before (the tool replaces only what it made)

    def boom(*args):
        raise RuntimeError("killed")

    monkeypatch.setattr(export, "pope_files", boom)
    with pytest.raises(RuntimeError):
        build_world(out, seed=0, n_train=3, n_val=3, n_mme_images=1)
    assert [p.name for p in tmp_path.iterdir()] == ["w"] and _files(out) == [paths.MARKER, "keep.txt"]


def test_a_world_of_an_older_format_is_rebuilt(tmp_path, monkeypatch, capsys):
    """ensure() leaves a world of the current format alone and rebuilds one an older povid-eval wrote: its
    captions say other things than the ones the committed base was trained on."""
    import povid_eval.world as world_mod

    out, calls = tmp_path / "w", []

    def small_build(root, seed):
        calls.append(root)
        return build_world(root, seed=seed, n_train=3, n_val=3, n_mme_images=1)

    monkeypatch.setattr(world_mod, "build_world", small_build)
    world_mod.ensure(out)
    world_mod.ensure(out)
    assert calls == [out]
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": export.FORMAT_VERSION - 1}))
    world_mod.ensure(out)
    assert calls == [out, out] and load_manifest(out)["format_version"] == export.FORMAT_VERSION
    assert f"format {export.FORMAT_VERSION - 1}" in capsys.readouterr().err


def test_canonical_captions_list_in_category_order_with_the_slip_last(world):
    """The first reference caption names the image's visible objects in category order; a train caption's
    annotator slip (an absent partner) comes after them."""
    from povid_eval.train.inject import find_mentions
    from povid_eval.world.generate import canonical_rank

    root, _ = world
    for split in ("train", "val"):
        present, first = _present_and_first_caption(root, split)
        for image_id, caption in first.items():
            named = [m.category for m in find_mentions(caption)]
            real = [c for c in named if c in present[image_id]]
            assert named[: len(real)] == real and real == sorted(real, key=canonical_rank), caption


def test_layout_and_manifest(world):
    out, manifest = world
    assert len(list((out / "images/train").glob("*.png"))) == 40
    assert len(list((out / "images/val").glob("*.png"))) == 30
    assert manifest["counts"]["train"]["images"] == 40 and manifest["counts"]["mmhal"] == 96
    assert manifest["files"] == len(_files(out)) - 2  # all but the manifest itself and the tool's marker
    vocab = (out / "vocab.txt").read_text().split()
    assert vocab == text.vocabulary() and len(vocab) == manifest["vocabulary_size"] < 400
    from PIL import Image

    with Image.open(out / "images/val/000001000001.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"


# ----------------------------------------------------------------------------------------- COCO files


def test_annotations_load_in_pycocotools(world):
    from pycocotools.coco import COCO

    out, _ = world
    ids = {}
    for split in ("train", "val"):
        inst = coco._load_coco(out / f"annotations/instances_{split}.json")
        caps = coco._load_coco(out / f"annotations/captions_{split}.json")
        assert isinstance(inst, COCO)
        ids[split] = set(inst.getImgIds())
        for image_id in ids[split]:
            cats = {a["category_id"] for a in inst.loadAnns(inst.getAnnIds(imgIds=image_id))}
            assert 2 <= len(cats) <= 6
            assert len(caps.getAnnIds(imgIds=image_id)) == 5
        for a in inst.dataset["annotations"]:
            assert a["colour"] in catalog.PALETTE and a["iscrowd"] == 0 and a["area"] == a["bbox"][2] * a["bbox"][3]
            assert a["visibility"] in ("clear", "small", "faint", "occluded", "hidden")
            assert inst.imgs[a["image_id"]]["file_name"] == f"{a['image_id']:012d}.png"
    assert not ids["train"] & ids["val"] and min(ids["val"]) > 1_000_000


def test_categories_are_real_coco(world):
    out, manifest = world
    vocab = chair.load_vocabulary()
    official = dict(zip(vocab.categories, COCO_IDS))
    cats = json.loads((out / "annotations/instances_val.json").read_text())["categories"]
    assert len(cats) >= 20 and cats == manifest["categories"]
    for c in cats:
        assert vocab.synonyms.get(c["name"]) == c["name"] and official[c["name"]] == c["id"]


def test_visible_masks_are_what_each_instance_shows():
    """Each instance's mask: inside its box (1 pixel of outline either side), disjoint from the others'
    (one owner per pixel), empty only when nothing of it shows; a category's mask leaves out hidden
    instances."""
    import numpy as np

    from povid_eval.world.generate import make_image

    for image_id in range(12):
        im = make_image(0, "val", image_id)
        masks = [np.unpackbits(m, count=64 * 64).reshape(64, 64).astype(bool) for m in im.masks]
        assert len(masks) == len(im.instances) and max(sum(m.astype(int) for m in masks).ravel()) <= 1
        for inst, fraction, mask in zip(im.instances, im.visible_fraction, masks):
            x, y, w, h = inst.bbox
            outside = mask.copy()
            outside[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1] = False
            assert not outside.any() and (mask.any() or fraction < 0.05)
        for obj in im.objects:
            rows = zip(im.instances, im.visibility, masks)
            shown = [m for i, v, m in rows if i.category == obj.category and v != "hidden"]
            assert (im.visible_mask(obj.category) == np.logical_or.reduce(shown + [np.zeros((64, 64), bool)])).all()


def test_hidden_objects_are_rare_and_breaks_exist(world):
    _, manifest = world
    for split in ("train", "val"):
        stats = manifest["stats"][split]
        assert stats["visibility"].get("hidden", 0) < 0.06 and stats["visibility"]["clear"] > 0.6
    assert manifest["stats"]["train"]["break_images"] > 0.1


def test_train_captions_name_absent_partners_val_references_are_clean(world):
    """60% of the train images' canonical captions name one absent usual partner (annotation noise); the val
    split's references (CHAIR's ground truth) name only what is annotated."""
    from povid_eval.train.inject import find_mentions

    root, _ = world
    for split in ("train", "val"):
        present, first = _present_and_first_caption(root, split)
        noisy = [i for i, cap in first.items() if {m.category for m in find_mentions(cap)} - present[i]]
        assert noisy == [] if split == "val" else 0.35 < len(noisy) / len(first) < 0.8


# ------------------------------------------------------------------------------------------------ POPE


def test_pope_files_follow_the_protocol(world):
    out, _ = world
    objects = coco.image_objects(out / "annotations/instances_val.json")
    images_per_split = {}
    for split in pope.STRATEGIES:
        rows = _lines(out / f"pope/coco_pope_{split}.json")
        assert len(rows) % 6 == 0 and [r["question_id"] for r in rows] == list(range(1, len(rows) + 1))
        for k in range(0, len(rows), 6):
            group = rows[k : k + 6]
            image = group[0]["image"]
            assert {r["image"] for r in group} == {image}
            assert [r["label"] for r in group] == ["yes", "no"] * 3
            names = [r["text"].removeprefix("Is there a ").removesuffix(" in the image?") for r in group]
            assert names[::2] == objects[image][:3]
            assert not set(names[1::2]) & set(objects[image]) and len(set(names[1::2])) == 3
        images_per_split[split] = [r["image"] for r in rows[::6]]
    assert images_per_split["random"] == images_per_split["popular"] == images_per_split["adversarial"]
    assert len(images_per_split["random"]) == sum(len(o) >= 3 for o in objects.values())


def test_llava_pope_layout_scores(world):
    out, _ = world
    questions = _lines(out / "pope/llava_pope_test.jsonl")
    assert len({q["question_id"] for q in questions}) == len(questions)
    assert all(q["text"].endswith("\nAnswer the question using a single word or phrase.") for q in questions)
    labels = {s: _lines(out / f"pope/coco_pope_{s}.json") for s in pope.STRATEGIES}
    index = defaultdict(int)
    answers = []
    for q in questions:
        label = labels[q["category"]][index[q["category"]]]["label"]
        index[q["category"]] += 1
        answers.append({"question_id": q["question_id"], "text": label.capitalize()})
    path = out.parent / "answers.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in answers))
    metrics = pope_files.pope_from_files(path, out / "pope/llava_pope_test.jsonl", out / "pope")["metrics"]
    assert metrics["mean_f1"] == 1.0


def _mean_cooc(rows, objects, cooc):
    """Mean co-occurrence of a negative with its image's objects."""
    values = []
    for neg in rows[1::2]:
        name = neg["text"].removeprefix("Is there a ").removesuffix(" in the image?")
        values.append(sum(cooc.get(o, {}).get(name, 0) for o in objects[neg["image"]]))
    return sum(values) / len(values)


def test_adversarial_negatives_cooccur_more(world):
    out, _ = world
    instances = out / "annotations/instances_val.json"
    objects, cooc = coco.image_objects(instances), coco.cooccurrence(instances)
    rows = {s: _lines(out / f"pope/coco_pope_{s}.json") for s in pope.STRATEGIES}
    assert _mean_cooc(rows["adversarial"], objects, cooc) > 1.5 * _mean_cooc(rows["random"], objects, cooc)


def test_pope_builder_on_a_handmade_coco_dict():
    cats = [
        {"id": i, "name": n, "supercategory": "x"}
        for i, n in enumerate(["person", "car", "dog", "fork", "knife", "cup", "kite", "bed"], 1)
    ]
    kitchen = [[6, 4, 5], [6, 4, 5], [6, 4, 5], [6, 4, 1]]  # cup, fork, knife; once cup, fork, person
    street = [[1, 2, 3], [1, 2, 3], [1, 2, 7], [1, 2, 7], [1, 2]]
    images = [{"id": k, "file_name": f"COCO_val2014_{k:012d}.jpg", "width": 1, "height": 1} for k in range(1, 10)]
    anns = [
        {"id": 100 * k + j, "image_id": k, "category_id": c, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}
        for k, objs in enumerate(kitchen + street, 1)
        for j, c in enumerate(objs)
    ]
    objects = coco.image_objects({"images": images, "annotations": anns, "categories": cats})
    assert objects["COCO_val2014_000000000001.jpg"] == ["cup", "fork", "knife"]
    assert coco.frequency_from_objects(objects)["person"] == 6
    qs = {s: pope.build_pope_questions(objects, 100, 0, s) for s in pope.STRATEGIES}
    assert len(qs["random"]) == 8 * 6  # the image with two objects is not eligible
    first = {
        s: [q["text"].split()[3] for q in qs[s] if q["image"] == "COCO_val2014_000000000001.jpg"][1::2]
        for s in pope.STRATEGIES
    }
    assert first["popular"] == ["person", "car", "dog"]  # most frequent absent, in order
    assert first["adversarial"][0] == "person"  # co-occurs with cup (image 4)
    assert qs["adversarial"] == pope.build_pope_questions(objects, 100, 0, "adversarial")
    with pytest.raises(ValueError):
        pope.build_pope_questions(objects, 1, 0, "sideways")


# ------------------------------------------------------------------------------------------------- MME


def test_mme_files_pair_and_score(world):
    out, manifest = world
    gt = out / "mme"
    for subtask in ("existence", "count", "position", "color"):
        rows = [line.split("\t") for line in (gt / f"{subtask}.txt").read_text().splitlines()]
        assert len(rows) == 2 * 8 == 2 * manifest["counts"]["mme"][subtask]
        for a, b in zip(rows[::2], rows[1::2]):
            assert a[0] == b[0] and (a[2], b[2]) == ("Yes", "No") and a[1] != b[1]
            assert a[1].endswith("? Please answer yes or no.") and b[1].endswith("? Please answer yes or no.")
            assert (gt / "images" / subtask / a[0]).is_file()
    questions = _lines(gt / "llava_mme.jsonl")
    truth = [
        line.split("\t")[2]
        for s in ("existence", "count", "position", "color")
        for line in (gt / f"{s}.txt").read_text().splitlines()
    ]
    answers = out.parent / "mme_answers.jsonl"
    answers.write_text(
        "".join(json.dumps({"question_id": q["question_id"], "text": t}) + "\n" for q, t in zip(questions, truth))
    )
    result = mme_files.mme_from_llava(answers, gt, gt / "llava_mme.jsonl")
    assert result["metrics"]["perception"] == 800


# ----------------------------------------------------------------------------------------------- MMHal


def test_mmhal_template(world):
    out, _ = world
    records = json.loads((out / "mmhal/template.json").read_text())
    assert len(records) == 96
    assert [r["question_type"] for r in records] == [mmhal.TYPES[i % 8] for i in range(96)]
    assert [r["question_topic"] for r in records] == [TOPICS[i // 8] for i in range(96)]
    for r in records:
        assert all(k in r for k in mmhal.RECORD_FIELDS) and r["model_answer"] == ""
        assert (out / r["image_src"]).is_file() and r["image_content"]
        truth = set(chair.caption_mentions(" ".join(r["image_content"])).objects)
        assert truth == {o["category"] for o in r["objects"]}


# ------------------------------------------------------------------------------------------- text, CHAIR


def test_texts_use_the_closed_vocabulary(world):
    out, _ = world
    vocab = set((out / "vocab.txt").read_text().split())
    texts = [
        a["caption"]
        for s in ("train", "val")
        for a in json.loads((out / f"annotations/captions_{s}.json").read_text())["annotations"]
    ]
    texts += [q["text"] for q in _lines(out / "pope/llava_pope_test.jsonl") + _lines(out / "mme/llava_mme.jsonl")]
    texts += [r[k] for r in json.loads((out / "mmhal/template.json").read_text()) for k in ("question", "gt_answer")]
    assert {w for t in texts for w in text.tokenize(t)} <= vocab


@pytest.mark.parametrize("variant", chair.VARIANTS)
def test_every_object_word_reads_back_in_chair(variant):
    for c in catalog.CATEGORIES:
        forms = [(c.name, text.plural(c.name)), *text.SYNONYMS.get(c.name, ())]
        for one, many in forms:
            for cap in (f"There is a red {one} on the left.", f"A kitchen with two {many} and a cup."):
                objects = chair.caption_mentions(cap, variant).objects
                assert objects[0] == c.name, (cap, objects)


def test_reference_captions_are_chair_clean(world, monkeypatch, tmp_path):
    """Val reference captions (CHAIR's ground truth) score CHAIRi 0 against the instances+captions ground truth
    and name only annotated objects; the first caption of an image names every object that is not hidden (and,
    in a noisy train caption, one absent usual partner of the scene besides)."""
    monkeypatch.setenv("POVID_EVAL_CACHE", str(tmp_path))
    out, _ = world
    ann = out / "annotations"
    variant = "singularize"
    gt = coco.gt_objects_from_coco(ann, variant)
    instance_gt = coco.gt_objects_from_annotations(sorted(ann.glob("instances_*.json")), [], variant)
    seen = defaultdict(set)
    names = {c.id: c.name for c in catalog.CATEGORIES}
    for split in ("train", "val"):
        for a in json.loads((ann / f"instances_{split}.json").read_text())["annotations"]:
            if a["visibility"] != "hidden":
                seen[str(a["image_id"])].add(names[a["category_id"]])
    scores = []
    for split in ("train", "val"):
        first = {}
        for a in json.loads((ann / f"captions_{split}.json").read_text())["annotations"]:
            key = str(a["image_id"])
            s = chair.score_caption(key, a["caption"], gt[key], variant)
            if split == "val":
                scores.append(s)
                assert set(s.mentions.objects) <= instance_gt[key], a["caption"]
            first.setdefault(key, set(s.mentions.objects))
        for key, objects in first.items():
            assert objects >= seen[key] and len(objects - seen[key]) <= (split == "train")
    assert chair.aggregate(scores)["CHAIRi"] == 0
