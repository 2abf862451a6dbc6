"""The settings of the saliency-map fingerprint: what they mean, which values they take, which helper models they read.

The scheme itself (:mod:`.scheme`) adds generation and verification on top; the pieces in between (objective,
generation, selection, thresholds, read-out) take a :class:`SaliencySettings`. How each setting's default and each
named configuration were chosen, with the figures: docs/ablation.md and docs/tasks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping

import torch

from ...access import BLACK_BOX, SCORES, WHITE_BOX
from ...checks import floats_as_floats, rules, setting_types
from ...errors import InputError
from ..base import FingerprintScheme
from .configurations import (
    BB_SCORES, BB_THRESHOLDS, CALIBRATED, CAM_DIRECTIONS, CONFIGURATIONS, OWNER_MODELS, OWNER_TASK_SETTINGS, SELECT_ANCHORS, SELECT_BY,
    SURROGATE_WEIGHTS, TASK_DEFAULTS, WB_THRESHOLDS,
)


@dataclass(frozen=True, kw_only=True)
class SaliencySettings(FingerprintScheme):
    """Saliency-map fingerprint: settings of generation and verification.

    Args:
        n: number of fingerprint samples N.
        pattern: cells (row, col) of the saliency grid that form P; negative indices count from the end.
            Default: the top-left cell ``((0, 0),)``, whatever the grid.
        xi: perturbation budget (on pixels in [0, 1]).
        xi_rms: with ``norm="l2"``, the budget as a root-mean-square change per value: the L2 radius is
            ``xi_rms * sqrt(C * H * W)`` of the candidate images, so one setting means the same at any image size
            (replaces ``xi``). None: ``xi`` is the radius.
        norm: ``"linf"`` or ``"l2"`` ball for the perturbation.
        lam: weight lambda of L_prd in eq. 4. For regression and similarity L_prd is the squared change of the output
            in units of the tolerance (so that lambda = 1 means the same for years, degrees or embedding distances).
        steps: projected gradient steps per sample.
        step_size: size of a step; default ``2.5 * xi / steps``.
        cam_logit: Grad-CAM of the class logit (True) or of its probability (False, the paper). The raw Grad-CAM
            of a probability is ~1e-4 and collapses when the softmax saturates, so the default reads the logit.
        cam_direction: which way Grad-CAM reads F_c outside classification: ``"value"`` (the output itself, the
            paper) or ``"dominant"`` (per sample, the output or its negative, whichever gives the target's Grad-CAM
            more mass on the original image; stored in the set as the ``direction`` tensor, read by every model).
            A regression output lowered by every feature channel has an all-zero Grad-CAM (the ReLU of eq. 2), on
            which L_sam has no gradient and every suspect matches a zero threshold; reading it the other way round
            gives the map those channels make. Classification reads the label's evidence: ``"value"`` only.
        sam_norm: normalisation of S inside L_sam: ``"none"`` (eq. 3 literally), ``"sum"`` (S / sum S: the share
            of saliency inside P) or ``"max"`` (S / max S, the normalisation that verification reads, eq. 5).
        keep: L_prd as ``"label"`` (cross-entropy to the label, the paper) or ``"output"`` (KL to the original
            output, which keeps the prediction without pushing it to over-confidence).
        layer: Grad-CAM layer by name; the model's declared or last spatial layer when None.
        min_grid: the least side of the target's saliency grid when ``layer`` is None: a declared or last spatial
            layer with a narrower map gives way to the last layer whose map is at least this wide on both sides
            (VGG11-BN maps 32x32 inputs to 2x2, where P is a quarter of the image; ``min_grid=4`` reads its 4x4
            stage). 1 (the default) keeps the declared or last layer whatever its grid: on a VGG11-BN target the
            4x4 stage lowered both modes' ROC AUC (docs/ablation.md).
        fill: pixel value that replaces P's region in black-box masking.
        bb_score: the black-box value of a sample: ``"abs"`` (|F_c(x_mask) - F_c(x)| on the returned
            probability, eq. 6; 2 queries), ``"log"`` (the same on log F_c, classification only: a confident model's
            probability barely moves while its log does; 2 queries) or ``"diff"`` (the ``"abs"`` change of the
            fingerprint minus that of its original image, which removes what masking does to any model; 4 queries;
            needs ``bb_threshold="midpoint"``).
        beta: weight of the uniqueness penalty: the mean P-saliency (max-normalised, as verification reads it) of
            the *reference* models given to ``generate`` -- independently trained models of the owner, standing
            for the innocent models the fingerprints must not match (in the spirit of conferrable examples).
        gamma: weight of the robustness reward: L_sam of the *surrogate* models given to ``generate`` -- pirated
            copies the owner makes of its own model (distilled ones, say), standing for the thief's.
        occlusion: weight of the occlusion term, which aligns generation with the black-box test: it raises the
            black-box value (``bb_score``) of the target and the surrogates and lowers that of the references.
        surrogate_weight: how the surrogates' terms (robustness reward and occlusion) combine per sample:
            ``"mean"`` or ``"worst"`` (the largest term: the step follows the surrogate that carries the trace
            least). With ``select_anchor="worst_surrogate"``, measured on a VGG11-BN target's distilled students:
            no gain over the mean (docs/ablation.md).
        wb_threshold: how t_wb is derived: ``"target"`` (mean P-saliency of the target over original and
            fingerprint samples, the paper), ``"calibration"`` (midway between the target's mean on the fingerprints
            and that of the *calibration* models given to ``generate``: independently trained models of the owner,
            kept out of the objective so that they stand for unseen innocent models) or ``"per_sample"`` (one
            threshold per sample, midway between the target's value and the calibration models' mean value on it).
        bb_threshold: how t_bb is derived: ``"originals"`` (mean masking change of the original samples on the
            target, the paper), ``"midpoint"`` (mean over originals and fingerprints, the rule of t_wb),
            ``"calibration"`` or ``"per_sample"`` (as for ``wb_threshold``).
        threshold_anchor: the pirated side of a ``"calibration"``/``"per_sample"`` threshold: ``"target"`` (the
            target's values) or ``"surrogates"`` (the owner's distilled surrogates' mean values: the bar sits between
            what a distilled copy and an innocent model show).
        pool: how many candidates to optimise per kept sample (>= 1). With ``pool > 1``, ``ceil(pool * n)``
            fingerprints are made (every candidate that keeps its prediction when there are fewer, at least ``n``;
            the number made is ``stats["pool_size"]``) and the ``n`` with the largest *conferrability margin* are
            kept: the surrogates' mean value (the target's when there are none) minus the references' mean value,
            read in the mode ``select`` names.
        select: the mode whose margins rank the pool: ``"white_box"``, ``"black_box"`` or ``"both"`` (the mean of a
            sample's rank in the two modes).
        select_anchor: the pirated side of the conferrability margin: ``"surrogates"`` (the surrogates' mean value,
            the target's when there are none), ``"target_and_surrogates"`` (per sample, the smaller of the target's
            value and the surrogates' mean: a sample is kept only if the target carries the trace as well as its
            copies; a distilled surrogate can light up P where the target's own Grad-CAM does not) or
            ``"worst_surrogate"`` (per sample, the smallest surrogate value: a sample is kept for the copy that
            keeps the trace least).
        black_box_settings: settings (a mapping) that replace this object's for a second group of N samples,
            optimised for and read by black-box verification only; this object's own settings then make the N samples
            that white-box verification reads. None (the paper): one group of samples serves both modes. ``n``,
            ``seed``, ``pattern`` and ``black_box_settings`` cannot be replaced: both groups share the region P and
            the count. Black-box verification still costs 2 queries per sample (of its N).
        t_wb, t_bb: fixed thresholds that replace the derived ones at verification.
        tolerance: how far a regression or similarity output may move and still count as kept (output units).
            When None, it is t_bb / 2 (the paper keeps regression outputs within half the black-box threshold),
            with t_bb the mean masking change of the target on the eligible candidate originals (at most 256) --
            the paper's way of setting t_bb, which then is the stored t_bb under the ``"originals"`` rule.
        retries: re-optimisations (with lambda doubled each time) of a sample whose prediction changed, before it
            is replaced by another candidate.
        batch_size: samples optimised together.
        seed: seeds the choice of candidates and the random starts.
    """

    modes: ClassVar[tuple[str, ...]] = (WHITE_BOX, BLACK_BOX)
    # eq. 6 measures how far masking moves F_c: a top-1 label cannot show that
    needs: ClassVar[Mapping[str, str]] = {WHITE_BOX: WHITE_BOX, BLACK_BOX: SCORES}
    partial_scores: ClassVar[bool] = True  # top-5 answers completed score as full ones, within 0.01 (docs/own-model.md)
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "similarity")
    configurations: ClassVar[Mapping[str, Mapping[str, Any]]] = CONFIGURATIONS
    task_defaults: ClassVar[Mapping[str, str]] = TASK_DEFAULTS
    owner_models: ClassVar[Mapping[str, Mapping[str, int]]] = {"owner": OWNER_MODELS}
    task_settings: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {"owner": OWNER_TASK_SETTINGS}

    n: int = 100
    pattern: tuple[tuple[int, int], ...] = ((0, 0),)
    xi: float = 0.1
    xi_rms: float | None = None
    norm: str = "linf"
    lam: float = 1.0
    steps: int = 50
    step_size: float | None = None
    cam_logit: bool = True
    cam_direction: str = "value"
    sam_norm: str = "max"
    keep: str = "output"
    layer: str | None = None
    min_grid: int = 1
    fill: float = 0.0
    bb_score: str = "abs"
    beta: float = 0.0
    gamma: float = 0.0
    occlusion: float = 0.0
    surrogate_weight: str = "mean"
    wb_threshold: str = "target"
    bb_threshold: str = "originals"
    threshold_anchor: str = "target"
    pool: float = 1.0
    select: str = "white_box"
    select_anchor: str = "surrogates"
    black_box_settings: tuple[tuple[str, Any], ...] | None = None
    t_wb: float | None = None
    t_bb: float | None = None
    tolerance: float | None = None
    retries: int = 1
    batch_size: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        setting_types(self)  # a type or a NaN/infinite number named in one line, before the ranges below
        checks: list[tuple[bool, str]] = [
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (self.xi > 0, f"xi must be > 0, got {self.xi}"),
            (self.xi_rms is None or self.xi_rms > 0, f"xi_rms must be > 0, got {self.xi_rms}"),
            (self.xi_rms is None or self.norm == "l2", "xi_rms is an L2 budget per value: set norm='l2' (a linf xi is per value already)"),
            (self.norm in ("linf", "l2"), f"norm must be 'linf' or 'l2', got {self.norm!r}"),
            (self.lam >= 0, f"lam must be >= 0, got {self.lam}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.cam_direction in CAM_DIRECTIONS, f"cam_direction must be one of {', '.join(CAM_DIRECTIONS)}, got {self.cam_direction!r}"),
            (self.sam_norm in ("none", "sum", "max"), f"sam_norm must be 'none', 'sum' or 'max', got {self.sam_norm!r}"),
            (self.keep in ("label", "output"), f"keep must be 'label' or 'output', got {self.keep!r}"),
            (self.wb_threshold in WB_THRESHOLDS, f"wb_threshold must be one of {', '.join(WB_THRESHOLDS)}, got {self.wb_threshold!r}"),
            (self.bb_threshold in BB_THRESHOLDS, f"bb_threshold must be one of {', '.join(BB_THRESHOLDS)}, got {self.bb_threshold!r}"),
            (0.0 <= self.fill <= 1.0, f"fill must lie in [0, 1], got {self.fill}"),
            (self.min_grid >= 1, f"min_grid must be >= 1, got {self.min_grid}"),
            (self.bb_score in BB_SCORES, f"bb_score must be one of {', '.join(BB_SCORES)}, got {self.bb_score!r}"),
            (min(self.beta, self.gamma, self.occlusion) >= 0, "beta, gamma and occlusion must be >= 0"),
            (
                not (self.bb_score == "diff" and self.bb_threshold == "originals"),
                "bb_score='diff' needs bb_threshold='midpoint': on the original images its values are 0 by construction",
            ),
            (len(self.pattern) >= 1, "pattern needs at least one cell"),
            (self.pool >= 1, f"pool must be >= 1, got {self.pool}"),
            (self.tolerance is None or self.tolerance > 0, f"tolerance must be > 0, got {self.tolerance}"),
            (self.retries >= 0 and self.batch_size >= 1, f"need retries >= 0 and batch_size >= 1, got {self.retries}, {self.batch_size}"),
            (self.step_size is None or self.step_size > 0, f"step_size must be > 0, got {self.step_size}"),
            (self.select in SELECT_BY, f"select must be one of {', '.join(SELECT_BY)}, got {self.select!r}"),
            (self.surrogate_weight in SURROGATE_WEIGHTS, f"surrogate_weight must be one of {', '.join(SURROGATE_WEIGHTS)}, got {self.surrogate_weight!r}"),
            (self.select_anchor in SELECT_ANCHORS, f"select_anchor must be one of {', '.join(SELECT_ANCHORS)}, got {self.select_anchor!r}"),
            (self.threshold_anchor in ("target", "surrogates"), f"threshold_anchor must be 'target' or 'surrogates', got {self.threshold_anchor!r}"),
            (
                self.threshold_anchor == "target" or self.wb_threshold in CALIBRATED or self.bb_threshold in CALIBRATED,
                "threshold_anchor='surrogates' moves a 'calibration' or 'per_sample' threshold: set wb_threshold or bb_threshold to one",
            ),
        ]
        rules(checks)
        # Accept lists (from JSON or the CLI) but store hashable tuples, and whole numbers for float settings as
        # floats: equal settings then print the same repr, which is how an evaluation recognises a set it made.
        object.__setattr__(self, "pattern", tuple((int(r), int(c)) for r, c in self.pattern))
        floats_as_floats(self)
        if self.black_box_settings is not None:
            object.__setattr__(self, "black_box_settings", _settings_items(self.black_box_settings))
            self.black_box_scheme  # builds (and so checks) the black-box group's settings

    @property
    def black_box_scheme(self) -> "SaliencySettings | None":
        """The settings of the samples that only black-box verification reads (``black_box_settings``); None when
        one group of samples serves both modes."""
        if self.black_box_settings is None:
            return None
        overrides = dict(self.black_box_settings)
        fixed = sorted(set(overrides) & {"n", "seed", "pattern", "black_box_settings"})
        if fixed:
            raise InputError(f"black_box_settings cannot replace {', '.join(fixed)}: both groups of samples share it")
        try:
            return replace(self, **overrides, black_box_settings=None)
        except TypeError as exc:
            raise InputError(f"black_box_settings: {exc}") from None

    def groups(self) -> tuple["SaliencySettings", ...]:
        """The settings that make the set's groups of samples: these alone, or the white-box and black-box ones."""
        black = self.black_box_scheme
        return (self,) if black is None else (replace(self, black_box_settings=None), black)

    def radius(self, images: torch.Tensor) -> "SaliencySettings":
        """These settings with ``xi`` the radius for ``images`` (``xi_rms`` resolved; unchanged without it)."""
        if self.xi_rms is None:
            return self
        return replace(self, xi=self.xi_rms * math.sqrt(images[0].numel()), xi_rms=None)

    def reads(self) -> tuple[str, ...]:
        """The owner's helper models these settings read, by role."""
        used = (("references", self.uses_references), ("surrogates", self.uses_surrogates), ("calibration", self.uses_calibration))
        return tuple(role for role, use in used if use)

    @property
    def uses_calibration(self) -> bool:
        """Whether a threshold is read on calibration models (which ``generate`` then needs)."""
        return any(g.wb_threshold in CALIBRATED or g.bb_threshold in CALIBRATED for g in self.groups())

    @property
    def uses_references(self) -> bool:
        """Whether reference models would be used (uniqueness penalty, occlusion term or pool selection)."""
        return any(g.beta > 0 or g.occlusion > 0 or g.selects for g in self.groups())

    @property
    def uses_surrogates(self) -> bool:
        """Whether surrogate models would be used (robustness reward, occlusion term, threshold anchor or pool
        selection)."""
        return any(g.gamma > 0 or g.occlusion > 0 or g.threshold_anchor == "surrogates" or g.selects for g in self.groups())

    @property
    def selects(self) -> bool:
        """Whether more samples are made than kept, the rest filtered by conferrability (``pool > 1``)."""
        return self.pool > 1

    @property
    def made(self) -> int:
        """How many fingerprints are optimised: ``n``, or ``ceil(pool * n)`` with selection."""
        return math.ceil(self.pool * self.n - 1e-9)

    def check_helpers(self, references: int = 0, surrogates: int = 0, calibration: int = 0) -> None:
        """Fail early when a setting has no helper models to act on, or helper models are given that nothing would
        use. Takes the numbers of the owner's reference, surrogate and calibration models, so that ``generate`` and
        an evaluation that has yet to train them check the same rules.

        Raises:
            InputError: saying which setting and which models do not go together.
        """
        for group in self.groups():
            if group.beta > 0 and not references:
                raise InputError(f"beta={group.beta:g} needs reference models (generate(..., references=[...]), evaluate --references K)")
            if group.gamma > 0 and not surrogates:
                raise InputError(f"gamma={group.gamma:g} needs surrogate models (generate(..., surrogates=[...]), evaluate --surrogates S)")
            if group.selects and not references:
                raise InputError(f"pool={group.pool:g} selects by conferrability, which needs reference models (generate(..., references=[...]), evaluate --references K)")
            if group.select_anchor != "surrogates" and not (group.selects and surrogates):
                raise InputError(f"select_anchor={group.select_anchor!r} ranks a pool by the surrogates: set pool > 1 and give surrogate models")
            if group.surrogate_weight != "mean" and not (surrogates and (group.gamma > 0 or group.occlusion > 0)):
                raise InputError(f"surrogate_weight={group.surrogate_weight!r} weighs the surrogates' terms: set gamma or occlusion > 0 and give surrogate models")
            if group.threshold_anchor == "surrogates" and not surrogates:
                raise InputError("threshold_anchor='surrogates' needs surrogate models (generate(..., surrogates=[...]), evaluate --surrogates S)")
        if references and not self.uses_references:
            raise InputError("reference models were given but the scheme would not use them (beta and occlusion are 0, pool is 1): they would be ignored")
        if surrogates and not self.uses_surrogates:
            raise InputError(
                "surrogate models were given but the scheme would not use them (gamma and occlusion are 0, pool is 1, "
                "thresholds anchored on the target): they would be ignored"
            )
        if self.uses_calibration and not calibration:
            raise InputError("a 'calibration' or 'per_sample' threshold needs calibration models: the two go together")
        if calibration and not self.uses_calibration:
            raise InputError("calibration models were given but no threshold is 'calibration' or 'per_sample': they would be ignored")


def _settings_items(settings: Any) -> tuple[tuple[str, Any], ...]:
    """A mapping of settings (or its JSON form, a list of pairs) as sorted, hashable pairs."""
    pairs = settings.items() if isinstance(settings, dict) else settings
    try:
        return tuple(sorted((str(k), _hashable(v)) for k, v in pairs))
    except (TypeError, ValueError):
        raise InputError(f"black_box_settings must map setting names to values, got {settings!r}") from None


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value
