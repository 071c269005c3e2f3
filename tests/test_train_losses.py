"""DPO / IPO / POVID losses (formulas of povid_eval/train/dpo.py) and the diffusion-noise distortion."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from povid_eval.train import dpo
from povid_eval.vlm import noise


def test_dpo_loss_formula_and_stats():
    pc, pr = torch.tensor([-10.0, -12.0]), torch.tensor([-11.0, -9.0])
    rc, rr = torch.tensor([-10.5, -12.0]), torch.tensor([-10.0, -10.0])
    s = dpo.dpo_loss(pc, pr, rc, rr, beta=0.1)
    h = [(-10 + 10.5) - (-11 + 10), (-12 + 12) - (-9 + 10)]
    want = sum(-math.log(1 / (1 + math.exp(-0.1 * x))) for x in h) / 2
    assert s.loss.item() == pytest.approx(want, rel=1e-6)
    assert s.reward_chosen.item() == pytest.approx(0.1 * (0.5 + 0) / 2)
    assert s.accuracy.item() == 0.5 and s.margin.item() == pytest.approx(0.1 * sum(h) / 2)


def test_dpo_gradient_pushes_chosen_up():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    dpo.dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0])).loss.backward()
    assert pc.grad.item() == pytest.approx(-0.05) and pr.grad.item() == pytest.approx(0.05)  # beta * sigmoid(0)


def test_ipo_minimum_at_half_inverse_beta():
    beta = 0.1
    pc, rc, rr = torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0])
    s = dpo.ipo_loss(pc, torch.tensor([-1 / (2 * beta)]), rc, rr, beta)
    assert s.loss.item() == pytest.approx(0.0)


def test_povid_loss_is_the_mean_of_two_dpo_terms():
    args = [torch.randn(4) for _ in range(6)]
    s = dpo.povid_loss(*args, beta=0.1)
    text = dpo.dpo_loss(args[0], args[1], args[3], args[4], 0.1).loss
    noisy = dpo.dpo_loss(args[0], args[2], args[3], args[5], 0.1).loss
    assert s.loss.item() == pytest.approx(0.5 * text.item() + 0.5 * noisy.item())


def test_noise_schedule_matches_design():
    abar = noise.alphas_cumprod()[500]
    assert abar.sqrt().item() == pytest.approx(0.863, abs=5e-4)
    assert (1 - abar).sqrt().item() == pytest.approx(0.505, abs=5e-4)


def test_noisy_image_is_seeded_and_clamped():
    image = Image.fromarray(np.full((8, 8, 3), 250, dtype=np.uint8))
    a, b = noise.noisy_image(image, seed=1), noise.noisy_image(image, seed=1)
    assert a.tobytes() == b.tobytes() and a.tobytes() != noise.noisy_image(image, seed=2).tobytes()
    x = torch.full((1000,), 1.0)
    y = noise.add_diffusion_noise(x, seed=0)
    assert y.max().item() <= 1.0 and y.min().item() >= 0.0
    with pytest.raises(ValueError):
        noise.add_diffusion_noise(x, step=1000)
