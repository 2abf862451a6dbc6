"""The terms of the saliency scheme's objective (eq. 3-4 and modelprint's additions), as functions of tensors.

L_sam (eq. 3) pulls the Grad-CAM saliency into the region P; the black-box value (eq. 6 and its variants) is how
far masking P moves F_c; the helper term adds the owner's references (uniqueness penalty, beta), surrogates
(robustness reward, gamma) and the occlusion term.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...gradcam import GradCAM, normalise_maps
from ...tasks import Task
from .settings import SaliencySettings


def pattern_mask(cells: Sequence[tuple[int, int]], grid: tuple[int, int]) -> torch.Tensor:
    """P as a float mask on a saliency grid of shape ``grid``.

    Raises:
        InputError: a cell outside the grid, or cells that cover it all.
    """
    h, w = grid
    mask = torch.zeros(h, w)
    for r, c in cells:
        if not (-h <= r < h and -w <= c < w):
            raise InputError(f"pattern cell ({r}, {c}) lies outside the {h}x{w} saliency grid")
        mask[r, c] = 1.0
    if mask.sum() == mask.numel():
        raise InputError("the pattern covers the whole saliency grid: P needs a background to stand out from")
    return mask


def input_mask(pattern: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """P upsampled to the input size (nearest): 1 on the pixels that black-box masking replaces."""
    return F.interpolate(pattern[None, None].float(), size=size, mode="nearest")[0, 0]


def masked(x: torch.Tensor, pattern: torch.Tensor, fill: float) -> torch.Tensor:
    """``x`` with P's region replaced by ``fill`` (black-box masking)."""
    mask = input_mask(pattern, tuple(x.shape[-2:]))
    return x * (1 - mask) + fill * mask


def sam_loss(maps: torch.Tensor, pattern: torch.Tensor, norm: str) -> torch.Tensor:
    """Eq. 3 per sample: mean saliency outside P minus mean saliency inside P, on maps normalised by ``norm``."""
    s = normalise_maps(maps, norm)
    inside = (s * pattern).sum(dim=(1, 2)) / pattern.sum()
    outside = (s * (1 - pattern)).sum(dim=(1, 2)) / (1 - pattern).sum()
    return outside - inside


def inside_share(maps: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Per sample: mean of the max-normalised map on P (the left side of eq. 5), maps resampled to P's grid."""
    if maps.shape[1:] != pattern.shape:
        maps = F.interpolate(maps[:, None], size=tuple(pattern.shape), mode="bilinear", align_corners=False)[:, 0]
    return (normalise_maps(maps, "max") * pattern).sum(dim=(1, 2)) / pattern.sum()


def bb_change(how: str, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """How far masking moved F_c: on the score itself, or on its log (``"log"``)."""
    if how == "log":
        return (after.clamp_min(1e-12).log() - before.clamp_min(1e-12).log()).abs()
    return (after - before).abs()


def occlusion_value(settings: SaliencySettings, model: torch.nn.Module, task: Task, x: torch.Tensor, outputs: torch.Tensor,
                    cond: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """The black-box value (``bb_score``) of the current samples ``x`` (whose outputs are ``outputs``), as a
    differentiable function of the input."""
    before = task.score_deployed(task.deployed(outputs), cond)
    after = task.score_deployed(task.deployed(model(masked(x, pattern, settings.fill))), cond)
    return bb_change(settings.bb_score, before, after)


def helper_loss(settings: SaliencySettings, helpers: Sequence[tuple[str, GradCAM]], task: Task, x: torch.Tensor,
                cond: torch.Tensor, score_fn, pattern: torch.Tensor) -> torch.Tensor:
    """Per sample: beta x the references' mean P-saliency, plus gamma x the surrogates' L_sam, minus (occlusion) the
    surrogates' black-box value, plus (occlusion) the references' mean black-box value. The surrogates' terms are
    combined by ``surrogate_weight``: their mean, or per sample the largest (the surrogate that carries the trace
    least).

    Args:
        helpers: (role, Grad-CAM of the helper model) with role ``"reference"`` or ``"surrogate"``.
    """
    total = torch.zeros(len(x), device=x.device)
    for role in ("reference", "surrogate"):
        terms = [_helper_term(settings, role, helper, task, x, cond, score_fn, pattern) for r, helper in helpers if r == role]
        if terms and role == "surrogate" and settings.surrogate_weight == "worst":
            total = total + torch.stack(terms).max(dim=0).values
            continue
        for term in terms:
            total = total + term / len(terms)
    return total


def _helper_term(settings: SaliencySettings, role: str, helper: GradCAM, task: Task, x: torch.Tensor, cond: torch.Tensor,
                 score_fn, pattern: torch.Tensor) -> torch.Tensor:
    """One helper model's term of :func:`helper_loss`, per sample."""
    maps, outputs = helper(x, score_fn, create_graph=True)
    if role == "reference":
        term = settings.beta * inside_share(maps, pattern)
    else:
        if maps.shape[1:] != pattern.shape:
            maps = F.interpolate(maps[:, None], size=tuple(pattern.shape), mode="bilinear", align_corners=False)[:, 0]
        term = settings.gamma * sam_loss(maps, pattern, settings.sam_norm)
    if settings.occlusion > 0:
        sign = 1.0 if role == "reference" else -1.0
        term = term + sign * settings.occlusion * occlusion_value(settings, helper.model, task, x, outputs, cond, pattern)
    return term
