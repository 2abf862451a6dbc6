"""What a deployed classifier does to its answers after the network: a keyed perturbation of the probability
distribution that keeps every top-1 label (the soft-label watermarks, :mod:`modelprint.watermarks.csp` and :mod:`modelprint.watermarks.usp`).

A post-processor is part of the model it is attached to (:attr:`modelprint.models.ImageModel.answers`): its
settings travel in the model file's spec (``ModelSpec.answers``) and its tensors among the weights, so a served or
reloaded marked model answers exactly as the owner's API does. A thief who takes the *weights* does not take the
post-processor (:func:`modelprint.models.without_answers`): only a thief who learns from the API's answers does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError


class AnswerPerturbation(nn.Module):
    """Adds to the probability of every class but the answer's top-1 a share ``a_j(x)`` in [0, amplitude] that a
    subclass computes from the image (:meth:`added`), and renormalises: ``q = (p + a) / (1 + sum_j a_j)``. A
    raised class's share is capped at ``margin`` times its gap to the top-1 probability, so no class reaches the
    top-1, which stays strictly first after float rounding. Returned as logits (``log q``).

    Args:
        amplitude: the largest probability a class is given (before renormalisation).
        margin: in (0, 1): how close to the top-1 a raised class may come, as a share of its gap.
    """

    def __init__(self, *, amplitude: float, margin: float) -> None:
        super().__init__()
        self.amplitude, self.margin = float(amplitude), float(margin)

    def extra_repr(self) -> str:
        return f"amplitude={self.amplitude}, margin={self.margin}"

    def added(self, images: torch.Tensor) -> torch.Tensor:
        """The share every class is given on every image (N x classes, in [0, amplitude], before the cap)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits.float(), dim=1)
        top = p.argmax(dim=1, keepdim=True)
        added = torch.minimum(self.added(images), self.margin * (p.gather(1, top) - p)).scatter(1, top, 0.0)  # >= 0: p_top is the largest
        log_q = ((p + added) / (1 + added.sum(dim=1, keepdim=True))).clamp_min(1e-30).log()
        # The top-1 stays strictly first after float rounding (and the API's softmax): near-ties of the host's own
        # probabilities are resolved as its softmax resolved them.
        others = log_q.scatter(1, top, float("-inf")).max(dim=1, keepdim=True).values
        return log_q.scatter(1, top, torch.maximum(log_q.gather(1, top), others + 1e-5))


class KeyedSignal(AnswerPerturbation):
    """CSP's perturbation: class j is given a periodic signal of the image, ``a_j(x) = amplitude * (1 + cos(2 pi
    f_j u_j(x) + phi_j)) / 2``, ``u_j(x) = (<w_j, x> - centre_j) / spread_j`` the image's standardised projection on
    a smooth, mirror-symmetric secret direction ``w_j`` (see :class:`AnswerPerturbation` for the cap).

    Args:
        classes: number of classes (one signal each).
        shape: (C, H, W) of the images.
        amplitude, margin: see :class:`AnswerPerturbation`.

    Buffers (filled by the scheme that draws them): ``directions`` (classes x C x H x W, unit norm), ``centre`` and
    ``spread`` (per class, of the projections of the owner's images), ``frequency`` (cycles per spread) and
    ``phase`` (radians).
    """

    def __init__(self, *, classes: int, shape: tuple[int, int, int], amplitude: float, margin: float) -> None:
        super().__init__(amplitude=amplitude, margin=margin)
        self.register_buffer("directions", torch.zeros(classes, *shape))
        for name in ("centre", "spread", "frequency", "phase"):
            self.register_buffer(name, torch.zeros(classes))

    def extra_repr(self) -> str:
        return f"classes={len(self.phase)}, {super().extra_repr()}"

    def angles(self, images: torch.Tensor) -> torch.Tensor:
        """``2 pi f_j u_j(x)`` for every image and class (N x classes), without the phase."""
        projected = images.flatten(1).float() @ self.directions.flatten(1).T
        return 2 * math.pi * self.frequency * (projected - self.centre) / self.spread

    def added(self, images: torch.Tensor) -> torch.Tensor:
        return self.amplitude * (1 + torch.cos(self.angles(images) + self.phase)) / 2


def pooled(images: torch.Tensor, grid: int) -> torch.Tensor:
    """The image averaged over a ``grid`` x ``grid`` lattice of cells and mirrored (an image and its left-right
    mirror give the same features): N x (C * grid * grid)."""
    cells = F.adaptive_avg_pool2d(images.float(), grid)
    return ((cells + cells.flip(-1)) / 2).flatten(1)


class LearnedSignal(AnswerPerturbation):
    """USP's perturbation: one learned map of the image for every class, ``t(x) = tanh(W v(x) + b)`` (``v`` the
    image's :func:`pooled` features, standardised), turned towards each class by a secret sign:
    ``a_j(x) = amplitude * (1 + s_j t_j(x)) / 2`` (see :class:`AnswerPerturbation` for the cap).

    Args:
        classes: number of classes.
        shape: (C, H, W) of the images.
        grid: the lattice of :func:`pooled`.
        amplitude, margin: see :class:`AnswerPerturbation`.

    Buffers (filled by the scheme that learns them): ``centre`` and ``spread`` of the features (C * grid * grid),
    ``weight`` (classes x features), ``bias`` and ``sign`` (per class, the signs +1 or -1).
    """

    def __init__(self, *, classes: int, shape: tuple[int, int, int], amplitude: float, margin: float, grid: int) -> None:
        super().__init__(amplitude=amplitude, margin=margin)
        if isinstance(grid, bool) or not isinstance(grid, int) or not 1 <= grid <= min(shape[1:]):
            raise InputError(f"answer post-processor: grid must be an integer from 1 to the image size {min(shape[1:])}, got {grid!r}")
        self.grid, features = grid, shape[0] * grid * grid
        for name in ("centre", "spread"):
            self.register_buffer(name, torch.zeros(features))
        self.register_buffer("weight", torch.zeros(classes, features))
        self.register_buffer("bias", torch.zeros(classes))
        self.register_buffer("sign", torch.ones(classes))

    def extra_repr(self) -> str:
        return f"classes={len(self.sign)}, grid={self.grid}, {super().extra_repr()}"

    def pattern(self, images: torch.Tensor) -> torch.Tensor:
        """``t(x)`` for every image (N x classes, in (-1, 1)), without the signs."""
        return torch.tanh(((pooled(images, self.grid) - self.centre) / self.spread) @ self.weight.T + self.bias)

    def added(self, images: torch.Tensor) -> torch.Tensor:
        return self.amplitude * (1 + self.sign * self.pattern(images)) / 2


#: Every post-processor by the ``kind`` a model spec names it with.
ANSWERS: dict[str, type[nn.Module]] = {"keyed_signal": KeyedSignal, "learned_signal": LearnedSignal}


def build_answers(settings: dict[str, Any], classes: int, shape: tuple[int, int, int]) -> nn.Module:
    """The post-processor a model spec's ``answers`` entry names (tensors zero until the weights are loaded).

    Raises:
        InputError: an unknown kind or settings it does not take.
    """
    if not isinstance(settings, dict) or settings.get("kind") not in ANSWERS:
        raise InputError(f"unknown answer post-processor {settings.get('kind') if isinstance(settings, dict) else settings!r}; known: {', '.join(ANSWERS)}")
    kwargs = {k: v for k, v in settings.items() if k != "kind"}
    for name in ("amplitude", "margin"):
        value = kwargs.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"answer post-processor: {name} must be a finite number, got {value!r}")
    if not 0 < kwargs["margin"] < 1 or kwargs["amplitude"] < 0:
        raise InputError(f"answer post-processor: margin must be in (0, 1) and amplitude >= 0, got {kwargs['margin']} and {kwargs['amplitude']}")
    try:
        return ANSWERS[settings["kind"]](classes=classes, shape=shape, **kwargs)
    except TypeError as exc:
        raise InputError(f"answer post-processor {settings['kind']}: {exc}") from None
