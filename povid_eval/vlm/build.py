"""Build the tiny base from configs: a real ``LlavaForConditionalGeneration`` + ``LlavaProcessor``.

Same architecture as LLaVA-1.5, scaled down so it trains on a laptop CPU in minutes:

    image (64x64) -> CLIP vision tower (patch 16 -> 4x4 = 16 patches + CLS) -> features of layer -2, CLS dropped
                  -> 2-layer GELU MLP projector -> 16 image embeddings spliced in place of the 16 <image> tokens
    text          -> word-level tokenizer -> Llama decoder -> next-token logits

The processor expands one ``<image>`` in a prompt to ``(image_size / patch_size)^2`` image tokens (16),
exactly the number of features the vision tower hands the projector. Patch 16 rather than 8 halves the
sequence (and the training time): the world's objects are 7-32 pixels tall.
"""

from __future__ import annotations

from collections.abc import Iterable

from povid_eval.vlm.tokenizer import IMAGE, build_tokenizer

DEFAULT_SIZES = {
    "image_size": 64,
    "patch_size": 16,
    "vision_hidden": 96,
    "vision_layers": 3,
    "vision_heads": 4,
    "vision_intermediate": 256,
    "text_hidden": 128,
    "text_layers": 3,
    "text_heads": 4,
    "text_intermediate": 384,
    "max_positions": 256,
}

# CLIP's normalisation constants, as in openai/clip-vit-large-patch14-336 (LLaVA-1.5's tower).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_processor(vocab_words: Iterable[str], image_size: int = 64, patch_size: int = 16):
    """Tokenizer + CLIP image processor (resize the short side, centre-crop to ``image_size``) in a LlavaProcessor."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_resize=True,
        do_center_crop=True,
        do_rescale=True,
        do_normalize=True,
        do_convert_rgb=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    # vision_feature_select_strategy "default" drops CLS: (64/16)^2 + 1 - 1 = 16 tokens per image.
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(vocab_words),
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        image_token=IMAGE,
        num_additional_image_tokens=1,
    )


def build_config(vocab_size: int, tokenizer, **sizes):
    """LlavaConfig for the tiny base; ``sizes`` override DEFAULT_SIZES."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise ValueError(f"unknown size option(s): {', '.join(sorted(unknown))} (known: {', '.join(DEFAULT_SIZES)})")
    s = {**DEFAULT_SIZES, **sizes}
    vision = CLIPVisionConfig(
        hidden_size=s["vision_hidden"],
        intermediate_size=s["vision_intermediate"],
        num_hidden_layers=s["vision_layers"],
        num_attention_heads=s["vision_heads"],
        image_size=s["image_size"],
        patch_size=s["patch_size"],
        num_channels=3,
        projection_dim=s["vision_hidden"],
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=s["text_hidden"],
        intermediate_size=s["text_intermediate"],
        num_hidden_layers=s["text_layers"],
        num_attention_heads=s["text_heads"],
        num_key_value_heads=s["text_heads"],
        max_position_embeddings=s["max_positions"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    n_patches = (s["image_size"] // s["patch_size"]) ** 2
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=n_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )


def build_tiny_llava(vocab_words: Iterable[str], seed: int = 0, **sizes):
    """A freshly initialised tiny LLaVA and its processor: ``(model, processor)``.

    ``vocab_words``: tokenizer pieces (``tokenizer.vocab_from_texts``) or plain words; ``seed`` fixes the
    initial weights; ``sizes``: any of DEFAULT_SIZES.
    """
    import torch
    from transformers import GenerationConfig, LlavaForConditionalGeneration

    s = {**DEFAULT_SIZES, **sizes}
    processor = build_processor(vocab_words, s["image_size"], s["patch_size"])
    tok = processor.tokenizer
    config = build_config(len(tok), tok, **sizes)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    model.eval()
    return model, processor
