"""The synthetic world's MMHal judge, ``rule``: deterministic, valid only where ``image_content`` lists every
object in the image (and its colour), as the world's MMHal records do; it is not a substitute for an LLM
judge on real images. Importing povid_eval.world registers it with the MMHal judges (benches/mmhal/judges.py).

    objects(t)     = COCO categories mentioned in text t (CHAIR's vocabulary and singularize tokeniser)
    hallucinated   = objects(answer) - objects(image_content) (a negated mention, "there is no kite", claims
                     nothing), plus any colour, number, position, yes/no or scene word of the answer that
                     contradicts the gt_answer (same kind of word, none of the gt's)
    coverage       = share of the gt_answer's key terms (objects in the image, colours, numbers,
                     positions, yes/no, scene) found in the answer
    rating         = no hallucination: 6 full coverage and extra grounded objects, 5 full, 4 partial, 3 none;
                     hallucination:    2 full coverage, 1 partial, 0 none     (the MMHal 0-6 rubric)

Its colour, position and scene words are the world's own (catalog.PALETTE, text.POSITIONS / RELATIONS,
catalog.SCENES); numbers are English number words and digits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from povid_eval.benches.chair import scorer as chair
from povid_eval.benches.mmhal.judges import Judge
from povid_eval.world import text as world_text
from povid_eval.world.catalog import PALETTE
from povid_eval.world.catalog import SCENES as WORLD_SCENES

COLOURS = set(PALETTE)
NUMBERS = {
    "zero": 0,
    "no": 0,
    "one": 1,
    "a": 1,
    "an": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    **{str(i): i for i in range(10)},
}
POSITIONS = set(world_text.POSITIONS) | set(world_text.RELATIONS)
YES_NO = {"yes", "no"}
SCENES = tuple(s.name for s in WORLD_SCENES)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


NEGATIONS = {"no", "not", "without", "nor", "n't"}


def affirmed_objects(text: str) -> set[str]:
    """COCO categories a text says are there: mentions with no negation among the 3 tokens before them
    ("there is no kite" does not claim a kite)."""
    tokens = chair.tokens_singularize(text)
    mentions = chair.find_mentions(tokens, chair.load_vocabulary())
    return {
        obj
        for obj, pos in zip(mentions.objects, mentions.positions)
        if not NEGATIONS & set(tokens[max(0, pos - 3) : pos])
    }


def _key_terms(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Affirmed objects and the colour / count / position / yes-no / scene words of a text."""
    words = _words(text)
    objects = affirmed_objects(text)
    kinds = {
        "colour": {w for w in words if w in COLOURS},
        "count": {str(NUMBERS[w]) for w in words if w in NUMBERS and w not in ("a", "an", "no")},
        "position": {w for w in words if w in POSITIONS},
        "answer": {w for w in words[:1] if w in YES_NO},
        "scene": {p for p in SCENES if re.search(rf"\b{p}\b", text.lower())},
    }
    return objects, kinds


def rule_judge(record: dict) -> str:
    """Rate one answer on the 0-6 scale (see module docstring); returns an explanation and 'Rating: N'."""
    content = record["image_content"]
    truth = set(chair.caption_mentions(" ".join(content) if isinstance(content, list) else str(content)).objects)
    answer = record.get("model_answer") or ""
    said_objects, said = _key_terms(answer)
    gt_objects, gt = _key_terms(record["gt_answer"])
    gt_objects &= truth  # "No, there is no dog": the dog is not a term to cover
    wrong = sorted(said_objects - truth)
    for kind, terms in gt.items():
        if terms and said[kind] and not (said[kind] & terms):
            wrong += sorted(said[kind])
    wanted = [("object", o) for o in gt_objects] + [(k, t) for k, terms in gt.items() for t in terms]
    found = [(k, t) for k, t in wanted if (t in said_objects if k == "object" else t in said[k])]
    coverage = len(found) / len(wanted) if wanted else (1.0 if answer.strip() else 0.0)
    extra = (said_objects & truth) - gt_objects
    if wrong:
        rating = 2 if coverage == 1 else (1 if coverage > 0 else 0)
    else:
        rating = (6 if extra else 5) if coverage == 1 else (4 if coverage > 0 else 3)
    explanation = (
        f"Key terms covered: {len(found)}/{len(wanted)}. "
        f"Not in the image or contradicting the answer: {', '.join(wrong) or 'none'}."
    )
    return f"{explanation}\nRating: {rating}"


class RuleJudge(Judge):
    kind = "rule"

    def judge_all(self, records: Sequence[dict]) -> list[str]:
        return [rule_judge(r) for r in records]
