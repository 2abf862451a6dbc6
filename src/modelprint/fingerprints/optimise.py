"""A projected-gradient optimiser of input images that fingerprint schemes share.

Schemes that craft inputs (boundary points, conferrable adversarial examples, saliency traces) differ in the loss;
the loop around it is the same: a step of an optimiser on the images, a projection back into the allowed set (an
L-inf or L2 ball around the start, always inside [0, 1]), and an optional early stop once every sample satisfies the
scheme's condition. The pieces are small functions so that a scheme overrides one without copying the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: loss(x) -> per-sample losses (N,); the optimiser descends their sum.
Loss = Callable[[torch.Tensor], torch.Tensor]


def project_linf(x: torch.Tensor, start: torch.Tensor, eps: float | None) -> torch.Tensor:
    """Clip ``x`` into the L-inf ball of radius ``eps`` around ``start`` (no ball when None), then into [0, 1]."""
    if eps is not None:
        x = torch.max(torch.min(x, start + eps), start - eps)
    return x.clamp(0.0, 1.0)


def project_l2(x: torch.Tensor, start: torch.Tensor, eps: float | None) -> torch.Tensor:
    """Scale ``x - start`` into the L2 ball of radius ``eps`` per sample (no ball when None), then clip into [0, 1]."""
    if eps is not None:
        delta = x - start
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        x = start + delta * (eps / norms).clamp(max=1.0)
    return x.clamp(0.0, 1.0)


PROJECTIONS = {"linf": project_linf, "l2": project_l2}


@dataclass(kw_only=True)
class ProjectedGradient:
    """Minimise a per-sample loss over input images inside a norm ball around the start and inside [0, 1].

    Args:
        steps: most optimiser steps.
        lr: step size: Adam's learning rate, or the signed step's size (``optimiser="sign"``, the PGD step).
        eps: radius of the ball around the start (None: only [0, 1] binds).
        norm: ``"linf"`` or ``"l2"``.
        optimiser: ``"adam"``, ``"sign"`` (x <- x - lr * sign(grad), as PGD) or ``"normalised"`` (x <- x - lr *
            grad / ||grad||_2 per sample, the steepest step of an L2 ball).

    The loop stops early when ``done(x)`` (given to :meth:`run`) holds for every sample; samples are optimised
    together, each by its own loss (the sum's gradient is per sample).
    """

    steps: int = 100
    lr: float = 0.01
    eps: float | None = None
    norm: str = "linf"
    optimiser: str = "adam"

    def __post_init__(self) -> None:
        if self.norm not in PROJECTIONS:
            raise ValueError(f"norm must be one of {', '.join(PROJECTIONS)}, got {self.norm!r}")
        if self.optimiser not in ("adam", "sign", "normalised"):
            raise ValueError(f"optimiser must be 'adam', 'sign' or 'normalised', got {self.optimiser!r}")

    def project(self, x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Into the allowed set (override for another constraint)."""
        return PROJECTIONS[self.norm](x, start, self.eps)

    def random_start(self, center: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A seeded random point of the allowed set around ``center``: uniform noise in the L-inf ball, or uniform
        cube noise scaled to half the L2 ball's radius (override for another start)."""
        if self.eps is None:
            return center.detach().clone()
        noise = torch.rand(center.shape, generator=generator).to(center.device) * 2 - 1
        if self.norm == "l2":
            noise = noise / noise.flatten(1).norm(dim=1).view(-1, *([1] * (center.dim() - 1))) * self.eps * 0.5
        else:
            noise = noise * self.eps
        return self.project(center + noise, center)

    def step(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        """One descent step on ``x`` in place, for the ``sign`` and ``normalised`` rules (override for another)."""
        if self.optimiser == "sign":
            x -= self.lr * grad.sign()
        else:
            x -= self.lr * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))

    def run(self, start: torch.Tensor, loss: Loss, *, center: torch.Tensor | None = None,
            done: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Optimise from ``start`` (N x C x H x W in [0, 1]).

        Args:
            start: the starting images.
            loss: per-sample losses of a batch of images.
            center: the centre of the ball (``start`` when None; e.g. the clean images after a random start).
            done: per-sample booleans; the loop ends once all are True (checked before every step).

        Returns:
            The optimised images, detached, inside the allowed set.
        """
        start = start.detach()
        center = start if center is None else center.detach()
        x = start.clone().requires_grad_(True)
        adam = torch.optim.Adam([x], lr=self.lr) if self.optimiser == "adam" else None
        for _ in range(self.steps):
            if done is not None:
                with torch.no_grad():
                    if bool(done(x).all()):
                        break
            value = loss(x).sum()
            grad, = torch.autograd.grad(value, x)
            with torch.no_grad():
                if adam is not None:
                    x.grad = grad
                    adam.step()
                else:
                    self.step(x, grad)
                x.copy_(self.project(x, center))
        return x.detach()
