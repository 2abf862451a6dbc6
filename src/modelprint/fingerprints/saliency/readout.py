"""What verification reads from a suspect: the saliency on P (eq. 5) and how far masking P moves F_c (eq. 6).

Generation reads the same values on the target and the owner's helper models (pool selection, thresholds), so the
numbers a set is made with are the numbers it is verified with.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
import torch.nn.functional as F

from ...access import BlackBox, WhiteBox
from ...gradcam import GradCAM, find_cam_layer, normalise_maps
from ...models import ImageModel, device_of
from ...tasks import Task
from ..base import FingerprintSet, check_input_shape
from .configurations import MODE_CODE
from .objective import bb_change, input_mask


def saliency_maps(access: WhiteBox, fingerprints: FingerprintSet, *, batch_size: int = 100) -> torch.Tensor:
    """The suspect's Grad-CAM maps that white-box verification reads, one per sample of ``fingerprints``.

    Args:
        access: the suspect, white-box.
        fingerprints: the samples to read (all rows of the set given; see :func:`rows_read_by` for one mode's rows).
        batch_size: samples per forward pass.

    Returns:
        Max-normalised maps, samples x the pattern's grid (a suspect with another grid is resampled to it), on the CPU.
    """
    model, task, config = access.model, fingerprints.task_adapter(), fingerprints.config
    device = device_of(model)
    samples = fingerprints.samples
    check_input_shape(model, samples)
    if isinstance(model, ImageModel) and model.spec.num_outputs > 0:
        check_outputs(task, (model.spec.num_outputs,), fingerprints, "the suspect model")
    grid = tuple(fingerprints.tensors["pattern"].shape)
    layer = access.layer or suspect_layer(model, config.get("layer"), samples[:1].to(device), min(grid))
    maps = []
    with GradCAM(model, layer) as cam:
        for start in range(0, len(samples), batch_size):
            x = samples[start : start + batch_size].to(device)
            rows = slice(start, start + len(x))
            cond = task.condition_on(model, fingerprints.labels[rows], rows_of(fingerprints.tensors.get("pairs"), rows))
            direction = rows_of(fingerprints.tensors.get("direction"), rows)
            batch, _ = cam(x, cam_score(task, cond, logit=bool(config.get("cam_logit", True)), direction=direction))
            if batch.shape[1:] != grid:
                # A suspect of another architecture may have another grid: compare on the pattern's grid.
                batch = F.interpolate(batch[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
            maps.append(normalise_maps(batch.detach(), "max").cpu())
    return torch.cat(maps)


def cam_score(task: Task, condition: torch.Tensor, *, logit: bool, direction: torch.Tensor | None = None):
    """F_c as Grad-CAM reads it: the task's score of the outputs, times each sample's ``direction`` (+1 or -1;
    see ``cam_direction``) when the set has one."""
    if direction is None:
        return lambda outputs: task.score(outputs, condition, logit=logit)
    return lambda outputs: task.score(outputs, condition, logit=logit) * direction.to(outputs.device)


def white_box_values(access: WhiteBox, fingerprints: FingerprintSet, *, batch_size: int = 100) -> torch.Tensor:
    """Per sample: mean of the max-normalised saliency map on P (the left side of eq. 5)."""
    pattern = fingerprints.tensors["pattern"].cpu()
    return (saliency_maps(access, fingerprints, batch_size=batch_size) * pattern).sum(dim=(1, 2)) / pattern.sum()


def black_box_values(box: BlackBox, fingerprints: FingerprintSet) -> torch.Tensor:
    """Per sample: the left side of eq. 6, |F_c(x_mask) - F_c(x)|, or its ``bb_score`` variant, from 2 queries per
    sample (4 for ``"diff"``, which also sends the original and its masked copy; N more for pair tasks)."""
    task = fingerprints.task_adapter()
    how = fingerprints.config.get("bb_score", "abs")
    samples = fingerprints.samples
    mask = input_mask(fingerprints.tensors["pattern"], tuple(samples.shape[-2:]))
    fill = float(fingerprints.config.get("fill", 0.0))
    sent = [samples, fingerprints.tensors["originals"]] if how == "diff" else [samples]
    sent = [part for x in sent for part in (x, x * (1 - mask) + fill * mask)]
    pair_outputs = box.predict(fingerprints.tensors["pairs"]) if task.needs_pairs else None
    outputs = box.predict(torch.cat(sent))
    check_outputs(task, tuple(outputs.shape[1:]), fingerprints, box.describe())  # one line, not an index error
    cond = task.condition_from(fingerprints.labels, pair_outputs)
    n = len(samples)
    scores = [task.score_deployed(outputs[i * n : (i + 1) * n], cond) for i in range(len(sent))]
    values = bb_change(how, scores[0], scores[1])
    if how == "diff":
        values = values - bb_change("abs", scores[2], scores[3])
    return values


def mean_values(models: Sequence[torch.nn.Module], fingerprints: FingerprintSet, task: Task, *,
                batch_size: int = 100, reduce: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the models' mean (``reduce="min"``: smallest) white-box value and black-box value on the
    fingerprints."""
    accesses = [WhiteBox(m) for m in models]
    white = torch.stack([white_box_values(a, fingerprints, batch_size=batch_size) for a in accesses])
    black = torch.stack([black_box_values(a.black_box(task), fingerprints) for a in accesses])
    if reduce == "min":
        return white.min(dim=0).values, black.min(dim=0).values
    return white.mean(dim=0), black.mean(dim=0)


def rows_read_by(fingerprints: FingerprintSet, mode: str) -> FingerprintSet:
    """The samples that ``mode``'s verification reads: all of them, or one group of a set made with
    ``black_box_settings`` (whose ``mode`` tensor marks each row with :data:`MODE_CODE`)."""
    if "mode" not in fingerprints.tensors:
        return fingerprints
    keep = fingerprints.tensors["mode"] == MODE_CODE[mode]
    return replace(fingerprints, tensors={k: (v if k == "pattern" else v[keep]) for k, v in fingerprints.tensors.items()})


def check_outputs(task: Task, shape: tuple[int, ...], fingerprints: FingerprintSet, who: str) -> None:
    """One clear line when a suspect's outputs (``shape`` per image) cannot be read with this set, e.g. 3 classes for 10."""
    arch_kwargs = fingerprints.target.get("arch_kwargs") if isinstance(fingerprints.target, dict) else None
    expected = arch_kwargs.get("num_outputs") if isinstance(arch_kwargs, dict) else None
    expected = expected if isinstance(expected, int) and not isinstance(expected, bool) and expected > 0 else None
    task.check_output_shape(shape, fingerprints.labels, num_outputs=expected, who=who)


def rows_of(tensor: torch.Tensor | None, index) -> torch.Tensor | None:
    """``tensor[index]``, or None for a tensor a set does not have (pair images outside similarity)."""
    return None if tensor is None else tensor[index]


def suspect_layer(model: torch.nn.Module, stored: str | None, example: torch.Tensor, min_side: int = 1) -> str:
    """The Grad-CAM layer of a suspect: the target's layer name when the suspect has it, else its own declared or
    last spatial layer, or (when that map is narrower than ``min_side``, the side of the pattern's grid) the last
    one at least that wide: a coarser map resampled to the pattern's grid spreads one cell over P and its
    neighbours, which lets independent models of such an architecture light P up (docs/ablation.md)."""
    if stored and stored in dict(model.named_modules()):
        return stored
    return find_cam_layer(model, example, min_side=min_side)
