"""Figures computed from tensors and scores: image quality now; robustness, uniqueness and verdicts build on it."""

from __future__ import annotations

import torch


def psnr(reference: torch.Tensor, image: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (N x C x H x W, values in [0, peak]); identical images give inf."""
    mse = ((reference.float() - image.float()) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(peak**2 / mse)
