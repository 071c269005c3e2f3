"""Vision-language models: load LLaVA checkpoints (+ PEFT adapters), generate in batches, score responses,
and build/pretrain the embedded tiny base. Knows nothing of benchmarks."""

from povid_eval.vlm.build import build_tiny_llava
from povid_eval.vlm.logprobs import response_logprobs, token_logprobs
from povid_eval.vlm.model import load_vlm, load_vlm_card, VLM
from povid_eval.vlm.tokenizer import detokenize, format_prompt, format_response

__all__ = ["VLM", "load_vlm", "load_vlm_card", "build_tiny_llava", "response_logprobs", "token_logprobs", "detokenize",
           "format_prompt", "format_response"]
