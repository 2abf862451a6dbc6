"""What marking cost the host, for every watermark scheme: the test metric's change, how far the marked model's
answers and features moved (KL divergence, top-1 agreement, penultimate distance), how far its weights moved (the
total weight change and the last layer's, which Hua and Teoh show to be poor measures of fidelity on their own), and
a 2-D picture of where the decision boundary moved (:func:`projection`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..data import DataSplits
from ..models import ImageModel
from ..train import metric_of
from ..zoo.finetune import last_layer
from .base import penultimate

#: Test images drawn in the 2-D picture (the first ones of the test split).
PICTURE_POINTS = 1000


@dataclass(frozen=True)
class TestReading:
    """A model's test metric, outputs and penultimate features on the test split (one forward pass)."""

    metric: float
    outputs: torch.Tensor
    features: torch.Tensor


@torch.no_grad()
def read_test(model: ImageModel, data: DataSplits) -> TestReading:
    """:class:`TestReading` of ``model`` on ``data.test``."""
    outputs, features = [], []
    with penultimate(model.eval()) as grab:
        for start in range(0, len(data.test), 512):
            outputs.append(model(data.test.images[start : start + 512].to(model.mean.device)).float().cpu())
            features.append(grab.features.float().cpu())  # type: ignore[union-attr]
    joined = torch.cat(outputs)
    return TestReading(metric_of(joined, data.test, model.spec.task), joined, torch.cat(features))


@torch.no_grad()
def weight_change(host: torch.nn.Module, marked: torch.nn.Module) -> dict[str, float]:
    """The total weight change (the paper's TWL: the squared L2 distance over every parameter the two models share
    by name and shape) and the last layer's (its weights and bias)."""
    theirs = dict(host.named_parameters())
    total = sum(float((p.detach().cpu() - theirs[n].detach().cpu()).pow(2).sum()) for n, p in marked.named_parameters()
                if n in theirs and theirs[n].shape == p.shape)
    head_host, head_marked = last_layer(host), last_layer(marked)
    pairs = zip(head_host.parameters(recurse=False), head_marked.parameters(recurse=False))
    head = sum(float((a.detach().cpu() - b.detach().cpu()).pow(2).sum()) for a, b in pairs if a.shape == b.shape)
    return {"total_weight_change": total, "last_layer_change": head}


def fidelity(host: TestReading, marked: TestReading, task: str, *, models: tuple[torch.nn.Module, torch.nn.Module] | None = None) -> dict[str, float]:
    """What marking cost the host on the test split (:func:`read_test` of each).

    Returns:
        ``test_metric_change`` (marked - host) and ``host_test_metric``; for classifiers ``kl_host_to_marked`` (the
        mean KL divergence from the host's softmax to the marked model's) and ``top1_agreement`` (the share of test
        images both classify alike); ``penultimate_distance`` (the mean distance between the two models' penultimate
        features, relative to the host's mean feature norm); with ``models`` (host, marked) also
        :func:`weight_change`'s figures.
    """
    figures = {"test_metric_change": marked.metric - host.metric, "host_test_metric": host.metric}
    if task == "classification":
        figures["kl_host_to_marked"] = float(F.kl_div(F.log_softmax(marked.outputs, dim=1), F.log_softmax(host.outputs, dim=1), log_target=True, reduction="batchmean"))
        figures["top1_agreement"] = float((marked.outputs.argmax(dim=1) == host.outputs.argmax(dim=1)).float().mean())
    distance = (marked.features - host.features).norm(dim=1).mean() / host.features.norm(dim=1).mean().clamp_min(1e-12)
    figures["penultimate_distance"] = float(distance)
    if models is not None:
        figures.update(weight_change(*models))
    return figures


def projection(host: TestReading, marked: TestReading, *, points: int = PICTURE_POINTS) -> dict[str, Any]:
    """The host's and the marked model's test images in one 2-D projection of the host's penultimate features: the
    host's two principal axes (fitted on the host's features alone) applied to both models' features, with each
    model's predicted class, for the first ``points`` test images (plain lists: JSON for the report).

    A watermark that keeps the host's features leaves the two clouds alike; one that moves the decision boundary
    moves points across it (their colours change) or moves the clouds.
    """
    a, b = host.features[:points].double(), marked.features[:points].double()
    centre = a.mean(dim=0)
    _, _, v = torch.linalg.svd(a - centre, full_matrices=False)
    axes = v[:2].T if v.shape[0] >= 2 else torch.cat([v.T, torch.zeros(len(centre), 1, dtype=v.dtype)], dim=1)
    return {
        "host": ((a - centre) @ axes).float().tolist(),
        "marked": ((b - centre) @ axes).float().tolist(),
        "host_class": host.outputs[:points].argmax(dim=1).tolist() if host.outputs.ndim == 2 else [],
        "marked_class": marked.outputs[:points].argmax(dim=1).tolist() if marked.outputs.ndim == 2 else [],
    }
