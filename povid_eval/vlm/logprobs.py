"""Summed log-probabilities of response tokens given an image and a prompt (what DPO compares).

For a prompt x (image tokens included) and a response y = (y_1 .. y_T) appended to it,

    log pi(y | x) = sum_{t=1..T} log softmax(logits(x, y_<t))[y_t]

Only response positions count: the prompt and the padding are masked out. Sequences are right-padded
(positions 0..L-1 for every real token, so no position ids are needed). Gradients flow when autograd is
on: call under ``torch.no_grad()`` for a frozen reference model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pack_right(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int):
    """Right-padded ``input_ids``, ``attention_mask`` and ``response_mask`` (True on response tokens)."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    rows = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(rows[i], dtype=torch.long)
        attention_mask[i, :n] = 1
        response_mask[i, len(p) : n] = True
    return input_ids, attention_mask, response_mask


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the masked tokens: logits [B, L, V] predict input_ids[:, 1:]; mask [B, L] -> [B]."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:]
    picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (picked * response_mask[:, 1:].to(picked.dtype)).sum(-1)


def response_logprobs(
    model,
    pixel_values: torch.Tensor,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    pad_id: int,
) -> torch.Tensor:
    """log pi(response | image, prompt) for token ids (prompt ids already expanded to the image tokens).

    ``pixel_values`` [B, 3, H, W] as the processor makes them; returns a [B] float32 tensor on the model's device.
    """
    input_ids, attention_mask, response_mask = pack_right(prompt_ids, response_ids, pad_id)
    device = pixel_values.device
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        pixel_values=pixel_values,
        use_cache=False,
    )
    return token_logprobs(out.logits, input_ids.to(device), response_mask.to(device))
