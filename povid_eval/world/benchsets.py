"""MME-format and MMHal-format items on dedicated world images (pure functions of an image and a random source).

A builder returns None when the image cannot carry the item; the exporter then tries the next image of the
item's random stream. Every item asks only about what the image shows clearly (or, for the negatives, about
what it lacks), so the answer is decidable from the pixels.

MME (two questions per image, the true one first):
    existence   Yes: a clear object. No: an absent category; half the time one that co-occurs with the scene
                (a missing core category or an absent extra), else any absent category
    count       an object whose instances are all visible: its true count (Yes), another count 1-3 (No)
    position    two single, clear objects apart along one axis (boxes disjoint on it): the true relation (Yes),
                the opposite (No)
    color       a clear object (not a person): its colour (Yes); the category's most usual colour when that is
                not the true one (half the time), else another palette colour (No)
MMHal (record i: type TYPES[i % 8], topic TOPICS[i // 8]; the question's subject is a category of the topic's
COCO supercategory; image_content lists ALL objects of the image with count and colour):
    attribute (a single object; what a person wears), adversarial (an absent, co-occurring category of the
    topic), comparison (bigger of two, area ratio >= 1.6), counting, relation, environment (the scene),
    holistic (all visible objects), other (what is at a given position)
"""

from __future__ import annotations

import random

from povid_eval.benches.mmhal import scorer as mmhal
from povid_eval.world import text
from povid_eval.world.catalog import CATEGORIES, CATEGORY_BY_NAME, PALETTE, SCENE_BY_NAME
from povid_eval.world.generate import WorldImage, WorldObject

MME_SUBTASKS = ("existence", "count", "position", "color")
TOPICS = (
    "outdoor",
    "vehicle",
    "person",
    "animal",
    "food",
    "sports",
    "kitchen",
    "accessory",
    "electronic",
    "furniture",
    "indoor",
    "appliance",
)
ALL_CATEGORIES = tuple(c.name for c in CATEGORIES)


def _clear(image: WorldImage, single: bool = False) -> list[WorldObject]:
    return [o for o in image.objects if o.salience == "clear" and (o.count == 1 or not single)]


def _all_visible(image: WorldImage, obj: WorldObject) -> bool:
    return all(v in ("clear", "small") for i, v in zip(image.instances, image.visibility) if i.category == obj.category)


def _absent(image: WorldImage, pool=ALL_CATEGORIES) -> list[str]:
    present = {o.category for o in image.objects}
    return [c for c in pool if c not in present]


def _cooccurring_absent(image: WorldImage, pool=ALL_CATEGORIES) -> list[str]:
    scene = SCENE_BY_NAME[image.scene]
    usual = [c for c in image.missing] + [c for c in scene.core + scene.extras if c not in image.missing]
    return [c for c in dict.fromkeys(usual) if c in _absent(image, pool)]


def box_relation(a: tuple[float, ...], b: tuple[float, ...]) -> str | None:
    """How box a (x, y, w, h) stands to box b when they are apart along an axis with a gap:
    left / right / above / below, else None."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    if ax + aw < bx:
        return "left"
    if bx + bw < ax:
        return "right"
    if ay + ah < by:
        return "above"
    if by + bh < ay:
        return "below"
    return None


def _relation(a: WorldObject, b: WorldObject) -> str | None:
    return box_relation(a.box, b.box)


OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def mme_pair(subtask: str, image: WorldImage, rng: random.Random) -> tuple[str, str] | None:
    """(Yes question, No question) of one image, each ending with " Please answer yes or no.", or None."""
    yes_no = _mme_pair(subtask, image, rng)
    return None if yes_no is None else tuple(q + text.MME_SUFFIX for q in yes_no)


def _mme_pair(subtask: str, image: WorldImage, rng: random.Random) -> tuple[str, str] | None:
    clear = _clear(image)
    if subtask == "existence":
        absent = _cooccurring_absent(image) if rng.random() < 0.5 else []
        absent = absent or _absent(image)
        if not clear or not absent:
            return None
        t = text.MME_TEMPLATES["existence"][0]
        a, b = rng.choice(clear).category, absent[0] if rng.random() < 0.7 else rng.choice(absent)
        return t.format(a_object=f"{text.article(a)} {a}"), t.format(a_object=f"{text.article(b)} {b}")
    if subtask == "count":
        objs = [o for o in clear if _all_visible(image, o)]
        if not objs:
            return None
        o = rng.choice(objs)
        wrong = rng.choice([n for n in text.NUMBERS if n != o.count])
        return _count_question(o.category, o.count), _count_question(o.category, wrong)
    if subtask == "position":
        pairs = [
            (a, b, r)
            for a in _clear(image, True)
            for b in _clear(image, True)
            if a is not b and (r := _relation(a, b)) is not None
        ]
        if not pairs:
            return None
        a, b, r = rng.choice(pairs)
        t = text.MME_TEMPLATES["position"][0]
        return (
            t.format(object=a.category, other=b.category, relation=text.RELATIONS[r]),
            t.format(object=a.category, other=b.category, relation=text.RELATIONS[OPPOSITE[r]]),
        )
    if subtask == "color":
        clear = [o for o in clear if o.category != "person"]
        if not clear:
            return None
        o = rng.choice(clear)
        usual = max(CATEGORY_BY_NAME[o.category].colours, key=lambda cw: cw[1])[0]
        wrong = (
            usual
            if usual != o.colour and rng.random() < 0.5
            else rng.choice([c for c in sorted(PALETTE) if c != o.colour])
        )
        t = text.MME_TEMPLATES["color"][0]
        return tuple(t.format(a_colour_object=f"{text.article(c)} {c} {o.category}") for c in (o.colour, wrong))
    raise ValueError(f"unknown MME subtask {subtask!r}")


def _count_question(category: str, n: int) -> str:
    one, many = text.MME_TEMPLATES["count"]
    return one.format(object=category) if n == 1 else many.format(number=text.NUMBERS[n], objects=text.plural(category))


# ------------------------------------------------------------------------------------------------ MMHal


def topic_categories(topic: str) -> list[str]:
    return [c.name for c in CATEGORIES if c.supercategory == topic]


def image_content(image: WorldImage) -> list[str]:
    """ALL objects of the image (hidden ones too), each as 'a red car' / 'two white cups'."""
    return [o.mention().phrase(colour=True) for o in image.objects]


def mmhal_record(index: int, image: WorldImage, image_src: str, rng: random.Random) -> dict | None:
    """The index-th MMHal record on this image, or None when the image cannot carry it."""
    qtype, topic = mmhal.TYPES[index % 8], TOPICS[index // 8]
    qa = _mmhal_qa(qtype, topic_categories(topic), image, rng)
    if qa is None:
        return None
    question, answer = qa
    return {
        "question_type": qtype,
        "question_topic": topic,
        "image_id": f"{image.image_id:012d}",
        "image_src": image_src,
        "image_content": image_content(image),
        "question": question,
        "gt_answer": answer,
        "model_answer": "",
        "objects": [
            {
                "category": o.category,
                "colour": o.colour,
                "count": o.count,
                "position": o.position,
                "salience": o.salience,
            }
            for o in image.objects
        ],
    }


def _mmhal_qa(qtype: str, pool: list[str], image: WorldImage, rng: random.Random) -> tuple[str, str] | None:
    q, a = text.MMHAL_TEMPLATES[qtype]
    scene = SCENE_BY_NAME[image.scene].phrase
    subjects = [o for o in _clear(image) if o.category in pool]
    if qtype == "adversarial":
        absent = _cooccurring_absent(image, pool)
        return (q.format(object=absent[0]), a) if absent else None
    if not subjects:
        return None
    s = rng.choice(subjects)
    m = s.mention()
    if qtype == "attribute":
        if s.count != 1:
            return None
        if m.worn:
            q, a = text.MMHAL_TEMPLATES["attribute_worn"]
        return q.format(object=m.noun), a.format(object=m.noun, be=m.be, colour=s.colour)
    if qtype == "counting":
        if not _all_visible(image, s):
            return None
        return (
            q.format(objects=text.plural(s.category)),
            a.format(be=m.be, number=text.NUMBERS[s.count], objects=m.noun),
        )
    if qtype in ("comparison", "relation"):
        if s.count != 1:
            return None
        others = [o for o in _clear(image, True) if o is not s]
        if qtype == "comparison":
            others = [o for o in others if max(o.area, s.area) >= 1.6 * min(o.area, s.area)]
            if not others:
                return None
            o = rng.choice(others)
            big, small = (s, o) if s.area > o.area else (o, s)
            return q.format(object=s.category, other=o.category), a.format(object=big.category, other=small.category)
        others = [(o, r) for o in others if (r := _relation(s, o)) is not None]
        if not others:
            return None
        o, r = rng.choice(others)
        return (
            q.format(object=s.category, other=o.category),
            a.format(object=s.category, other=o.category, relation=text.RELATIONS[r]),
        )
    if qtype == "environment":
        return q, a.format(scene_a=text.scene_a(scene))
    if qtype == "holistic":
        seen = sorted((o for o in image.objects if o.salience != "hidden"), key=lambda o: -o.area)
        return q, a.format(scene_a=text.scene_a(scene), sentences=text.sentences([o.mention() for o in seen]))
    if qtype == "other":
        there = [o for o in image.objects if o.salience != "hidden" and o.position == s.position]
        if any(o.salience != "clear" for o in there):
            return None
        mentions = [o.mention() for o in there]
        position = text.POSITIONS[s.position]
        return (
            q.format(position=position),
            a.format(be=mentions[0].be, list=text.join([x.phrase(colour=True) for x in mentions]), position=position),
        )
    raise ValueError(f"unknown MMHal type {qtype!r}")
