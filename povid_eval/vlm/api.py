"""``backend = "openai"``: the model is an OpenAI-compatible chat endpoint (vLLM, SGLang, a hosted API).

Protocol, one request per (image, question), through povid_eval.core.http.ChatClient:

    POST {base_url}/chat/completions
    body     {"model": api_model,
              "messages": [{"role": "user", "content": [
                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},   # image first,
                  {"type": "text", "text": question}]}],                                       # then the question
              "max_tokens": decoding.max_new_tokens,
              "temperature": 0, "top_p": 1                                    # greedy (do_sample = false)
              | "temperature": t, "top_p": p, "seed": decoding.seed}          # sampling (vLLM honours seed)
    headers  Authorization: Bearer $<api_key_env> (only when the card names api_key_env)
    answer   choices[0].message.content, stripped of surrounding whitespace

The server applies its own chat template, so the card's ``template`` is not used by this backend. Images go
as lossless PNG. At most ``concurrency`` requests are in flight, and the runner keeps that many in flight
across its batches (``generate.stream``: the next request starts as soon as one returns; answers are appended
in item order); 429 / 5xx / timeouts are retried ``max_retries`` times with backoff (Retry-After honoured).
Every answer is cached under ``cache_dir()/api`` keyed by base_url and the request (never the key), so a
rerun or a resumed run sends no request for an answer it already has. The key is read from the environment
when requests are sent and written nowhere.
"""

from __future__ import annotations

import os

from povid_eval import cards
from povid_eval.core.errors import MissingAssetError, PovidError
from povid_eval.core.http import ChatClient, image_content
from povid_eval.core.paths import cache_dir


def decoding_request(decoding: cards.Decoding) -> dict:
    """The request fields (besides model and messages) for a bench's decoding settings."""
    if not decoding.do_sample:
        return {"max_tokens": decoding.max_new_tokens, "temperature": 0.0, "top_p": 1.0}
    return {
        "max_tokens": decoding.max_new_tokens,
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "seed": decoding.seed,
    }


def openai_client(card: cards.ModelCard) -> ChatClient:
    """The card's ChatClient, caching answers under cache_dir()/api."""

    return ChatClient(
        card.base_url,
        card.api_model,
        api_key_env=card.api_key_env or None,
        timeout=card.timeout,
        max_retries=card.max_retries,
        cache_dir=cache_dir() / "api",
    )


def openai_generate(card: cards.ModelCard):
    """A runner Generate, ``generate(images, questions, decoding) -> answers``, backed by the card's endpoint.

    Fails at once (MissingAssetError) when the card names a key variable that is not set."""
    if card.api_key_env and not os.environ.get(card.api_key_env):
        raise MissingAssetError(
            f"model {card.name}: environment variable {card.api_key_env} (the API key for {card.base_url}) is not set"
        )
    client = openai_client(card)

    def generate(images, questions, decoding: cards.Decoding, logits_processor=None, template: str = "") -> list[str]:
        if logits_processor is not None:
            raise PovidError(
                f'model {card.name}: logits processors need a local model (backend = "hf"), not an API endpoint'
            )
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        conversations = [
            [{"role": "user", "content": image_content(image, question)}] for image, question in zip(images, questions)
        ]
        answers = client.chat_many(conversations, workers=max(1, card.concurrency), **decoding_request(decoding))
        return [answer.strip() for answer in answers]

    def stream(requests, decoding: cards.Decoding, template: str = ""):
        """Answers to ``requests``, an iterable of (load_image, question) pairs (the image is read and encoded
        on a worker thread), in order, with ``concurrency`` requests in flight and no barrier between
        batches (ChatClient.chat_stream)."""
        conversations = (
            lambda load=load, question=question: [{"role": "user", "content": image_content(load(), question)}]
            for load, question in requests
        )
        for answer in client.chat_stream(conversations, workers=max(1, card.concurrency), **decoding_request(decoding)):
            yield answer.strip()

    generate.stream = stream
    return generate
