"""The world's language: reference captions, benchmark question templates and the closed vocabulary.

Every text the world writes is made from the templates and word lists of this module, so ``vocabulary()``
(every word they can produce) covers all of it; a word-level tokenizer built from it never meets an unknown
word in the world's files. Words are what ``tokenize`` yields: lower-case letter runs, digit runs, and single
punctuation marks.

Object words: the COCO category name, or (25% of the time in captions) a CHAIR synonym of it (puppy for dog,
sofa for couch, ...; one synonym per object and image, so a person stays a man or a woman); plural forms for
counts above one ("two puppies", "three people"); a person's colour is what they wear ("a man in red").
Only words that the CHAIR tokenisers of both variants map back to the category are used: singular "bus",
plural "men" and "vases" are not (singularize turns "bus" into "bu"; WordNet leaves "men" and "vases"), so the
world has no bus or vase and says "people" for men and women. No colour word is a COCO category (there is no "orange").
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from povid_eval.world.catalog import CATEGORIES, IMAGE_SIZE, PALETTE, SCENES

PLURALS = {"person": "people", "bench": "benches", "couch": "couches", "mouse": "mice"}
# (singular, plural) synonyms from the CHAIR vocabulary; both forms map back to the category in both variants.
SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    "person": (("man", "people"), ("woman", "people"), ("child", "children")),
    "bicycle": (("bike", "bikes"),),
    "motorcycle": (("motorbike", "motorbikes"),),
    "traffic light": (("stoplight", "stoplights"),),
    "cat": (("kitten", "kittens"),),
    "dog": (("puppy", "puppies"),),
    "bird": (("pigeon", "pigeons"),),
    "couch": (("sofa", "sofas"),),
    "tv": (("television", "televisions"),),
    "laptop": (("computer", "computers"),),
    "cell phone": (("phone", "phones"),),
    "oven": (("stove", "stoves"),),
    "refrigerator": (("fridge", "fridges"),),
    "potted plant": (("houseplant", "houseplants"),),
}
NUMBERS = {1: "one", 2: "two", 3: "three"}
POSITIONS = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}

CANONICAL_TEMPLATE = "{Scene_a} with {list}."  # the first reference caption: every object, in category order
CAPTION_TEMPLATES = (
    "{Scene_a} with {list}.",
    "{List} in {scene_a}.",
    "There {be} {list} in the {scene}.",
    "This {scene} has {list}.",
    "A picture of {list}.",
    "An image of {scene_a} showing {list}.",
    "In this {scene} we can see {list}.",
    "A view of {scene_a} with {list}.",
)
COLOUR_SENTENCE = ("The {noun} {be} {colour}.", "The {noun} {be} in {colour}.")  # the second for people
POSITION_SENTENCE = ("The {noun} {be} {position}.",)

POPE_QUESTION = "Is there a {object} in the image?"
LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."
MME_SUFFIX = " Please answer yes or no."
MME_TEMPLATES = {
    "existence": ("Is there {a_object} in this image?",),
    "count": ("Is there only one {object} in the image?", "Are there {number} {objects} in the image?"),
    "position": ("Is the {object} {relation} the {other} in the image?",),
    "color": ("Is there {a_colour_object} in the image?",),
}
MMHAL_TEMPLATES = {
    "attribute": ("What color is the {object} in the image?", "The {object} {be} {colour}."),
    "attribute_worn": ("What color is the {object} wearing?", "The {object} is wearing {colour}."),  # people
    "adversarial": ("What color is the {object} in the image?", "No, there is no such object in the image."),
    "comparison": (
        "Which is bigger in the image, the {object} or the {other}?",
        "The {object} is bigger than the {other}.",
    ),
    "counting": ("How many {objects} are there in the image?", "There {be} {number} {objects} in the image."),
    "relation": ("Where is the {object} relative to the {other}?", "The {object} is {relation} the {other}."),
    "environment": ("Where was this picture taken?", "The picture was taken in {scene_a}."),
    "holistic": ("Describe the image in detail.", "This is {scene_a}. {sentences}"),
    "other": ("What is {position} of the image?", "There {be} {list} {position} of the image."),
}
EXTRA_WORDS = ("a", "an", "and", "is", "are", "yes", "no")


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", text.lower())


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def plural(noun: str) -> str:
    if noun in PLURALS:
        return PLURALS[noun]
    head, _, last = noun.rpartition(" ")
    return f"{head} {plural(last)}" if head else noun + "s"


def position_of(cx: float, cy: float) -> str:
    """left / right / top / bottom / center of a point: center within 1/6 of the image's middle (Chebyshev),
    else the side the point leans to most."""
    dx, dy = cx - IMAGE_SIZE / 2, cy - IMAGE_SIZE / 2
    if max(abs(dx), abs(dy)) < IMAGE_SIZE / 6:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


@dataclass(frozen=True)
class Mention:
    """An object as text: category, count, colour, position word, and the (singular, plural) nouns used."""

    category: str
    count: int
    colour: str
    position: str
    nouns: tuple[str, str]

    def phrase(self, colour: bool = False, position: bool = False) -> str:
        """'a red car', 'two cups', 'a man in blue' (a person's colour is what they wear), 'a dog on the left'."""
        noun = self.nouns[0] if self.count == 1 else self.nouns[1]
        words = f"{self.colour} {noun}" if colour and not self.worn else noun
        det = article(words) if self.count == 1 else NUMBERS[self.count]
        text = f"{det} {words}" + (f" in {self.colour}" if colour and self.worn else "")
        return f"{text} {POSITIONS[self.position]}" if position and self.count == 1 else text

    @property
    def worn(self) -> bool:
        """A person's colour is that of their clothes: 'a man in red', never 'a red man'."""
        return self.category == "person"

    def colour_sentence(self) -> str:
        return COLOUR_SENTENCE[self.worn].format(noun=self.noun, be=self.be, colour=self.colour)

    @property
    def noun(self) -> str:
        return self.nouns[0] if self.count == 1 else self.nouns[1]

    @property
    def be(self) -> str:
        return "is" if self.count == 1 else "are"


def mention(category: str, count: int, colour: str, position: str, synonym: tuple[str, str] | None = None) -> Mention:
    """A Mention with the category name, or with ``synonym`` (singular, plural) when given."""
    return Mention(category, count, colour, position, synonym or (category, plural(category)))


def join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def scene_a(scene: str) -> str:
    return f"{article(scene)} {scene}"


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def caption(scene: str, mentions: list[Mention], rng: random.Random, template: str) -> str:
    """One caption: the template with the object list (colours 30%, positions 15%), sometimes (20%) followed
    by a sentence on one object's colour or position."""
    phrases = [m.phrase(colour=rng.random() < 0.3, position=rng.random() < 0.15) for m in mentions]
    listed = join(phrases)
    text = template.format(
        Scene_a=capitalize(scene_a(scene)),
        scene_a=scene_a(scene),
        scene=scene,
        list=listed,
        List=capitalize(listed),
        be=mentions[0].be,
    )
    if rng.random() < 0.2:
        m = rng.choice(mentions)
        if rng.random() < 0.5 or m.count > 1:
            text += " " + m.colour_sentence()
        else:
            text += " " + POSITION_SENTENCE[0].format(noun=m.noun, be=m.be, position=POSITIONS[m.position])
    return text


def canonical_caption(scene: str, mentions: list[Mention]) -> str:
    """The canonical caption: CANONICAL_TEMPLATE with every mention's count and colour, in the order given
    (the world lists objects in category order): 'A kitchen with two blue cups, a white oven and a gray sink.'"""
    listed = join([m.phrase(colour=True) for m in mentions])
    return CANONICAL_TEMPLATE.format(Scene_a=capitalize(scene_a(scene)), list=listed)


def sentences(mentions: list[Mention]) -> str:
    """A detailed description: every object with its colour, then each single object's position."""
    first = mentions[0]
    out = [f"There {first.be} {join([m.phrase(colour=True) for m in mentions])}."]
    for m in mentions:
        if m.count == 1:
            out.append(f"The {m.noun} is {POSITIONS[m.position]}.")
    return " ".join(out)


def vocabulary() -> list[str]:
    """Every word the world's texts can contain (sorted): templates, object names, synonyms, plurals,
    colours, numbers, positions, scenes."""
    texts = [CANONICAL_TEMPLATE, *CAPTION_TEMPLATES, *COLOUR_SENTENCE] + list(POSITION_SENTENCE)
    texts += [POPE_QUESTION, LLAVA_SUFFIX, MME_SUFFIX, *EXTRA_WORDS]
    texts += [t for ts in MME_TEMPLATES.values() for t in ts]
    texts += [t for pair in MMHAL_TEMPLATES.values() for t in pair]
    texts += [c.name for c in CATEGORIES] + [plural(c.name) for c in CATEGORIES]
    texts += [w for pairs in SYNONYMS.values() for pair in pairs for w in pair]
    texts += list(PALETTE) + list(NUMBERS.values()) + list(POSITIONS.values()) + list(RELATIONS.values())
    texts += [s.phrase for s in SCENES]
    words = set()
    for t in texts:
        words.update(tokenize(re.sub(r"\{\w+\}", " ", t)))
    return sorted(words)
