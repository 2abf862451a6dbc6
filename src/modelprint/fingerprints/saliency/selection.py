"""Pool selection: of ``ceil(pool * n)`` fingerprints made, keep the ``n`` with the largest conferrability margin
-- the trace the owner's pirated copies inherit and its independent models do not (see ``pool``, ``select`` and
``select_anchor`` in :class:`.SaliencySettings`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ...tasks import Task
from ..base import FingerprintSet
from .readout import mean_values
from .settings import SaliencySettings


def select(settings: SaliencySettings, fingerprints: FingerprintSet, task: Task, model: torch.nn.Module,
           surrogates: Sequence[torch.nn.Module], references: Sequence[torch.nn.Module]) -> tuple[FingerprintSet, dict[str, float]]:
    """Keep the ``n`` samples with the largest margin, in candidate order.

    Returns:
        The kept set and the mean margins (white-box ``wb``, black-box ``bb``) of the pool and of the kept samples.
    """
    size = settings.batch_size
    reduce = "min" if settings.select_anchor == "worst_surrogate" else "mean"
    pirated = mean_values(list(surrogates) or [model], fingerprints, task, batch_size=size, reduce=reduce)
    if settings.select_anchor == "target_and_surrogates" and surrogates:
        pirated = tuple(torch.minimum(t, s) for t, s in zip(mean_values([model], fingerprints, task, batch_size=size), pirated))
    margins = [p - r for p, r in zip(pirated, mean_values(references, fingerprints, task, batch_size=size))]
    ranks = [m.argsort().argsort().float() for m in margins]  # 0 = smallest margin
    margin = {"white_box": margins[0], "black_box": margins[1], "both": (ranks[0] + ranks[1]) / 2}[settings.select]
    keep = margin.topk(settings.n).indices.sort().values
    tensors = {k: (v if k == "pattern" else v[keep]) for k, v in fingerprints.tensors.items()}
    stats = {
        f"selection_{mode}_margin_{part}": float(m[index].mean())
        for mode, m in zip(("wb", "bb"), margins)
        for part, index in (("pool", slice(None)), ("kept", keep))
    }
    return replace(fingerprints, tensors=tensors), stats
