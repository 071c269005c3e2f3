"""Model and bench cards: round trip, validation with clear errors, protocol hash."""

import dataclasses

import pytest

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.core.errors import InputError


def test_model_card_round_trip(tmp_path):
    card = cards.ModelCard(
        name="m",
        path="models/base",
        adapter="models/povid/adapter",
        dtype="bf16",
        info={"seed": 3, "command": "x y"},
    )
    path = cards.save_model_card(card, tmp_path)
    assert cards.load_model_card(str(path)) == card
    assert cards.load_model_card("m", tmp_path) == card


def test_shipped_bench_cards_load():
    for name in cards.bench_names():
        card = registry.load_card(name)
        assert card.kind in tuple(registry.BENCHES) and len(card.protocol_hash()) == 16


def test_protocol_hash_follows_what_changes_numbers():
    card = registry.load_card("chair")
    assert dataclasses.replace(card, data="/elsewhere").protocol_hash() == card.protocol_hash()
    assert dataclasses.replace(card, prompt="Please describe.").protocol_hash() != card.protocol_hash()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('bench = "chair"\nvariant = "singularize"\n', "missing key 'data'"),
        ('bench = "chair"\nvariant = "x"\ndata = "d"\npromt = "typo"\n', "unknown key 'promt'"),
        ('bench = "chiar"\nvariant = "x"\ndata = "d"\n', "bench: unknown bench kind 'chiar'"),
        (
            'bench = "chair"\nvariant = "x"\ndata = "d"\n[decoding]\nmax_tokens = 3\n',
            "unknown key 'decoding.max_tokens'",
        ),
        ('bench = "chair\n', "invalid TOML"),
    ],
)
def test_bad_bench_cards(tmp_path, text, fragment):
    (tmp_path / "b.toml").write_text(text)
    with pytest.raises(InputError, match=fragment) as e:
        registry.load_card("b", tmp_path)
    assert str(tmp_path / "b.toml") in str(e.value)


def test_unknown_names_list_known(tmp_path):
    (tmp_path / "alpha.toml").write_text('path = "x"\n')
    with pytest.raises(InputError, match=r"unknown model 'beta' \(known: alpha\)"):
        cards.load_model_card("beta", tmp_path)
    with pytest.raises(InputError, match="dtype: must be one of"):
        (tmp_path / "bad.toml").write_text('path = "x"\ndtype = "int4"\n')
        cards.load_model_card("bad", tmp_path)
