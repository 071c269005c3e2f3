"""The tiny base's word-level tokenizer, the prompt format, and turning token ids back into readable text.

The tokenizer is a `tokenizers` WordLevel model saved as an ordinary fast tokenizer (tokenizer.json), so
``AutoTokenizer`` / ``AutoProcessor`` load it offline. Text is NFKC-normalised, whitespace runs (newlines
included) become one space, and everything is lower-cased. The pre-tokenizer marks the start of each word
with U+2581 (``Metaspace``, as sentencepiece does) and then isolates punctuation:

    "A red dog, on the left."  ->  ▁a ▁red ▁dog , ▁on ▁the ▁left .

so the stock Metaspace decoder already rebuilds "a red dog, on the left." (punctuation attached, no space
before it); ``detokenize`` then capitalises sentence starts. The vocabulary is every piece this
pre-tokenizer produces on the world's text, plus the special tokens below (fixed ids 0-4).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMAGE)

PROMPT_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"
CAPTION_QUESTION = "Describe this image."


def format_prompt(question: str) -> str:
    """LLaVA-1.5's single-turn prompt: ``USER: <image>\\n{question} ASSISTANT:``."""
    return PROMPT_TEMPLATE.format(question=question)


def format_response(answer: str) -> str:
    """What follows the prompt in training: `` {answer}</s>`` (the leading space separates it from 'ASSISTANT:')."""
    return f" {answer.strip()}{EOS}"


def _normalizer():
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )


def word_pieces(text: str) -> list[str]:
    """The pieces the tokenizer would look up for ``text`` (special tokens are not recognised here)."""
    normalized = _normalizer().normalize_str(text)
    return [piece for piece, _ in _pre_tokenizer().pre_tokenize_str(normalized)]


def vocab_from_texts(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """Every piece seen at least ``min_count`` times in ``texts`` (prompts included), most frequent first.

    The prompt template's own pieces are always included, so any question can be formatted.
    """
    counts: Counter[str] = Counter()
    for text in texts:
        for chunk in re.split("|".join(map(re.escape, SPECIAL_TOKENS)), text):
            counts.update(word_pieces(chunk))
    must = {p for chunk in PROMPT_TEMPLATE.split(IMAGE) for p in word_pieces(chunk.format(question=CAPTION_QUESTION))}
    return sorted((p for p, c in counts.items() if c >= min_count or p in must), key=lambda p: (-counts[p], p))


def build_tokenizer(vocab_words: Iterable[str]):
    """A fast tokenizer over ``vocab_words``: pieces as from ``vocab_from_texts``; a bare word ("dog") is
    added both as itself (its form after an apostrophe or hyphen) and with the word-start mark ("▁dog").

    Adds ``<s>`` in front of every encoded text, pads on the left, and treats ``<image>`` and ``</s>`` in text
    as single special tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in vocab_words:
        pieces = [word] if word.startswith("\u2581") or not word.isalnum() else [word, "\u2581" + word]
        for piece in pieces:
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )


_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")


def capitalize_sentences(text: str) -> str:
    """Upper-case the first letter of the text and of every sentence after '.', '!' or '?'."""
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def detokenize(tokenizer, ids: Iterable[int]) -> str:
    """Readable text of generated ids: stops at the first ``</s>``, drops special tokens, joins words,
    attaches punctuation and capitalises sentences ("A red dog is on the left.")."""
    ids = list(ids)
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return capitalize_sentences(re.sub(r"\s+", " ", text).strip())
