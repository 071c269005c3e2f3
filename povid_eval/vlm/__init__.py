"""Vision-language models: load LLaVA checkpoints (+ PEFT adapters, the original LLaVA layout converted),
OpenAI-compatible endpoints (api.py), generate in batches (generate.py), score responses (logprobs.py), and
build a tiny LLaVA (build.py). Knows nothing of benchmarks or the synthetic world.

The names below are imported on first use, so that ``import povid_eval.vlm.api`` does not import torch."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_tiny_llava": "build",
    "response_logprobs": "logprobs",
    "token_logprobs": "logprobs",
    "VLM": "model",
    "load_vlm": "model",
    "load_vlm_card": "model",
    "detokenize": "tokenizer",
    "format_prompt": "tokenizer",
    "format_response": "tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"povid_eval.vlm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'povid_eval.vlm' has no attribute {name!r}")
