"""Summed log-probabilities of response tokens given an image and a prompt (what DPO compares).

For a prompt x (image tokens included) and a response y = (y_1 .. y_T) appended to it,

    log pi(y | x) = sum_{t=1..T} log softmax(logits(x, y_<t))[y_t]

Only response positions count: the prompt and the padding are masked out. Sequences are right-padded
(positions 0..L-1 for every real token, so no position ids are needed). Gradients flow when autograd is
on: call under ``torch.no_grad()`` for a frozen reference model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SharedPack:
    """Rows that share a prefix packed behind one copy of it (pack_shared): ``input_ids``, ``position_ids``
    [G, L], ``allowed`` [G, L, L] (query i may attend key j), ``groups`` (the rows of each packed sequence) and,
    per scored response token, its ``token_row``, ``token_group``, ``token_pred`` (the position whose logits
    predict it) and ``token_target`` (its id)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    groups: list[list[int]]
    token_row: torch.Tensor
    token_group: torch.Tensor
    token_pred: torch.Tensor
    token_target: torch.Tensor

    @property
    def first_pred(self) -> int:
        """The first position whose logits are needed (every earlier position is prefix only)."""
        return int(self.token_pred.min()) if len(self.token_pred) else self.input_ids.shape[1] - 1

    def additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """[G, 1, L, L]: 0 where ``allowed``, the dtype's minimum elsewhere (what eager and SDPA attention add)."""
        mask = torch.zeros(self.allowed.shape, dtype=dtype)
        return mask.masked_fill(~self.allowed, torch.finfo(dtype).min).unsqueeze(1)


def pack_shared(
    prefix_keys: Sequence, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int
) -> SharedPack:
    """Prefix sharing (Wang & Hegde 2024, "Accelerating Direct Preference Optimization with Prefix Sharing"):
    rows with the same ``prefix_keys`` entry (the same image and prompt ids) become one sequence

        [P, R_1, R_2, ..., R_m]    positions 0..p-1, then p..p+|R_j|-1 for every R_j

    where every R_j attends to P and causally to itself, never to another R_k, so each row's log-probs are those
    of P + R_j alone. The first token of every R_j is predicted by P's last position. Sequences are
    right-padded to the longest; a padding position attends only to itself."""
    if not len(prefix_keys) == len(prompt_ids) == len(response_ids):
        raise ValueError("prefix_keys, prompt_ids and response_ids must have one entry per row")
    by_key: dict = {}
    for i, key in enumerate(prefix_keys):
        by_key.setdefault(key, []).append(i)
    groups = list(by_key.values())
    for rows in groups:
        if any(tuple(prompt_ids[i]) != tuple(prompt_ids[rows[0]]) for i in rows):
            raise ValueError("rows that share a prefix key must have the same prompt ids")
    lengths = [len(prompt_ids[rows[0]]) + sum(len(response_ids[i]) for i in rows) for rows in groups]
    width = max(lengths)
    input_ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(groups), width), dtype=torch.long)
    segment = torch.full((len(groups), width), -2, dtype=torch.long)  # -1: prefix, j: response j, -2: padding
    token_row, token_group, token_pred, token_target = [], [], [], []
    for g, rows in enumerate(groups):
        prefix = list(prompt_ids[rows[0]])
        p = len(prefix)
        input_ids[g, :p] = torch.tensor(prefix, dtype=torch.long)
        position_ids[g, :p] = torch.arange(p)
        segment[g, :p] = -1
        start = p
        for j, i in enumerate(rows):
            r = list(response_ids[i])
            end = start + len(r)
            input_ids[g, start:end] = torch.tensor(r, dtype=torch.long)
            position_ids[g, start:end] = torch.arange(p, p + len(r))
            segment[g, start:end] = j
            token_row += [i] * len(r)
            token_group += [g] * len(r)
            token_pred += ([p - 1] + list(range(start, end - 1))) if r else []
            token_target += r
            start = end
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (query != -2) & (key != -2) & ((key == -1) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself (no empty softmax row)
    flat = [torch.tensor(xs, dtype=torch.long) for xs in (token_row, token_group, token_pred, token_target)]
    return SharedPack(input_ids, position_ids, allowed, groups, *flat)


def shared_logprobs(logits: torch.Tensor, pack: SharedPack, n_rows: int, offset: int = 0) -> torch.Tensor:
    """Summed log-probs per row [n_rows] from the packed sequences' logits [G, L - offset, V] (``offset``: the
    positions left out of the logits, e.g. with ``logits_to_keep``)."""
    device = logits.device
    picked = logits[pack.token_group.to(device), pack.token_pred.to(device) - offset].float()
    logp = torch.log_softmax(picked, dim=-1).gather(-1, pack.token_target.to(device).unsqueeze(-1)).squeeze(-1)
    return torch.zeros(n_rows, dtype=logp.dtype, device=device).index_add(0, pack.token_row.to(device), logp)
