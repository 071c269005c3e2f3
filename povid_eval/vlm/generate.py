"""A model card as one function: ``generate(images, questions, decoding[, template]) -> answers``.

The card's prompt template is applied inside, or ``template`` when a bench card names its own (a chat endpoint
applies its own either way). Local weights are loaded once
per process (``run --bench all`` shares them); ``logits_processor`` (transformers LogitsProcessors) is applied
at every step of that same model (the stop-bias frontier uses it)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from povid_eval import cards

Generate = Callable[[list, list[str], cards.Decoding], list[str]]

_LOADED: dict[tuple, Generate] = {}


def for_card(model: cards.ModelCard, logits_processor=None) -> Generate:
    """Generation with the card's model (see the module docstring)."""
    key = (
        model.name,
        model.backend,
        model.path,
        model.adapter,
        model.format,
        model.model_base,
        model.dtype,
        model.device,
        model.base_url,
        model.api_model,
    )
    if key not in _LOADED:
        _LOADED[key] = _load(model)
    if logits_processor is None:
        return _LOADED[key]
    return functools.partial(_LOADED[key], logits_processor=logits_processor)


def _load(model: cards.ModelCard) -> Generate:
    if model.backend == "openai":  # an OpenAI-compatible chat endpoint: no torch, no weights
        from povid_eval.vlm import api

        return api.openai_generate(model)
    import torch
    from transformers.utils import logging as hf_logging

    from povid_eval.vlm.model import load_vlm_card

    hf_logging.disable_progress_bar()  # the runner shows its own progress
    if model.threads:
        torch.set_num_threads(model.threads)

    vlm = load_vlm_card(model)

    def generate(images, prompts, decoding: cards.Decoding, logits_processor=None, template: str = "") -> list[str]:
        texts = [vlm.prompt(template or model.template, p) for p in prompts]
        return vlm.generate(
            images,
            texts,
            max_new_tokens=decoding.max_new_tokens,
            do_sample=decoding.do_sample,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            seed=decoding.seed,
            logits_processor=logits_processor,
        )

    return generate
