"""POVID's image distortion: the forward diffusion process applied to a clean image (Zhou et al. 2024;
the noise schedule of Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020):

    betas = sigmoid(linspace(-6, 6, T)) * (0.5e-2 - 1e-5) + 1e-5,  T = 1000
    abar  = cumprod(1 - betas)
    x_t   = sqrt(abar[t]) x0 + sqrt(1 - abar[t]) eps,  eps ~ N(0, I),  t = 500 -> 0.863 x0 + 0.505 eps

applied in [0, 1] pixel space before the processor's normalisation, then clamped to [0, 1] (the release
lets values wrap around when it converts back to 8 bits; clamping keeps the image what the formula says).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

T = 1000
DEFAULT_STEP = 500


def alphas_cumprod(steps: int = T) -> torch.Tensor:
    betas = torch.sigmoid(torch.linspace(-6, 6, steps, dtype=torch.float64)) * (0.5e-2 - 1e-5) + 1e-5
    return torch.cumprod(1 - betas, dim=0)


def add_diffusion_noise(pixels: torch.Tensor, step: int = DEFAULT_STEP, seed: int = 0) -> torch.Tensor:
    """x_t of the module docstring for pixels in [0, 1] (any shape), seeded, clamped to [0, 1]."""
    if not 0 <= step < T:
        raise ValueError(f"diffusion step must be in 0..{T - 1}, got {step}")
    abar = alphas_cumprod()[step]
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(pixels.shape, generator=generator, dtype=torch.float64)
    noisy = abar.sqrt() * pixels.to(torch.float64) + (1 - abar).sqrt() * eps
    return noisy.clamp(0, 1).to(pixels.dtype)


def noisy_image(image: Image.Image, step: int = DEFAULT_STEP, seed: int = 0) -> Image.Image:
    """The distorted copy of a PIL image (RGB, 8 bits)."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    y = add_diffusion_noise(x, step, seed)
    return Image.fromarray((y.numpy() * 255.0).round().astype(np.uint8), mode="RGB")
