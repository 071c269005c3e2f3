"""CHAIR: Caption Hallucination Assessment with Image Relevance.

Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018; the ``Len`` column is OPERA's
(Huang et al., CVPR 2024). For a set of captions, each with its image's ground-truth COCO objects G:

    mentions(c)  = COCO-object mentions of caption c, counted with repeats, mapped to their category
    CHAIRs       = #{c : some mention of c is not in G_c} / #captions
    CHAIRi       = #{hallucinated mentions} / #{mentions}                     (over all captions)
    Recall       = sum_c |{categories mentioned in c} & G_c| / sum_c |G_c|
    Len          = 0.01 * mean number of tokens per caption after the double-word merge
    mean_words   = mean number of whitespace-separated words per caption (plain caption length)

Tokenisation variants (the only difference between the two reference implementations):
    ``singularize``  nltk.word_tokenize(lower) -> pattern's singularize (textblob carries the same code):
                     the original CHAIR, and POVID's protocol.
    ``wordnet``      nltk.word_tokenize(lower) -> nltk.pos_tag -> WordNetLemmatizer (J/V/N/R tags map to
                     adj/verb/noun/adv, anything else lemmatised as a noun): OPERA and most later papers.
Then both merge double words ("baby bird" -> "bird"), drop "seat" when "toilet" is present, and keep the
tokens that are in the vocabulary (vocab.toml).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomllib

from povid_eval.benches.common import as_floats, ratio
from povid_eval.core.errors import MissingAssetError

VARIANTS = ("singularize", "wordnet")
DEFAULT_VARIANT = "singularize"
VOCAB_FILE = Path(__file__).with_name("vocab.toml")


@dataclass(frozen=True)
class Vocabulary:
    """word -> COCO category, and two-token phrase -> merged token."""

    synonyms: dict[str, str]
    double_words: dict[str, str]
    unmatched: dict[str, str] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(self.synonyms.values()))


@functools.cache
def load_vocabulary(path: Path = VOCAB_FILE) -> Vocabulary:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    synonyms: dict[str, str] = {}
    for category, words in data["categories"].items():
        synonyms[category] = category
        for w in words:
            synonyms[w] = category
    unmatched = {w: c for c, words in data.get("unmatched", {}).items() for w in words}
    return Vocabulary(synonyms=synonyms, double_words=dict(data["double_words"]), unmatched=unmatched)


# ---------------------------------------------------------------- tokenisation (the two variants)


def _nltk_call(fn, *args):
    try:
        return fn(*args)
    except LookupError as e:
        found = re.search(r"Resource\s+(?:\x1b\[\d+m)?([\w/.]+)", str(e))
        name = found.group(1) if found else "data"
        raise MissingAssetError(
            f"NLTK resource '{name}' not found: run `make setup` (offline assembly) or, with internet, "
            "`python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet`"
        ) from None


@functools.cache
def _singularize(word: str) -> str:
    from textblob.en.inflect import singularize

    return singularize(word)


@functools.cache
def _lemmatize(word: str, pos: str) -> str:
    return _lemmatizer().lemmatize(word, pos=pos)


@functools.lru_cache(maxsize=1)
def _lemmatizer():
    """nltk's WordNetLemmatizer over an English-only WordNet reader.

    NLTK 3.10's reader maps every synset to other WordNet versions for the multilingual OMW data when it
    loads (reading index.sense twice, several seconds); lemmatisation (morphy) never uses that map, so this
    reader skips it. Lemmas are unchanged.
    """

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.stem import WordNetLemmatizer

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return {}

    root = _nltk_call(nltk.data.find, "corpora/wordnet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        reader = EnglishWordNet(root, None)

    class Lemmatizer(WordNetLemmatizer):
        def _morphy(self, form, pos, check_exceptions=True):
            return reader._morphy(form, pos, check_exceptions)

    return Lemmatizer()


def _word_tokenize(caption: str) -> list[str]:
    import nltk

    return _nltk_call(nltk.word_tokenize, caption.lower())


def tokens_singularize(caption: str) -> list[str]:
    """The original CHAIR: word_tokenize(lower) then pattern singularize on every token."""
    return [_singularize(w) for w in _word_tokenize(caption)]


_WORDNET_POS = {"J": "a", "V": "v", "N": "n", "R": "r"}


class _ArrayPerceptron:
    """nltk's averaged-perceptron ``predict`` as one weight matrix and a cumulative sum.

    Same result to the last bit: per class the score is the same left-to-right sum of value * weight over the
    features in nltk's order (np.cumsum is sequential; absent weights add an exact 0.0), and ties go to the
    alphabetically largest label, as in nltk. Several times faster than the dict loop.
    """

    def __init__(self, model):
        import numpy as np

        self._np, self._model = np, model
        self.classes = sorted(model.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        self.row_of = {feat: r for r, feat in enumerate(model.weights)}
        self.matrix = np.zeros((len(self.row_of) + 1, len(self.classes)))  # last row: zeros, for no feature
        for r, weights in enumerate(model.weights.values()):
            for label, w in weights.items():
                self.matrix[r, index[label]] = w

    def predict(self, features, return_conf=False):
        if return_conf:
            return self._model.predict(features, return_conf)
        np = self._np
        rows, values = [], []
        for feat, value in features.items():
            r = self.row_of.get(feat)
            if r is not None and value != 0:
                rows.append(r)
                values.append(value)
        if not rows:
            rows, values = [len(self.row_of)], [1]
        terms = self.matrix[rows] * np.asarray(values, dtype=float)[:, None]
        scores = np.cumsum(terms, axis=0)[-1].tolist()
        best = max(scores)
        return max(c for c, s in zip(self.classes, scores) if s == best), None


@functools.lru_cache(maxsize=1)
def _tagger():
    """nltk's English PerceptronTagger (what nltk.pos_tag uses), loaded once, with the array predict."""
    from nltk.tag.perceptron import PerceptronTagger

    tagger = _nltk_call(PerceptronTagger)
    tagger.model.predict = _ArrayPerceptron(tagger.model).predict
    return tagger


def tokens_wordnet(caption: str) -> list[str]:
    """OPERA's CHAIR: word_tokenize(lower), pos_tag, WordNet lemma with the tag's POS (noun by default)."""
    words = _word_tokenize(caption)
    tagged = _tagger().tag(words)
    return [_nltk_call(_lemmatize, w, _WORDNET_POS.get(tag[:1], "n")) for w, tag in tagged]


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"singularize": tokens_singularize, "wordnet": tokens_wordnet}


def check_variant(variant: str) -> None:
    if variant not in TOKENIZERS:
        raise ValueError(f"unknown CHAIR variant '{variant}' (known: {', '.join(VARIANTS)})")


# ---------------------------------------------------------------- mentions and scores (pure)


@dataclass(frozen=True)
class Mentions:
    """The COCO-object mentions of one caption."""

    words: list[str]  # the matched tokens, in order, with repeats
    objects: list[str]  # their categories
    positions: list[int]  # index of each mention in the pre-merge token list
    tokens: list[str]  # all tokens after the double-word merge (for Len)


def merge_double_words(tokens: list[str], double_words: dict[str, str]) -> tuple[list[str], list[int]]:
    """Greedy left-to-right merge of two-token phrases; returns merged tokens and their start positions."""
    merged, starts, i = [], [], 0
    while i < len(tokens):
        starts.append(i)
        pair = " ".join(tokens[i : i + 2])
        if pair in double_words:
            merged.append(double_words[pair])
            i += 2
        else:
            merged.append(tokens[i])
            i += 1
    return merged, starts


def find_mentions(tokens: list[str], vocab: Vocabulary) -> Mentions:
    """Object mentions in a tokenised caption (double words, the toilet/seat rule, synonym lookup)."""
    merged, starts = merge_double_words(tokens, vocab.double_words)
    keep = merged
    if "toilet" in merged and "seat" in merged:  # "the seat of the toilet" is not a chair
        keep = [w if w != "seat" else None for w in merged]
    words, objects, positions = [], [], []
    for w, start in zip(keep, starts):
        if w is not None and w in vocab.synonyms:
            words.append(w)
            objects.append(vocab.synonyms[w])
            positions.append(start)
    return Mentions(words=words, objects=objects, positions=positions, tokens=merged)


def caption_mentions(caption: str, variant: str = DEFAULT_VARIANT, vocab: Vocabulary | None = None) -> Mentions:
    check_variant(variant)
    return find_mentions(TOKENIZERS[variant](caption), vocab or load_vocabulary())


@dataclass(frozen=True)
class CaptionScore:
    """One caption's result; ``hallucinated`` lists (word, category) pairs not in the ground truth."""

    image_id: str
    mentions: Mentions
    gt_objects: frozenset[str]
    hallucinated: list[tuple[str, str]]
    n_words: int

    @property
    def correct_objects(self) -> set[str]:
        return {o for o in self.mentions.objects if o in self.gt_objects}

    def as_dict(self, caption: str) -> dict:
        n = len(self.mentions.objects)
        return {
            "image_id": self.image_id,
            "caption": caption,
            "mentions": [list(p) for p in zip(self.mentions.words, self.mentions.objects)],
            "hallucinated": [list(p) for p in self.hallucinated],
            "gt_objects": sorted(self.gt_objects),
            "CHAIRs": int(bool(self.hallucinated)),
            "CHAIRi": len(self.hallucinated) / n if n else 0.0,
            "recall_objects": sorted(self.correct_objects),
        }


def score_caption(
    image_id: str,
    caption: str,
    gt_objects: Iterable[str],
    variant: str = DEFAULT_VARIANT,
    vocab: Vocabulary | None = None,
) -> CaptionScore:
    gt = frozenset(gt_objects)
    m = caption_mentions(caption, variant, vocab)
    hallucinated = [(w, o) for w, o in zip(m.words, m.objects) if o not in gt]
    return CaptionScore(
        image_id=image_id, mentions=m, gt_objects=gt, hallucinated=hallucinated, n_words=len(caption.split())
    )


#: per-caption statistics whose sums give every CHAIR metric (see from_sums)
UNIT_COLUMNS = (
    "hallucinated_captions",
    "hallucinated",
    "mentions",
    "recalled",
    "gt_objects",
    "tokens",
    "words",
    "captions",
)


def unit_row(s: CaptionScore) -> list[int]:
    return [
        int(bool(s.hallucinated)),
        len(s.hallucinated),
        len(s.mentions.objects),
        len(s.correct_objects),
        len(s.gt_objects),
        len(s.mentions.tokens),
        s.n_words,
        1,
    ]


def from_sums(sums) -> dict:
    """The metrics of the module docstring from summed unit rows (shape (..., 8)); works on bootstrap batches."""
    s = np.asarray(sums, dtype=float)
    col = {name: s[..., i] for i, name in enumerate(UNIT_COLUMNS)}
    return {
        "CHAIRs": ratio(col["hallucinated_captions"], col["captions"]),
        "CHAIRi": ratio(col["hallucinated"], col["mentions"]),
        "Recall": ratio(col["recalled"], col["gt_objects"]),
        "Len": ratio(0.01 * col["tokens"], col["captions"]),
        "mean_words": ratio(col["words"], col["captions"]),
    }


def unit_matrix(scores: list[CaptionScore]) -> np.ndarray:
    return np.array([unit_row(s) for s in scores], dtype=float).reshape(-1, len(UNIT_COLUMNS))


def aggregate(scores: list[CaptionScore]) -> dict[str, float]:
    """CHAIRs, CHAIRi, Recall, Len, mean_words over scored captions (formulas in the module docstring)."""
    if not scores:
        raise ValueError("no captions to score")
    return as_floats(from_sums(unit_matrix(scores).sum(axis=0)))


def normalize_image_id(image_id) -> str:
    """Ground-truth maps are keyed by the decimal image id: 226988, "226988" and "000000226988" agree."""
    text = str(image_id).strip()
    return str(int(text)) if text.isdigit() else text
