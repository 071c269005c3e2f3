"""POVID's text-dispreferred answers from an LLM: a correct caption rewritten with injected hallucinations.

POVID (Zhou et al., "Aligning Modalities in Vision Large Language Models via Preference Fine-tuning", 2024)
builds the dispreferred response y_l^t by asking an LLM to rewrite the ground-truth answer y_w with
hallucinations: objects that co-occur with those present but are not in the image, wrong attributes, and
wrong logical relations. This module does that through any OpenAI-compatible endpoint (ChatClient) with
the project's OWN prompt (DEFAULT_PROMPT; not the paper's wording).

Protocol, one caption:

    1. user:      DEFAULT_PROMPT.format(caption, present, candidates)      (lists joined with ", ")
    2. reply:     cleaned by parse_rewrite(): <think> blocks, code fences, a "Here is ...:" preamble line,
                  "Rewritten caption:"-style prefixes, surrounding quotes and whitespace removed
    3. if the cleaned reply is empty or the same caption (case and whitespace ignored): ONE retry, the
       conversation continued with the reply and RETRY_NOTE; still empty or the same -> InjectionError
       naming the caption

Every request goes through the client, which caches each answer on disk (keyed by the full request,
retry included), so rerunning the preference-data build sends no request. No check that the candidate
objects actually appear in the rewrite: the LLM may inflect or paraphrase them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from povid_eval.core.errors import PovidError
from povid_eval.core.http import ChatClient

DEFAULT_PROMPT = """\
You are helping to build training data that teaches a vision-language model not to hallucinate.
Below is a correct description of an image. Rewrite it into a fluent, plausible but WRONG description \
of the same image:
1. Add one or two objects that are NOT in the image, chosen from the candidate list below; prefer \
objects that often appear together with the objects that are present, and mention them naturally, \
as if they were there.
2. Change a few attributes of the objects that are there: colours, counts, sizes or positions.
3. Break at least one relation between objects (what is on, next to or under what; who does what).
4. Keep the style, tone and roughly the length of the original. Do not hedge ("maybe", "possibly") \
and do not say that anything was changed.

Objects in the image: {present}
Candidate objects that are NOT in the image: {candidates}

Original description:
{caption}

Answer with the rewritten description only."""

RETRY_NOTE = (
    "Your answer was empty or the same as the original description. Rewrite the description "
    "with the changes asked for, and answer with the rewritten description only."
)

NONE_LISTED = "(none listed)"

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.S)
_PREAMBLE = re.compile(r"^(?:sure|okay|ok|certainly|here is|here's)\b[^\n]*:\s*\n", re.I)
_PREFIX = re.compile(
    r"^[*_]*\s*(?:(?:the\s+)?(?:rewritten|hallucinated|modified|altered|new|wrong)\s+)?"
    r"(?:caption|description|answer)\s*[*_]*\s*:\s*[*_]*\s*",
    re.I,
)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "`": "`"}


class InjectionError(PovidError):
    """The LLM gave no usable hallucinated rewrite for a caption."""


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        return text[1:-1].strip()
    return text


def parse_rewrite(reply: str) -> str:
    """The rewritten caption in an LLM reply (see the module docstring, step 2)."""
    text = _THINK.sub("", reply).strip()
    previous = None
    while text != previous:
        previous = text
        fence = _FENCE.match(text)
        if fence:
            text = fence.group(1).strip()
        text = _PREAMBLE.sub("", text, count=1).strip()
        text = _PREFIX.sub("", text, count=1).strip()
        text = _strip_quotes(text)
    return text


def _same_text(a: str, b: str) -> bool:
    norm = lambda s: " ".join(s.casefold().split()).rstrip(".")  # noqa: E731
    return norm(a) == norm(b)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class LLMInjector:
    """``injector(caption, present, absent_candidates) -> hallucinated caption`` through an LLM."""

    def __init__(self, client: ChatClient, prompt: str = DEFAULT_PROMPT):
        if "{caption}" not in prompt:
            raise PovidError("hallucination-injection prompt has no {caption} placeholder")
        try:
            prompt.format(caption="", present="", candidates="")
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise PovidError(
                f"hallucination-injection prompt: bad placeholder {e} (allowed: {{caption}}, "
                "{present}, {candidates}; write literal braces as {{ }})"
            ) from None
        self.client, self.prompt = client, prompt

    @property
    def prompt_sha256(self) -> str:
        """Hash of the prompt, for recording next to the preference data it made."""
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()

    def messages(self, caption: str, present: Sequence[str], absent_candidates: Sequence[str]) -> list[dict]:
        """The first request's messages for one caption."""
        text = self.prompt.format(
            caption=caption.strip(),
            present=", ".join(present) or NONE_LISTED,
            candidates=", ".join(absent_candidates) or NONE_LISTED,
        )
        return [{"role": "user", "content": text}]

    def __call__(self, caption: str, present: Sequence[str], absent_candidates: Sequence[str]) -> str:
        messages = self.messages(caption, present, absent_candidates)
        reply = self.client.chat(messages)
        rewrite = parse_rewrite(reply)
        if rewrite and not _same_text(rewrite, caption):
            return rewrite
        retry = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": RETRY_NOTE}]
        rewrite = parse_rewrite(self.client.chat(retry))
        if rewrite and not _same_text(rewrite, caption):
            return rewrite
        what = "an empty reply" if not rewrite else "the caption unchanged"
        raise InjectionError(f'{self.client.url}: LLM injector gave {what} twice for caption "{_short(caption)}"')
