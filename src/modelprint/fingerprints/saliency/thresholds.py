"""The thresholds t_wb and t_bb: on the target the way the paper sets them, or against the owner's calibration
models (one midway threshold, or one per sample; see ``wb_threshold``, ``bb_threshold`` and ``threshold_anchor`` in
:class:`.SaliencySettings`). Never on the evaluation's negatives."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ...access import WhiteBox
from ...tasks import Task
from ..base import FingerprintSet
from .configurations import CALIBRATED
from .readout import black_box_values, mean_values, white_box_values
from .settings import SaliencySettings


def derive_thresholds(settings: SaliencySettings, model: torch.nn.Module, fingerprints: FingerprintSet, task: Task,
                      calibration: Sequence[torch.nn.Module], anchors: Sequence[torch.nn.Module] = ()) -> tuple[dict, dict, dict]:
    """t_wb and t_bb of a set.

    Args:
        settings: the rules.
        model: the target.
        fingerprints: the set (its samples and originals).
        task: the task adapter.
        calibration: the owner's calibration models (for the ``"calibration"`` and ``"per_sample"`` rules).
        anchors: models whose mean values replace the target's on the pirated side of calibrated thresholds
            (``threshold_anchor="surrogates"``).

    Returns:
        The thresholds, the per-sample ones as tensors (``t_white_box``/``t_black_box``, only for ``"per_sample"``;
        the thresholds then hold their mean) and statistics.
    """
    size = settings.batch_size
    access = WhiteBox(model)
    originals = replace(fingerprints, tensors={**fingerprints.tensors, "samples": fingerprints.tensors["originals"]})
    wb_fp = white_box_values(access, fingerprints, batch_size=size)
    wb_orig = white_box_values(access, originals, batch_size=size)
    bb_fp = black_box_values(access.black_box(task), fingerprints)
    bb_orig = black_box_values(access.black_box(task), originals)
    stats = {
        "target_wb_value_originals": float(wb_orig.mean()),
        "target_wb_value_fingerprints": float(wb_fp.mean()),
        "target_bb_change_originals": float(bb_orig.mean()),
        "target_bb_change_fingerprints": float(bb_fp.mean()),
    }
    thresholds = {
        "white_box": float(torch.cat([wb_orig, wb_fp]).mean()),
        "black_box": float(bb_orig.mean() if settings.bb_threshold == "originals" else torch.cat([bb_orig, bb_fp]).mean()),
    }
    per_sample: dict[str, torch.Tensor] = {}
    if calibration:
        # What an innocent model shows on each fingerprint (the calibration models' mean), and what a pirated one
        # shows: the target's values, or the surrogates' mean when the thresholds are anchored on them.
        wb_null, bb_null = mean_values(calibration, fingerprints, task, batch_size=size)
        stats.update(calibration_wb_value_fingerprints=float(wb_null.mean()), calibration_bb_change_fingerprints=float(bb_null.mean()))
        if anchors:
            wb_fp, bb_fp = mean_values(anchors, fingerprints, task, batch_size=size)
            stats.update(anchor_wb_value_fingerprints=float(wb_fp.mean()), anchor_bb_change_fingerprints=float(bb_fp.mean()))
        for mode, rule, pirated, null in (("white_box", settings.wb_threshold, wb_fp, wb_null), ("black_box", settings.bb_threshold, bb_fp, bb_null)):
            midway = (pirated + null) / 2
            if rule in CALIBRATED:
                thresholds[mode] = float(midway.mean())
            if rule == "per_sample":
                per_sample[f"t_{mode}"] = midway.cpu()
    return thresholds, per_sample, stats
