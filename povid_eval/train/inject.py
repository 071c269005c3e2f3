"""The offline hallucination injector for POVID's text-dispreferred answers y_l^t (Zhou et al., "Aligning
Modalities in Vision Large Language Models via Preference Fine-tuning", 2024, section 3.1).

POVID asks GPT-4V to rewrite a correct answer with plausible hallucinations: objects that co-occur with the
ones in the image, wrong attributes, wrong relations. This injector does the same from COCO-format
annotations alone (no network), one edit of the correct caption y_w per call:

    swap       a correctly named object -> an ABSENT object that co-occurs with the image's objects
               (same number, article fixed): y_l^t has y_w's length, so DPO cannot win by preferring
               shorter answers; it must prefer the object that is in the image
    add        an absent co-occurring object inserted into the caption's list at a random item, in the style of
               its neighbour ("a red a, a blue b and c" -> "a red a, a red X, a blue b and c")
    attribute  a colour, a count or a position/relation word changed (red -> blue, two -> three, left -> right)
    omit       (not one of POVID's edits, weight 0 by default) a correctly named object deleted: the opposite
               error, for length-neutral pairs with ``add`` (every add makes y_l^t one item longer than y_w,
               and DPO then also learns "end the list earlier")

Absent candidates are the categories not annotated in the image, drawn with probability proportional to

    w(c) = sum_{p in present} cooc[p][c] / freq[p]        (how often c is seen with each present object)

so a kitchen without a refrigerator most likely gets one. Every draw comes from ``random.Random(f"{seed}:{key}")``:
the same record always gets the same edit, whatever the order of the data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from povid_eval.benches.chair.scorer import Vocabulary, load_vocabulary

OPS = ("swap", "add", "attribute", "omit")
DEFAULT_WEIGHTS = {"swap": 0.6, "add": 0.2, "attribute": 0.2}

COLOURS = ("red", "blue", "green", "yellow", "brown", "gray", "white", "black", "pink", "purple")
COUNTS = ("two", "three", "four")
OPPOSITES = {
    "left": "right",
    "right": "left",
    "top": "bottom",
    "bottom": "top",
    "above": "below",
    "below": "above",
    "front": "back",
    "behind": "in front of",
    "under": "on top of",
}
IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "knife": "knives",
    "sheep": "sheep",
    "skis": "skis",
    "scissors": "scissors",
}


def pluralize(noun: str) -> str:
    """Plural of a (possibly two-word) noun: irregular table, then textblob (pattern's rules)."""
    head, _, last = noun.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        plural = IRREGULAR_PLURALS[last]
    else:
        from textblob import Word

        plural = str(Word(last).pluralize())
    return f"{head} {plural}" if head else plural


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Injection:
    """An edited caption and what was done (op, and e.g. ``dog -> cat``)."""

    text: str
    op: str
    detail: str


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    category: str
    plural: bool


_FORMS: dict[int, tuple[Vocabulary, re.Pattern, dict[str, tuple[str, bool]]]] = {}


def _surface_forms(vocab: Vocabulary) -> tuple[re.Pattern, dict[str, tuple[str, bool]]]:
    """A regex for every object word of the vocabulary (singular and plural), and form -> (category, plural);
    built once per vocabulary object (the cache keeps the object, so its id cannot be reused by another)."""
    cached = _FORMS.get(id(vocab))
    if cached is not None and cached[0] is vocab:
        return cached[1], cached[2]
    forms: dict[str, tuple[str, bool]] = {}
    for word, category in vocab.synonyms.items():
        forms.setdefault(word, (category, False))
        forms.setdefault(pluralize(word), (category, True))
    alternation = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    pattern = re.compile(rf"\b({alternation})\b", re.IGNORECASE)
    _FORMS[id(vocab)] = (vocab, pattern, forms)
    return pattern, forms


def find_mentions(caption: str, vocab: Vocabulary | None = None) -> list[Mention]:
    """Object mentions in a caption: character spans, their COCO category, and whether the form is plural."""
    pattern, forms = _surface_forms(vocab or load_vocabulary())
    out = []
    for m in pattern.finditer(caption):
        category, plural = forms[m.group(1).lower()]
        out.append(Mention(m.start(), m.end(), category, plural))
    return out


def _replace_noun(text: str, mention: Mention, new: str) -> str:
    """Put ``new`` (a category name, pluralised like the mention) in the mention's place; fix a/an before it."""
    word = pluralize(new) if mention.plural else new
    before, after = text[: mention.start], text[mention.end :]
    m = re.search(r"\b(a|an|A|An)\s+$", before) if not mention.plural else None
    if m is not None:
        art = article(word)
        art = art.capitalize() if m.group(1)[0].isupper() else art
        before = before[: m.start()] + art + before[m.start() + len(m.group(1)) :]
    if mention.start == 0 or before.endswith((". ", ".")):
        word = word[:1].upper() + word[1:] if text[mention.start].isupper() else word
    return before + word + after


_NOUN_PHRASE_HEAD = re.compile(
    rf"\b(?:a|an|one|two|three|four|the)\s+(?:(?P<colour>{'|'.join(COLOURS)})\s+)?$", re.IGNORECASE
)


class CooccurrenceInjector:
    """Rule-based y_l^t from co-occurrence statistics (module docstring). Call it as
    ``injector(caption, present_categories, key)``; returns an Injection, or None when no edit applies."""

    def __init__(
        self,
        cooc: dict[str, dict[str, int]],
        freq: dict[str, int],
        *,
        weights: dict | None = None,
        seed: int = 0,
        vocab: Vocabulary | None = None,
    ):
        self.cooc, self.freq, self.seed = cooc, freq, seed
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        unknown = set(self.weights) - set(OPS)
        if unknown:
            raise ValueError(f"unknown injection op(s) {sorted(unknown)} (known: {', '.join(OPS)})")
        self.vocab = vocab or load_vocabulary()
        self.categories = sorted(freq)

    @classmethod
    def from_instances(cls, instances, **kwargs) -> CooccurrenceInjector:
        """Statistics from a COCO instances file or dict (e.g. instances_train2014.json, the world's train split)."""
        from povid_eval.benches import coco

        objects = coco.image_objects(instances)
        return cls(coco.cooccurrence_from_objects(objects), coco.frequency_from_objects(objects), **kwargs)

    def candidate_weights(self, present: Iterable[str]) -> dict[str, float]:
        """w(c) of the module docstring for every known category absent from ``present``."""
        present = set(present)
        weights = {}
        for c in self.categories:
            if c in present:
                continue
            w = sum(self.cooc.get(p, {}).get(c, 0) / self.freq[p] for p in present if self.freq.get(p))
            if w > 0:
                weights[c] = w
        return weights

    def _draw_absent(self, present: Iterable[str], rng: random.Random) -> str | None:
        weights = self.candidate_weights(present)
        if not weights:
            return None
        names = sorted(weights)
        return rng.choices(names, weights=[weights[n] for n in names])[0]

    # -------------------------------------------------------------- the edits

    def swap(self, caption: str, present: set[str], rng: random.Random) -> Injection | None:
        correct = [m for m in find_mentions(caption, self.vocab) if m.category in present]
        new = self._draw_absent(present, rng)
        if not correct or new is None:
            return None
        mention = rng.choice(correct)
        return Injection(_replace_noun(caption, mention, new), "swap", f"{mention.category} -> {new}")

    def add(self, caption: str, present: set[str], rng: random.Random) -> Injection | None:
        """An absent co-occurring object inserted as a new item of the caption's object list, in the style of
        the item it is put before (with a colour word when that item has one, the colour drawn from the
        caption's own colour words), at a position drawn uniformly among the list's items (noun phrases
        after "with", a comma or "and"): "a white oven, a gray sink and two cups" -> "a white oven, a white
        refrigerator, a gray sink and two cups". The position varies so that y_l^t differs from y_w by the
        object, not by where lists end. A caption without a list gets it after its first mention ("two
        puppies and a bench in a park")."""
        new = self._draw_absent(present, rng)
        mentions = find_mentions(caption, self.vocab)
        if new is None or not mentions:
            return None
        anchors = []
        for m in mentions:
            head = _NOUN_PHRASE_HEAD.search(caption[: m.start])
            start = head.start() if head else m.start
            if caption[:start].endswith((", ", " and ", " with ")):
                anchors.append((start, head))
        if not anchors:  # no list: "two puppies in a park" -> "two puppies and a bench in a park"
            end = mentions[0].end
            return Injection(caption[:end] + f" and {article(new)} {new}" + caption[end:], "add", f"+ {new}")
        start, head = rng.choice(anchors)
        colours = [w for w in re.findall(r"\b[a-z]+\b", caption.lower()) if w in COLOURS]
        words = f"{rng.choice(colours)} {new}" if head and head.group("colour") and colours else new
        before, item = caption[:start], f"{article(words)} {words}"
        if before.endswith(" and "):  # before the last item: "b and c" -> "b, X and c"
            text = before[: -len(" and ")] + f", {item} and " + caption[start:]
        elif not re.search(r", | and ", caption[start:].split(".")[0]):  # a list of one: "with X and c"
            text = before + f"{item} and " + caption[start:]
        else:
            text = before + f"{item}, " + caption[start:]
        return Injection(text, "add", f"+ {new}")

    def attribute(self, caption: str, present: set[str], rng: random.Random) -> Injection | None:
        words = list(re.finditer(r"\b[a-z]+\b", caption))
        options = []
        for m in words:
            w = m.group(0)
            if w in COLOURS:
                options.append((m, rng.choice([c for c in COLOURS if c != w])))
            elif w in COUNTS:
                options.append((m, rng.choice([c for c in COUNTS if c != w])))
            elif w in OPPOSITES:
                options.append((m, OPPOSITES[w]))
        if not options:
            return None
        m, new = rng.choice(options)
        return Injection(caption[: m.start()] + new + caption[m.end() :], "attribute", f"{m.group(0)} -> {new}")

    def omit(self, caption: str, present: set[str], rng: random.Random) -> Injection | None:
        """A correctly named object deleted (its list item, or its sentence): an omission, the error opposite
        to ``add``. Not one of POVID's edits; with ``add`` it makes the text pairs length-neutral (see the
        module docstring)."""
        correct = [m for m in find_mentions(caption, self.vocab) if m.category in present]
        for m in rng.sample(correct, len(correct)):
            text = _remove_mention(caption, m)
            if text and find_mentions(text, self.vocab):
                return Injection(text, "omit", f"- {m.category}")
        return None

    def __call__(self, caption: str, present: Iterable[str], key: str) -> Injection | None:
        """One edit, the op drawn by weight; an op that does not apply falls back to the others in OPS order."""
        rng = random.Random(f"{self.seed}:{key}")
        present = set(present)
        ops = [op for op in OPS if self.weights.get(op, 0) > 0]
        if not ops:
            return None
        first = rng.choices(ops, weights=[self.weights[o] for o in ops])[0]
        for op in [first] + [o for o in ops if o != first]:
            result = getattr(self, op)(caption, present, rng)
            if result is not None and result.text != caption:
                return result
        return None


class LLMInjection:
    """The ``llm`` injector (train/llm_inject.py) behind CooccurrenceInjector's interface: the LLM gets the
    ``n_candidates`` absent categories with the highest w(c) as its candidate objects."""

    def __init__(self, llm, stats: CooccurrenceInjector, n_candidates: int = 5):
        self.llm, self.stats, self.n_candidates = llm, stats, n_candidates

    def __call__(self, caption: str, present: Iterable[str], key: str) -> Injection | None:
        present = sorted(set(present))
        weights = self.stats.candidate_weights(present)
        candidates = sorted(weights, key=lambda c: (-weights[c], c))[: self.n_candidates]
        return Injection(self.llm(caption, present, candidates), "llm", ", ".join(candidates))


_DET = re.compile(r"\b(?:a|an|one|two|three|four)\s+(?:[a-z]+\s+)?$", re.IGNORECASE)


def _remove_mention(text: str, m: Mention) -> str | None:
    """Delete one object from a caption: its list item ("a red X on the left") with the separator, or the
    whole sentence when the sentence is about it alone ("The X is red."). None when the object is the only
    item of its list (nothing sensible is left)."""
    s0 = text.rfind(". ", 0, m.start)
    s0 = 0 if s0 < 0 else s0 + 2
    s1 = text.find(".", m.end)
    s1 = len(text) if s1 < 0 else s1
    before = text[s0 : m.start]
    if re.match(r"^(The|This|That)\s+$", before, re.IGNORECASE) or before == "":
        return (text[:s0] + text[s1 + 2 :]).strip() if s0 > 0 or s1 + 2 < len(text) else None
    det = _DET.search(before)
    start = s0 + (det.start() if det else len(before))
    seps = [(text.rfind(d, s0, start), d) for d in (", ", " and ")]
    left, left_sep = max(seps)
    rights = [(i, d) for d in (", ", " and ") if (i := text.find(d, m.end, s1)) >= 0]
    right, right_sep = min(rights) if rights else (s1, ".")
    if left >= 0 and left + len(left_sep) == start:  # a separator just before the item
        if left_sep == ", " or right_sep != ".":
            return text[:left] + text[right:]
        # the last item: "A, B and X." -> "A and B."
        head = text[:left]
        comma = head.rfind(", ", s0)
        if comma >= 0:
            head = head[:comma] + " and " + head[comma + 2 :]
        return head + text[right:]
    if right_sep == ".":
        return None  # the only item
    return text[:start] + text[right + len(right_sep) :]


def correct_answer(
    answer: str, present: Iterable[str], rng: random.Random | None = None, vocab: Vocabulary | None = None
) -> str | None:
    """An answer made true to the annotations in its own words: every mention of a category not in
    ``present`` is deleted (its list item, or its sentence). None when the answer names no object or when a
    deletion would leave an empty list."""
    present = set(present)
    vocab = vocab or load_vocabulary()
    if not find_mentions(answer, vocab):
        return None
    while True:
        wrong = [m for m in find_mentions(answer, vocab) if m.category not in present]
        if not wrong:
            return answer
        edited = _remove_mention(answer, wrong[-1])
        if edited is None or edited == answer:
            return None
        answer = edited
