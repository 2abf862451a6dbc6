"""The training losses of the three tasks: cross-entropy (classification), L1 in standardised units (regression) and
ArcFace on identity labels (similarity), as :func:`~modelprint.train.fit` takes them."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import ImageDataset
from .errors import InputError
from .models import ImageModel


class ArcFace(nn.Module):
    """The ArcFace loss (Deng et al. 2019): cross-entropy on ``scale * cos(theta + margin)`` for the true identity and
    ``scale * cos(theta)`` for the others, theta the angle between the embedding and the identity's weight vector.

    The identity weights belong to the loss, not to the model: a deployed face model returns embeddings only. They
    start from the model's mean normalised embedding of each identity ("imprinting"), so that a thief fine-tuning a
    stolen embedding network starts from a head that already fits it.

    Args:
        weights: identities x embedding dimension.
        scale, margin: s and m of the paper. The defaults suit small face sets: on facescrub20_32 (435 training
            images, MobileFaceNet width 32, lr 0.1) s = 16, m = 0.1 reached 0.662 held-out verification accuracy in
            30 epochs (0.737 in 60), where s = 32 with m = 0.1 or 0.5, and s = 16 with m = 0.2 or 0.3, stalled at
            0.54-0.57 in 30 epochs (the usual s = 64, m = 0.5 is meant for large face sets).
    """

    def __init__(self, weights: torch.Tensor, *, scale: float = 16.0, margin: float = 0.1) -> None:
        super().__init__()
        self.weight = nn.Parameter(weights.clone().float())
        self.scale, self.margin = scale, margin

    @classmethod
    @torch.no_grad()
    def imprinted(cls, model: nn.Module, data: ImageDataset, **settings: float) -> "ArcFace":
        """Identity weights = the mean normalised embedding of each identity's images under ``model``."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        embeddings = torch.cat([F.normalize(model(data.images[i : i + 256].to(device)).float(), dim=1).cpu() for i in range(0, len(data), 256)])
        model.train(was_training)
        labels = data.labels.long()
        sums = torch.zeros(int(labels.max()) + 1, embeddings.shape[1]).index_add_(0, labels, embeddings)
        return cls(F.normalize(sums + 1e-6 * torch.randn(sums.shape), dim=1), **settings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1)).clamp(-1 + 1e-7, 1 - 1e-7)
        true = F.one_hot(labels.long(), cosine.shape[1]).bool()
        with_margin = torch.cos(torch.acos(cosine) + self.margin)
        # Past theta = pi - margin, cos(theta + margin) would rise again and reward pointing away from every identity
        # (a collapse seen in training here); the usual fix continues the logit linearly below that point.
        limit = math.cos(math.pi - self.margin)
        with_margin = torch.where(cosine > limit, with_margin, cosine - math.sin(math.pi - self.margin) * self.margin)
        return F.cross_entropy(self.scale * torch.where(true, with_margin, cosine), labels.long())


def supervised_loss(
    task_name: str, label_smoothing: float = 0.0, *, model: nn.Module | None = None, data: ImageDataset | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of a task: cross-entropy for classification, L1 for regression (in the model's
    standardised output units, see ``ModelSpec.output_scale``), ArcFace on identity labels for similarity (needs the
    ``model`` and its training ``data`` to imprint the identity weights; :func:`fit` trains them too)."""
    if task_name == "classification":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)
    if task_name == "regression":
        scale = model.spec.output_scale if isinstance(model, ImageModel) else 1.0
        return lambda out, y: F.l1_loss(out.reshape(len(out), -1)[:, 0], y.float()) / scale
    if task_name == "similarity":
        if model is None or data is None:
            raise InputError("the similarity task's ArcFace loss needs the model and its training data")
        if data.labels.is_floating_point():
            raise InputError("the similarity task trains on identity labels (integers), got float labels")
        return ArcFace.imprinted(model, data)
    raise InputError(f"no supervised training loss for task {task_name!r}")
