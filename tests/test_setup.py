"""Set-up: NLTK finds CHAIR's data without any environment variable (the Makefile checks the torch pin)."""

import os

from povid_eval.benches.chair import nltk_setup


def test_nltk_data_found_without_environment_variable():
    assert "NLTK_DATA" not in os.environ or os.environ["NLTK_DATA"] == ""
    assert nltk_setup.missing_resources() == []


def test_lexnames_are_wordnet_30():
    assert len(nltk_setup.LEXNAMES) == 45
    assert nltk_setup.LEXNAMES[3] == "noun.Tops" and nltk_setup.LEXNAMES[44] == "adj.ppl"
