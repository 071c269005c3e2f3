"""Preference losses on summed response log-probabilities (torchtune style: small documented functions).

Inputs are per-pair summed log-probs of the response tokens (prompt masked): ``policy_*`` under the model
being trained, ``reference_*`` under the reference (POVID: the same network with its LoRA adapter disabled).

Sigmoid DPO (Rafailov et al., "Direct Preference Optimization", NeurIPS 2023):
    h      = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]
    L_DPO  = -log sigmoid(beta * h)
    rewards: r_w = beta [log pi(y_w|x) - log ref(y_w|x)],  r_l likewise; margin = r_w - r_l; accuracy = [margin > 0]

IPO (Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences", 2023):
    L_IPO  = (h - 1 / (2 beta))^2            (on summed log-probs, as the paper defines h; TRL's "ipo" divides
                                               each log-prob by the response length first)

POVID (Zhou et al., "Aligning Modalities in Vision Large Language Models via Preference Fine-tuning", 2024):
    L = 0.5 L_DPO(y_w, y_l^n) + 0.5 L_DPO(y_w, y_l^t)
    y_l^t: the text-dispreferred answer (injected hallucinations); y_l^n: the model's own answer under the
    noise-distorted image. The paper scores y_l^n as pi(y_l^n | x^n) (under the noisy image), the release
    with the clean-image logits: that choice is made where the log-probs are computed, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PreferenceStats:
    """Per-batch means of what the training loop logs."""

    loss: torch.Tensor
    reward_chosen: torch.Tensor
    reward_rejected: torch.Tensor
    margin: torch.Tensor
    accuracy: torch.Tensor


def log_ratio_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected) -> torch.Tensor:
    """h = [pi(y_w) - ref(y_w)] - [pi(y_l) - ref(y_l)] on log-probs, per pair."""
    return (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)


def _stats(losses, policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta) -> PreferenceStats:
    chosen = beta * (policy_chosen - reference_chosen).detach()
    rejected = beta * (policy_rejected - reference_rejected).detach()
    return PreferenceStats(
        loss=losses.mean(),
        reward_chosen=chosen.mean(),
        reward_rejected=rejected.mean(),
        margin=(chosen - rejected).mean(),
        accuracy=(chosen > rejected).float().mean(),
    )


def dpo_loss(
    policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float = 0.1
) -> PreferenceStats:
    """Sigmoid DPO (module docstring); ``-logsigmoid`` is the numerically stable -log sigmoid."""
    h = log_ratio_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return _stats(-F.logsigmoid(beta * h), policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)


def ipo_loss(
    policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float = 0.1
) -> PreferenceStats:
    """IPO (module docstring)."""
    h = log_ratio_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    return _stats((h - 1 / (2 * beta)) ** 2, policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)


def povid_loss(
    policy_chosen,
    policy_rejected_text,
    policy_rejected_noisy,
    reference_chosen,
    reference_rejected_text,
    reference_rejected_noisy,
    beta: float = 0.1,
    noisy_weight: float = 0.5,
) -> PreferenceStats:
    """POVID stage 2: (1 - w) L_DPO(y_w, y_l^t) + w L_DPO(y_w, y_l^n), w = 0.5 in the paper."""
    text = dpo_loss(policy_chosen, policy_rejected_text, reference_chosen, reference_rejected_text, beta)
    noisy = dpo_loss(policy_chosen, policy_rejected_noisy, reference_chosen, reference_rejected_noisy, beta)
    return combine(text, noisy, noisy_weight)


def combine(text: PreferenceStats, noisy: PreferenceStats, noisy_weight: float = 0.5) -> PreferenceStats:
    """(1 - w) * text + w * noisy, field by field: POVID's weighting of its two DPO terms."""
    w = noisy_weight
    return PreferenceStats(
        *((1 - w) * getattr(text, f) + w * getattr(noisy, f) for f in PreferenceStats.__dataclass_fields__)
    )
