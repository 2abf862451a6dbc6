"""Detectors an adversary (or a careful API owner) may put in front of a model, used to measure stealth.

A fingerprint that such a detector flags would tell the thief a verification is under way. Both detectors set
their threshold from clean images at a stated false-positive rate, then report the share of given inputs flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError


def _quantile_threshold(clean_scores: torch.Tensor, fpr: float) -> float:
    """The conformal threshold: the ceil((n + 1)(1 - fpr))-th smallest clean score, so that a new clean input
    exchangeable with the calibration images is flagged with probability at most ``fpr``."""
    if not 0 < fpr < 1:
        raise InputError(f"false-positive rate must lie in (0, 1), got {fpr}")
    ordered = clean_scores.double().sort().values
    rank = math.ceil((len(ordered) + 1) * (1 - fpr))
    return float("inf") if rank > len(ordered) else float(ordered[rank - 1])


def fgsm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Plain FGSM (Goodfellow et al.): one signed-gradient step of size ``eps`` on the cross-entropy, clipped to
    [0, 1]. The obvious adversarial examples a detector must flag, for contrast with fingerprints."""
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def reduce_bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise [0, 1] pixels to ``bits`` bits (Xu et al.'s first squeezer)."""
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


def median_smooth(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median filter with a ``size`` x ``size`` window per channel, reflect-padded (Xu et al.'s second squeezer)."""
    pad_before, pad_after = (size - 1) // 2, size // 2
    padded = F.pad(x, (pad_before, pad_after, pad_before, pad_after), mode="reflect")
    patches = padded.unfold(2, size, 1).unfold(3, size, 1)  # N x C x H x W x size x size
    return patches.flatten(-2).median(dim=-1).values


@dataclass(kw_only=True)
class FeatureSqueezing:
    """Feature Squeezing (Xu et al., NDSS 2018): an input is adversarial when the model's prediction moves much under
    squeezing. The score is the largest L1 distance between the softmax on x and on each squeezed x (bit-depth
    reduction, median smoothing); the threshold is the (1 - fpr) quantile of clean scores. For a model that is not a
    classifier (``spec.task`` of a modelprint model: a regressor's value, an embedding) the distance is taken on its
    raw output, the prediction such a model makes.

    Args:
        bits: bit depth of the first squeezer (Xu et al.: 5 for CIFAR-10, 1 for MNIST).
        median: window of the median filter (Xu et al.: 2 for CIFAR-10, 2-3 for MNIST).
        fpr: false-positive rate on clean images that sets the threshold.
        batch_size: images per forward pass.
    """

    bits: int = 5
    median: int = 2
    fpr: float = 0.05
    batch_size: int = 256
    threshold: float | None = field(default=None, init=False)

    @torch.no_grad()
    def scores(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Per image: max over squeezers of ||softmax(x) - softmax(squeeze(x))||_1."""
        model.eval()
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(images), self.batch_size):
            x = images[start : start + self.batch_size].to(device)
            predict = (lambda v: model(v).softmax(dim=1)) if _is_classifier(model) else (lambda v: model(v).reshape(len(v), -1))
            p = predict(x)
            squeezed = [reduce_bit_depth(x, self.bits), median_smooth(x, self.median)]
            out.append(torch.stack([(predict(s) - p).abs().sum(dim=1) for s in squeezed]).amax(dim=0).cpu())
        return torch.cat(out)

    def fit(self, model: nn.Module, clean: torch.Tensor) -> "FeatureSqueezing":
        """Set the threshold from clean images."""
        self.threshold = _quantile_threshold(self.scores(model, clean), self.fpr)
        return self

    def flags(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Which images the detector flags (boolean per image)."""
        if self.threshold is None:
            raise InputError("fit the detector on clean images first")
        return self.scores(model, images) > self.threshold

    def detection_rate(self, model: nn.Module, images: torch.Tensor) -> float:
        return _share(self.flags(model, images))


def _is_classifier(model: nn.Module) -> bool:
    spec = getattr(model, "spec", None)
    return getattr(spec, "task", "classification") == "classification"


class SVDDNet(nn.Module):
    """The small LeNet-style encoder of Ruff et al. (no bias terms, so the hypersphere cannot collapse trivially)."""

    def __init__(self, channels: int = 3, rep_dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 5, padding=2, bias=False), nn.BatchNorm2d(16, affine=False), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32, affine=False), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2, bias=False), nn.BatchNorm2d(64, affine=False), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(64 * 16, rep_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@dataclass(kw_only=True)
class DeepSVDD:
    """One-class Deep SVDD (Ruff et al., ICML 2018): an encoder trained to map clean images close to a centre c; the
    score is the squared distance to c, the threshold the (1 - fpr) quantile of held-out clean scores.

    Args:
        rep_dim: dimension of the representation.
        epochs, lr, weight_decay, batch_size: training of the encoder (Adam).
        fpr: false-positive rate on held-out clean images that sets the threshold.
        holdout: share of the clean images kept out of training to set the threshold.
        seed: seeds the initialisation and batch order.
    """

    rep_dim: int = 32
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 128
    fpr: float = 0.05
    holdout: float = 0.2
    seed: int = 0
    threshold: float | None = field(default=None, init=False)
    net: SVDDNet | None = field(default=None, init=False, repr=False)
    center: torch.Tensor | None = field(default=None, init=False, repr=False)

    def fit(self, clean: torch.Tensor) -> "DeepSVDD":
        """Train on clean images (N x C x H x W in [0, 1]) and set the threshold on a held-out share of them."""
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(clean), generator=generator)
        n_hold = max(1, int(len(clean) * self.holdout))
        train, held = clean[order[n_hold:]], clean[order[:n_hold]]
        torch.manual_seed(self.seed)
        net = SVDDNet(clean.shape[1], self.rep_dim)
        with torch.no_grad():
            net.eval()
            center = net(train[: 1024]).mean(dim=0)
            # Ruff et al.: keep coordinates of c away from zero, where a zero-weight network would trivially map.
            center[(center.abs() < 0.01)] = 0.01 * torch.sign(center[(center.abs() < 0.01)] + 1e-12)
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        net.train()
        for _ in range(self.epochs):
            perm = torch.randperm(len(train), generator=generator)
            for start in range(0, len(train), self.batch_size):
                batch = train[perm[start : start + self.batch_size]]
                if len(batch) < 2:
                    continue
                loss = ((net(batch) - center) ** 2).sum(dim=1).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        net.eval()
        self.net, self.center = net, center
        self.threshold = _quantile_threshold(self.scores(held), self.fpr)
        return self

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Squared distance of each image's representation to the centre."""
        if self.net is None or self.center is None:
            raise InputError("fit the detector on clean images first")
        return torch.cat([((self.net(images[i : i + 512]) - self.center) ** 2).sum(dim=1) for i in range(0, len(images), 512)])

    def flags(self, images: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            raise InputError("fit the detector on clean images first")
        return self.scores(images) > self.threshold

    def detection_rate(self, images: torch.Tensor) -> float:
        return _share(self.flags(images))


def _share(flags: torch.Tensor) -> float:
    """The share of flagged images, counted exactly (a float32 mean makes 9 of 180 come out above 0.05)."""
    return int(flags.sum()) / max(len(flags), 1)
