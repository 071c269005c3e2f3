"""`povid-eval perf --generate`: the GPU generation benchmark's model has LLaVA-1.5-7B's size, and the same
code runs at toy size on CPU (numbers are not checked: speed targets live in benchmarks, not tests)."""

import pytest
import torch

from povid_eval import perf


def test_llava_7b_shape_has_7b_parameters():
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(perf.shape_config("llava-1.5-7b"))
    n = sum(p.numel() for p in model.parameters())
    assert 7.0e9 < n < 7.1e9  # LLaVA-1.5-7B: 7.06B (Vicuna-7B 6.74B + CLIP ViT-L/14 0.30B + projector 0.02B)
    assert model.config.image_seq_length == 576


def test_generation_speed_runs_on_cpu():
    torch.set_num_threads(1)
    out = perf.generation_speed("tiny", dtype="fp32", device="cpu", batch=2, prompt_tokens=5, new_tokens=4)
    assert out["prompt_tokens"] == 1 + 4 + 5 and out["new_tokens"] == 4 and out["peak_memory_gb"] is None
    assert out["tokens_per_s"] > 0


def test_memory_table_is_derived_on_the_meta_device():
    rows = perf.llava_7b_memory(batches=(1, 2), lora_r=4, prompt_tokens=5, response_tokens=7, shape="tiny")
    one, two = rows
    assert one["sequence"] == 4 + 5 + 2 * 7  # tiny's 4 image tokens, the prompt, y_w and y_l^t behind it
    assert two["saved_activations_gb"] >= one["saved_activations_gb"]  # grows with the batch
    assert one["weights_gb"] == two["weights_gb"] and one["checkpointed_total_gb"] <= one["total_gb"]
    full = perf.llava_7b_memory(batches=(1,))[0]  # the real shapes, still no weights
    assert full["weights_gb"] == pytest.approx(14.1, abs=0.2) and full["lora_and_adamw_gb"] > 4
