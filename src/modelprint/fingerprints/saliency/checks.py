"""What a saliency-map fingerprint set must hold for its verification to mean anything.

Beyond the generic checks (:mod:`..checks`): the region P (``pattern``), the original images, the pair images of a
similarity set, the ``mode`` codes of a set made with ``black_box_settings``, the per-sample thresholds on the rows
each mode reads, and thresholds within the range of the values they are compared with (a white-box value is a mean
of max-normalised saliency, in [0, 1]; a black-box change ``abs``/``log`` is >= 0). A threshold outside that range
would make every model match, or none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch

from ...errors import IntegrityError
from ..checks import Layout, check_finite, check_images, check_number, require

if TYPE_CHECKING:
    from ..base import FingerprintSet

#: The tensors a saliency set may hold.
KNOWN_TENSORS = ("samples", "labels", "originals", "pattern", "pairs", "mode", "direction", "t_white_box", "t_black_box")


def check_saliency_layout(layout: Layout, n: int, task: str) -> None:
    """The tensors verification reads beyond samples and labels: names, dtypes and shapes.

    Args:
        layout: tensor name -> (dtype, shape).
        n: the number of samples.
        task: the set's task name.
    """
    unknown = sorted(set(layout) - set(KNOWN_TENSORS))
    if unknown:
        raise IntegrityError(f"the set holds tensors no saliency set has: {', '.join(unknown)}")
    image = layout["samples"][1]
    require(layout, "originals", kind="float", shape=image, why="the original images, read by verification and thresholds")
    grid = require(layout, "pattern", kind="float", ndim=2, why="the region P on the saliency grid")
    if min(grid) < 1:
        raise IntegrityError(f"tensor 'pattern' must be a grid of at least 1x1, got shape {list(grid)}")
    if task == "similarity":
        require(layout, "pairs", kind="float", shape=image, why="the pair images a similarity set compares with")
    elif "pairs" in layout:
        raise IntegrityError(f"the set holds 'pairs', which only a similarity set reads (its task is {task!r})")
    if "mode" in layout:
        require(layout, "mode", kind="integer", ndim=1, rows=n)
    for name in ("direction", "t_white_box", "t_black_box"):
        if name in layout:
            require(layout, name, kind="float", ndim=1, rows=n)


def check_saliency_values(fingerprints: "FingerprintSet", mode_code: Mapping[str, int]) -> None:
    """The values of a saliency set: images, P, mode codes, per-sample and fixed thresholds, sample count.

    Args:
        fingerprints: the set (its layout already checked).
        mode_code: verification mode -> the code the ``mode`` tensor marks its rows with.
    """
    tensors, config = fingerprints.tensors, fingerprints.config
    check_images(tensors["originals"], "originals")
    if "pairs" in tensors:
        check_images(tensors["pairs"], "pairs")
    if "direction" in tensors and not bool(tensors["direction"].abs().eq(1).all()):
        raise IntegrityError("tensor 'direction' must hold only +1 and -1 (which way Grad-CAM reads each sample)")
    pattern = tensors["pattern"]
    check_finite(pattern, "pattern")
    if not bool(((pattern == 0) | (pattern == 1)).all()):
        raise IntegrityError("tensor 'pattern' must hold only 0 and 1 (the cells of P)")
    cells = int(pattern.sum())
    if cells == 0 or cells == pattern.numel():
        raise IntegrityError(f"tensor 'pattern' marks {cells} of {pattern.numel()} cells; P needs at least one cell and a background")
    rows = _rows_by_mode(tensors, mode_code)
    groups = 2 if config.get("black_box_settings") else 1
    expected = config.get("n")
    if isinstance(expected, int) and len(fingerprints) != groups * expected:
        raise IntegrityError(f"the set holds {len(fingerprints)} samples, its settings say {groups} x n = {groups * expected}")
    if groups == 2 and "mode" not in tensors:
        raise IntegrityError("a set made with black_box_settings needs its 'mode' tensor (which rows each mode reads)")
    bb_score = config.get("bb_score", "abs")
    if bb_score == "log" and fingerprints.task.get("name") != "classification":
        raise IntegrityError(f"bb_score 'log' reads a probability; the set's task is {fingerprints.task.get('name')}")
    for mode, (low, high) in _threshold_ranges(bb_score, fingerprints.task.get("name")).items():
        key = mode.replace("-", "_")
        check_number(fingerprints.thresholds[key], f"the {key} threshold", low=low, high=high)
        fixed = config.get({"white_box": "t_wb", "black_box": "t_bb"}[key])
        if fixed is not None:
            check_number(fixed, f"setting {'t_wb' if key == 'white_box' else 't_bb'}", low=low, high=high)
        name = f"t_{key}"
        if name in tensors:
            check_finite(tensors[name][rows[mode]], f"{name} (on the rows {mode} verification reads)", low=low, high=high)


def _rows_by_mode(tensors: Mapping[str, torch.Tensor], mode_code: Mapping[str, int]) -> dict[str, Any]:
    """Which rows each mode reads: all, or those its code marks in the ``mode`` tensor."""
    if "mode" not in tensors:
        return {mode: slice(None) for mode in mode_code}
    codes = tensors["mode"]
    known = set(mode_code.values())
    found = set(int(c) for c in codes.unique())
    if not found <= known:
        raise IntegrityError(f"tensor 'mode' holds codes {sorted(found - known)}; the known codes are {sorted(known)}")
    rows = {mode: codes == code for mode, code in mode_code.items()}
    empty = [mode for mode, keep in rows.items() if not bool(keep.any())]
    if empty:
        raise IntegrityError(f"tensor 'mode' marks no sample for {', '.join(empty)} verification")
    return rows


#: Slack on the upper bound 1 for float rounding (a max-normalised map's mean, a probability's change).
ROUNDING = 1e-5


def _threshold_ranges(bb_score: Any, task: Any) -> dict[str, tuple[float | None, float | None]]:
    """The range of each mode's values, which its thresholds must lie in."""
    if bb_score == "diff":
        black: tuple[float | None, float | None] = (None, None)  # a difference of two changes: any sign
    elif bb_score == "abs" and task == "classification":
        black = (0.0, 1.0 + ROUNDING)  # a change of a probability
    else:
        black = (0.0, None)
    return {"white-box": (0.0, 1.0 + ROUNDING), "black-box": black}
