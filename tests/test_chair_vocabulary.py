"""The project's CHAIR vocabulary equals the reference synonyms.txt and double-word rules."""

import gzip
import json

from povid_eval.benches.chair import scorer as chair


def reference_inverse_synonyms(path):
    """What the reference chair.py derives from synonyms.txt: split(', ') per stripped line."""
    inverse = {}
    for line in path.read_text().splitlines():
        words = line.strip().split(", ")
        for w in words:
            inverse[w] = words[0]
    return inverse


def test_synonyms_equal_reference_table(fixtures):
    vocab = chair.load_vocabulary()
    reference = reference_inverse_synonyms(fixtures / "chair" / "synonyms.txt")
    # Entries the reference parser makes but can never match a token: '' and ' motor bike'-like (double space).
    unmatchable = {k: v for k, v in reference.items() if k != k.strip() or not k}
    matchable = {k: v for k, v in reference.items() if k not in unmatchable}
    assert vocab.synonyms == matchable
    assert {k.strip(): v for k, v in unmatchable.items() if k.strip()} == vocab.unmatched
    assert len(vocab.categories) == 80


def test_vocabulary_equals_reference_cache(fixtures):
    with gzip.open(fixtures / "chair" / "coco2014_gt_objects.json.gz", "rt") as f:
        data = json.load(f)
    vocab = chair.load_vocabulary()
    assert vocab.double_words == data["double_word_dict"]
    reference = {k: v for k, v in data["inverse_synonym_dict"].items() if k == k.strip() and k}
    assert vocab.synonyms == reference


def test_double_word_rules():
    double = chair.load_vocabulary().double_words
    assert double["baby bird"] == "bird" and double["adult elephant"] == "elephant"
    assert double["passenger jet"] == "jet" and double["passenger train"] == "train"
    assert double["toilet seat"] == "toilet" and double["bow tie"] == "tie"
    assert double["wine glas"] == "wine glass"  # singularize("glass") == "glas"
    assert double["traffic light"] == "traffic light"
