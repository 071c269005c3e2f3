"""Prompt templates: a model card's ``template`` names one of vlm/templates.toml, or ``chat_template`` (the
processor's own chat template, e.g. llava-hf's), or is a literal string with ``<image>`` and ``{prompt}``.

    render("vicuna_v1", "Describe this image.")
      -> "A chat between a curious user ... USER: <image>\\nDescribe this image. ASSISTANT:"

The bench card decides the question text, including its instruction suffix (POPE's "\\nAnswer the question
using a single word or phrase."); the template only wraps it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import tomllib

TEMPLATES_FILE = Path(__file__).with_name("templates.toml")
CHAT_TEMPLATE = "chat_template"


@functools.lru_cache(maxsize=1)
def named_templates() -> dict[str, str]:
    with open(TEMPLATES_FILE, "rb") as f:
        return {name: table["text"] for name, table in tomllib.load(f).items()}


def template_problem(spec: str) -> str | None:
    """Why ``spec`` is not a usable template (None when it is)."""
    if spec == CHAT_TEMPLATE or spec in named_templates():
        return None
    if "<image>" not in spec or "{prompt}" not in spec:
        known = ", ".join([*named_templates(), CHAT_TEMPLATE])
        return f"template must be a name ({known}) or a string with '<image>' and '{{prompt}}', got {spec!r}"
    return None


def render(spec: str, prompt: str, processor=None) -> str:
    """The model's input text for one question (``processor`` is needed for ``chat_template`` only)."""
    if spec == CHAT_TEMPLATE:
        if processor is None or not getattr(processor, "chat_template", None):
            raise ValueError("template 'chat_template' needs a processor that has a chat template")
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return named_templates().get(spec, spec).replace("{prompt}", prompt)
