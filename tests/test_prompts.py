"""Prompt templates as data (povid_eval/vlm/templates.toml) and the model card's choice of one."""

import pytest

from povid_eval import cards
from povid_eval.core.errors import InputError
from povid_eval.prompts import named_templates, render, template_problem

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)


def test_llava_templates_exactly():
    # LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO): system + " " + "USER: " + message + " " + "ASSISTANT:"
    assert (
        render("vicuna_v1", "Describe this image.") == f"{VICUNA_SYSTEM} USER: <image>\nDescribe this image. ASSISTANT:"
    )
    # conv_llava_plain (SeparatorStyle.PLAIN, sep "\n"): the message and the separator only
    assert render("plain", "Describe this image.") == "<image>\nDescribe this image.\n"
    assert render("USER: <image>\n{prompt} ASSISTANT:", "Q?") == "USER: <image>\nQ? ASSISTANT:"
    assert set(named_templates()) >= {"vicuna_v1", "plain", "llava_v1_nosys"}


def test_chat_template_uses_the_processor():
    class Processor:
        chat_template = "x"

        def apply_chat_template(self, conversation, add_generation_prompt, tokenize):
            assert add_generation_prompt and not tokenize
            [turn] = conversation
            assert turn["content"][0] == {"type": "image"}
            return f"USER: <image>\n{turn['content'][1]['text']} ASSISTANT:"

    assert render("chat_template", "Q?", Processor()) == "USER: <image>\nQ? ASSISTANT:"
    with pytest.raises(ValueError, match="chat template"):
        render("chat_template", "Q?", None)


def test_card_template_is_checked(tmp_path):
    assert template_problem("vicuna_v1") is None and template_problem("chat_template") is None
    (tmp_path / "bad.toml").write_text('path = "models/base"\ntemplate = "vicuna_v2"\n')
    with pytest.raises(InputError, match="template must be a name .*vicuna_v1.*got 'vicuna_v2'"):
        cards.load_model_card("bad", tmp_path)
    (tmp_path / "api.toml").write_text('backend = "openai"\napi_model = "m"\n')
    with pytest.raises(InputError, match="missing key 'base_url'"):
        cards.load_model_card("api", tmp_path)
    (tmp_path / "ok.toml").write_text('path = "models/base"\ntemplate = "vicuna_v1"\nformat = "llava"\n')
    assert cards.load_model_card("ok", tmp_path).format == "llava"
