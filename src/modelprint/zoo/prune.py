"""Pruning a stolen model to hide it (and to shrink it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from ..data import ImageDataset
from ..errors import InputError
from .base import Transform


@dataclass(frozen=True, kw_only=True)
class WeightPrune(Transform):
    """Magnitude weight pruning (Han et al. 2015): in every conv and linear layer, the ``ratio`` of weights with the
    smallest magnitude are set to zero (layer by layer; biases and batch-norm parameters are kept).

    Args:
        ratio: fraction of each layer's weights removed, in [0, 1).
    """

    kind: ClassVar[str] = "weight_prune"
    ratio: float = 0.3

    def __post_init__(self) -> None:
        if not 0 <= self.ratio < 1:
            raise InputError(f"pruning ratio must lie in [0, 1), got {self.ratio}")

    def _transform(self, model, data: ImageDataset, seed, progress) -> None:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    prune_smallest_(module.weight, self.ratio)


def prune_smallest_(weight: torch.Tensor, ratio: float) -> None:
    """Zero the ``ratio`` of entries of ``weight`` with the smallest magnitude, in place."""
    k = int(round(ratio * weight.numel()))
    if k == 0:
        return
    threshold = weight.abs().flatten().kthvalue(k).values
    weight[weight.abs() <= threshold] = 0.0
