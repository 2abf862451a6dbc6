"""The saliency-map fingerprint (Zhang, Pan, Zhang 2024): label-keeping samples whose Grad-CAM lights up a region.

Generation moves the target's Grad-CAM saliency onto a background region P of the saliency grid (eq. 3-4) with a
perturbation of at most ``xi``, while keeping the prediction. A pirated copy inherits that trace; an independent
model does not. White-box verification reads the suspect's saliency on P (eq. 5); black-box verification masks P
and measures how much F_c moves, with 2 queries per sample (eq. 6).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..access import BLACK_BOX, SCORES, WHITE_BOX, Access, BlackBox, WhiteBox
from ..checks import setting_types
from ..data import check_images
from ..errors import InputError
from ..metrics import psnr
from ..models import ImageModel, device_of
from ..gradcam import GradCAM, find_cam_layer, normalise_maps, resolve_layer
from ..tasks import Classification, Task
from .base import FingerprintScheme, FingerprintSet, VerificationResult, check_input_shape, helper_hashes, target_identity
from .checks import Layout
from .saliency_checks import check_saliency_layout, check_saliency_values

#: The paper's configuration taken literally: Grad-CAM of the probability, un-normalised S in L_sam, cross-entropy to
#: the label as L_prd, t_bb from masked originals.
PAPER = {"cam_logit": False, "sam_norm": "none", "keep": "label", "wb_threshold": "target", "bb_threshold": "originals", "bb_score": "abs", "beta": 0.0, "gamma": 0.0, "occlusion": 0.0}

#: modelprint's best measured configuration, made with the owner's helper models (:data:`OWNER_MODELS`): N samples
#: for white-box verification (L2 perturbation, uniqueness penalty on the references, per-sample thresholds, the N of
#: 5N candidates with the largest white-box conferrability margin kept) and N for black-box verification (the
#: occlusion term with references and surrogates, per-sample thresholds anchored on the surrogates, the N of 3N with
#: the largest black-box margin kept). Measured on the 15-epoch CIFAR-10 paper zoo (docs/ablation.md): see
#: :class:`SaliencyFingerprint` ``black_box_settings``.
OWNER = {
    "norm": "l2", "xi": 3.0, "bb_score": "log", "beta": 1.0, "wb_threshold": "per_sample", "bb_threshold": "per_sample", "pool": 5.0,
    "black_box_settings": {"gamma": 1.0, "occlusion": 1.0, "threshold_anchor": "surrogates", "pool": 3.0, "select": "black_box"},
}
#: The owner's helper models that :data:`OWNER` reads: independently trained references, distilled surrogates and
#: independently trained calibration models (``generate(references=..., surrogates=..., calibration=...)``).
OWNER_MODELS = {"references": 8, "surrogates": 4, "calibration": 4}

#: Named configurations: the class defaults (no helper models), the paper's taken literally, and the owner's.
CONFIGURATIONS = {"default": {}, "paper": PAPER, "owner": OWNER}

#: What the ``"owner"`` configuration changes for tasks other than classification (settings a run names itself win).
#: Both score black-box changes on the output itself (``bb_score="log"`` needs a probability) and take twice
#: classification's L2 budget per value (12 on 64x64x3 UTKFace images, 6 on 32x32x3 FaceScrub ones: PSNR about
#: 24.5 dB), a tenth of the keep weight, and pools ranked by the smaller of the target's and the surrogates' value
#: (``select_anchor``). Measured on the paper zoos: docs/tasks.md.
OWNER_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    "regression": {"bb_score": "abs", "xi": 12.0, "lam": 0.1, "select_anchor": "target_and_surrogates"},
    "similarity": {"bb_score": "abs", "xi": 6.0, "lam": 0.1, "select_anchor": "target_and_surrogates"},
}

#: How the ``mode`` tensor of a set made with ``black_box_settings`` marks the samples each verification reads.
MODE_CODE = {WHITE_BOX: 1, BLACK_BOX: 2}

#: Rules for the thresholds (see ``SaliencyFingerprint.wb_threshold``/``bb_threshold``); the last two read the
#: owner's calibration models.
CALIBRATED = ("calibration", "per_sample")
WB_THRESHOLDS = ("target", *CALIBRATED)
BB_THRESHOLDS = ("originals", "midpoint", *CALIBRATED)

#: Black-box values of a sample (see ``SaliencyFingerprint.bb_score``) and the queries each costs per sample.
BB_SCORES = {"abs": 2, "log": 2, "diff": 4}

#: What ranks the pool of candidate fingerprints (see ``SaliencyFingerprint.select``).
SELECT_BY = ("white_box", "black_box", "both")

#: The pirated side of the pool's conferrability margin (see ``SaliencyFingerprint.select_anchor``).
SELECT_ANCHORS = ("surrogates", "target_and_surrogates")


@dataclass(frozen=True, kw_only=True)
class SaliencyFingerprint(FingerprintScheme):
    """Saliency-map fingerprint: settings of generation and verification.

    Args:
        n: number of fingerprint samples N.
        pattern: cells (row, col) of the saliency grid that form P; negative indices count from the end.
            Default: the top-left cell ``((0, 0),)``, whatever the grid.
        xi: perturbation budget (on pixels in [0, 1]).
        norm: ``"linf"`` or ``"l2"`` ball for the perturbation.
        lam: weight lambda of L_prd in eq. 4. For regression and similarity L_prd is the squared change of the output
            in units of the tolerance (so that lambda = 1 means the same for years, degrees or embedding distances).
        steps: projected gradient steps per sample.
        step_size: size of a step; default ``2.5 * xi / steps``.
        cam_logit: Grad-CAM of the class logit (True) or of its probability (False, the paper). The raw Grad-CAM
            of a probability is ~1e-4 and collapses when the softmax saturates, so the default reads the logit.
        sam_norm: normalisation of S inside L_sam: ``"none"`` (eq. 3 literally), ``"sum"`` (S / sum S: the share
            of saliency inside P) or ``"max"`` (S / max S, the normalisation that verification reads, eq. 5).
            Default ``"max"``: on CIFAR-10 with a ResNet-18 width 16 (73.5% test accuracy, N = 100) it gave target
            white-box 0.94 against 0.87 with ``"sum"``, with the independent model unchanged at 0.44 (see
            docs/core-results.md).
        keep: L_prd as ``"label"`` (cross-entropy to the label, the paper) or ``"output"`` (KL to the original
            output, which keeps the prediction without pushing it to over-confidence).
        layer: Grad-CAM layer by name; the model's declared or last spatial layer when None.
        fill: pixel value that replaces P's region in black-box masking.
        bb_score: the black-box value of a sample: ``"abs"`` (|F_c(x_mask) - F_c(x)| on the returned
            probability, eq. 6; 2 queries), ``"log"`` (the same on log F_c, classification only: a confident model's
            probability barely moves while its log does; 2 queries) or ``"diff"`` (the ``"abs"`` change of the
            fingerprint minus that of its original image, which removes what masking does to any model; 4 queries;
            needs ``bb_threshold="midpoint"``).
        beta: weight of the uniqueness penalty: the mean P-saliency (max-normalised, as verification reads it) of
            the *reference* models given to :meth:`generate` — independently trained models of the owner, standing
            for the innocent models the fingerprints must not match (in the spirit of conferrable examples).
        gamma: weight of the robustness reward: L_sam of the *surrogate* models given to :meth:`generate` — pirated
            copies the owner makes of its own model (distilled ones, say), standing for the thief's.
        occlusion: weight of the occlusion term, which aligns generation with the black-box test: it raises the
            black-box value (``bb_score``) of the target and the surrogates and lowers that of the references.
        wb_threshold: how t_wb is derived: ``"target"`` (mean P-saliency of the target over original and
            fingerprint samples, the paper) or ``"calibration"`` (midway between the target's mean on the
            fingerprints and that of the *calibration* models given to :meth:`generate`: independently trained
            models of the owner, kept out of the objective so that they stand for unseen innocent models). The
            paper's rule places t_wb by the target alone, so it cannot know how much of the fingerprints' saliency
            an innocent model shares; the calibration rule measures that on the owner's own models. Or
            ``"per_sample"``: one threshold per sample, midway between the target's value and the calibration
            models' mean value on that sample (a sample whose trace innocent models partly share gets a higher bar).
            Measured on the CIFAR-10 paper zoo with 4 calibration models (docs/ablation.md): per-sample thresholds
            raised ARUC from 0.343 to 0.437 white-box and from 0.099 to 0.154 black-box; the one midway threshold
            (``"calibration"``) did not move it (0.350 / 0.097).
        bb_threshold: how t_bb is derived: ``"originals"`` (mean masking change of the original samples on the
            target, the paper), ``"midpoint"`` (mean over originals and fingerprints, the rule of t_wb),
            ``"calibration"`` (midway between the target's and the calibration models' mean on the fingerprints) or
            ``"per_sample"`` (as for ``wb_threshold``).
        threshold_anchor: the pirated side of a ``"calibration"``/``"per_sample"`` threshold: ``"target"`` (midway
            between the target's values and the calibration models') or ``"surrogates"`` (midway between the owner's
            distilled surrogates' mean values and the calibration models': the bar sits between what a distilled
            copy and an innocent model show, instead of between the target and an innocent model). Measured on the
            15-epoch CIFAR-10 paper zoo (docs/ablation.md): with the occlusion term it raised black-box ARUC from
            0.550 to 0.600 (distilled copies 0.35 -> 0.65); on the best white-box row it lowered white-box ARUC
            from 0.720 to 0.659 (independent models rise with the lower bar).
        pool: how many candidates to optimise per kept sample (>= 1). With ``pool > 1``, ``ceil(pool * n)``
            fingerprints are made (every candidate that keeps its prediction when there are fewer, at least ``n``;
            the number made is ``stats["pool_size"]``) and the ``n`` with the largest *conferrability margin* are
            kept: the surrogates' mean value (the target's when there are none) minus the references' mean value,
            read in the mode ``select`` names. A filter in the spirit of conferrable examples: it keeps the samples
            whose trace the owner's pirated copies inherit and its independent models do not. Measured on the
            15-epoch CIFAR-10 paper zoo (docs/ablation.md): with 8 references, 4 surrogates and per-sample
            thresholds, ``pool=3`` raised white-box ARUC from 0.720 to 0.792 (distilled copies 0.26 -> 0.41,
            independent models 0.05).
        select: the mode whose margins rank the pool: ``"white_box"``, ``"black_box"`` or ``"both"`` (the mean of a
            sample's rank in the two modes).
        select_anchor: the pirated side of the conferrability margin: ``"surrogates"`` (the surrogates' mean value,
            the target's when there are none) or ``"target_and_surrogates"`` (per sample, the smaller of the target's
            value and the surrogates' mean: a sample is kept only if the target carries the trace as well as its
            copies). A distilled surrogate can light up P on samples where the target's own Grad-CAM does not (on the
            FaceScrub-20 paper zoo the target's Grad-CAM was zero on 29 of 100 kept samples), and such a sample then
            fails the target's own per-sample threshold. With it the target's own white-box score rose to 0.97-1.00
            on the regression and similarity paper zoos (docs/tasks.md); not measured on classification, where the
            target already scored 1.00.
        black_box_settings: settings (a mapping) that replace this object's for a second group of N samples,
            optimised for and read by black-box verification only; this object's own settings then make the N samples
            that white-box verification reads. None (the paper): one group of samples serves both modes. The two
            tests reward different samples: the trace that white-box verification reads is best kept unique by the
            uniqueness penalty and pool selection, the masking response that black-box verification reads by the
            occlusion term, and one objective with both terms compromises each. Measured on the 15-epoch CIFAR-10
            paper zoo (docs/ablation.md): the best white-box configuration (``pool=5``) reaches white-box ARUC 0.800
            but black-box 0.205, the best black-box one (occlusion, surrogate-anchored thresholds, ``pool=3``,
            ``select="black_box"``) black-box 0.784 but white-box 0.425; one group each gives both (:data:`OWNER`).
            ``n``, ``seed``, ``pattern`` and ``black_box_settings`` cannot be replaced: both groups share the region
            P and the count. Black-box verification still costs 2 queries per sample (of its N).
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

    name: ClassVar[str] = "saliency"
    modes: ClassVar[tuple[str, ...]] = (WHITE_BOX, BLACK_BOX)
    # eq. 6 measures how far masking moves F_c: a top-1 label cannot show that
    needs: ClassVar[Mapping[str, str]] = {WHITE_BOX: WHITE_BOX, BLACK_BOX: SCORES}
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "similarity")
    configurations: ClassVar[Mapping[str, Mapping[str, Any]]] = CONFIGURATIONS
    owner_models: ClassVar[Mapping[str, Mapping[str, int]]] = {"owner": OWNER_MODELS}
    task_settings: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {"owner": OWNER_TASK_SETTINGS}

    n: int = 100
    pattern: tuple[tuple[int, int], ...] = ((0, 0),)
    xi: float = 0.1
    norm: str = "linf"
    lam: float = 1.0
    steps: int = 50
    step_size: float | None = None
    cam_logit: bool = True
    sam_norm: str = "max"
    keep: str = "output"
    layer: str | None = None
    fill: float = 0.0
    bb_score: str = "abs"
    beta: float = 0.0
    gamma: float = 0.0
    occlusion: float = 0.0
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
        checks = [
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (self.xi > 0, f"xi must be > 0, got {self.xi}"),
            (self.norm in ("linf", "l2"), f"norm must be 'linf' or 'l2', got {self.norm!r}"),
            (self.lam >= 0, f"lam must be >= 0, got {self.lam}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.sam_norm in ("none", "sum", "max"), f"sam_norm must be 'none', 'sum' or 'max', got {self.sam_norm!r}"),
            (self.keep in ("label", "output"), f"keep must be 'label' or 'output', got {self.keep!r}"),
            (self.wb_threshold in WB_THRESHOLDS, f"wb_threshold must be one of {', '.join(WB_THRESHOLDS)}, got {self.wb_threshold!r}"),
            (self.bb_threshold in BB_THRESHOLDS, f"bb_threshold must be one of {', '.join(BB_THRESHOLDS)}, got {self.bb_threshold!r}"),
            (0.0 <= self.fill <= 1.0, f"fill must lie in [0, 1], got {self.fill}"),
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
            (self.select_anchor in SELECT_ANCHORS, f"select_anchor must be one of {', '.join(SELECT_ANCHORS)}, got {self.select_anchor!r}"),
            (self.threshold_anchor in ("target", "surrogates"), f"threshold_anchor must be 'target' or 'surrogates', got {self.threshold_anchor!r}"),
            (
                self.threshold_anchor == "target" or self.wb_threshold in CALIBRATED or self.bb_threshold in CALIBRATED,
                "threshold_anchor='surrogates' moves a 'calibration' or 'per_sample' threshold: set wb_threshold or bb_threshold to one",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        # Accept lists (from JSON or the CLI) but store hashable tuples, and whole numbers for float settings as
        # floats: equal settings then print the same repr, which is how an evaluation recognises a set it made.
        object.__setattr__(self, "pattern", tuple((int(r), int(c)) for r, c in self.pattern))
        for name, spec in self.__dataclass_fields__.items():
            value = getattr(self, name)
            if spec.type in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        if self.black_box_settings is not None:
            object.__setattr__(self, "black_box_settings", _settings_items(self.black_box_settings))
            self.black_box_scheme  # builds (and so checks) the black-box group's settings

    @property
    def black_box_scheme(self) -> "SaliencyFingerprint | None":
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

    def _groups(self) -> tuple["SaliencyFingerprint", ...]:
        """The schemes that make the set's groups of samples: this one alone, or the white-box and black-box ones."""
        black = self.black_box_scheme
        return (self,) if black is None else (replace(self, black_box_settings=None), black)

    @property
    def uses_calibration(self) -> bool:
        """Whether a threshold is read on calibration models (which :meth:`generate` then needs)."""
        return any(g.wb_threshold in CALIBRATED or g.bb_threshold in CALIBRATED for g in self._groups())

    def reads(self) -> tuple[str, ...]:
        """The owner's helper models these settings read, by role."""
        used = (("references", self.uses_references), ("surrogates", self.uses_surrogates), ("calibration", self.uses_calibration))
        return tuple(role for role, use in used if use)

    @property
    def uses_references(self) -> bool:
        """Whether reference models would be used (uniqueness penalty, occlusion term or pool selection)."""
        return any(g.beta > 0 or g.occlusion > 0 or g.selects for g in self._groups())

    @property
    def selects(self) -> bool:
        """Whether more samples are made than kept, the rest filtered by conferrability (``pool > 1``)."""
        return self.pool > 1

    @property
    def made(self) -> int:
        """How many fingerprints are optimised: ``n``, or ``ceil(pool * n)`` with selection."""
        return math.ceil(self.pool * self.n - 1e-9)

    @property
    def uses_surrogates(self) -> bool:
        """Whether surrogate models would be used (robustness reward, occlusion term, threshold anchor or pool
        selection)."""
        return any(g.gamma > 0 or g.occlusion > 0 or g.threshold_anchor == "surrogates" or g.selects for g in self._groups())

    @classmethod
    def paper(cls, **overrides: Any) -> "SaliencyFingerprint":
        """The paper-faithful configuration (see :data:`PAPER`), with optional overrides."""
        return cls.named("paper", **overrides)

    @classmethod
    def check_layout(cls, layout: Layout, task: str) -> int:
        """The generic layout, and the tensors verification reads: ``originals``, ``pattern``, ``pairs`` (similarity),
        ``mode`` and the per-sample thresholds (see :mod:`.saliency_checks`)."""
        n = super().check_layout(layout, task)
        check_saliency_layout(layout, n, task)
        return n

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "SaliencyFingerprint":
        """The generic checks, then P, the mode codes, the sample count and every threshold within the range of the
        values it is compared with (see :mod:`.saliency_checks`)."""
        scheme = super().validate(fingerprints)
        check_saliency_values(fingerprints, MODE_CODE)
        return scheme  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------------ pattern
    def pattern_mask(self, grid: tuple[int, int]) -> torch.Tensor:
        """P as a float mask on a saliency grid of shape ``grid``."""
        h, w = grid
        mask = torch.zeros(h, w)
        for r, c in self.pattern:
            if not (-h <= r < h and -w <= c < w):
                raise InputError(f"pattern cell ({r}, {c}) lies outside the {h}x{w} saliency grid")
            mask[r, c] = 1.0
        if mask.sum() == mask.numel():
            raise InputError("the pattern covers the whole saliency grid: P needs a background to stand out from")
        return mask

    @staticmethod
    def input_mask(pattern: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """P upsampled to the input size (nearest): 1 on the pixels that black-box masking replaces."""
        return F.interpolate(pattern[None, None].float(), size=size, mode="nearest")[0, 0]

    # ------------------------------------------------------------------------------------------------ losses
    def _sam_loss(self, maps: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """Eq. 3 per sample: mean saliency outside P minus mean saliency inside P."""
        s = normalise_maps(maps, self.sam_norm)
        inside = (s * pattern).sum(dim=(1, 2)) / pattern.sum()
        outside = (s * (1 - pattern)).sum(dim=(1, 2)) / (1 - pattern).sum()
        return outside - inside

    def _score_fn(self, task: Task, condition: torch.Tensor):
        return lambda outputs: task.score(outputs, condition, logit=self.cam_logit)

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.xi, self.xi)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (self.xi / norms).clamp(max=1.0).view(-1, 1, 1, 1)
        return (x + delta).clamp(0, 1)

    def _random_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1
        if self.norm == "l2":
            noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * self.xi * 0.5
        else:
            noise = noise * self.xi
        return self._project(x + noise, x)

    # ------------------------------------------------------------------------------------------------ generation
    def generate(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        task: Task | None = None,
        *,
        pairs: torch.Tensor | None = None,
        references: Sequence[torch.nn.Module] = (),
        surrogates: Sequence[torch.nn.Module] = (),
        calibration: Sequence[torch.nn.Module] = (),
        progress: bool = False,
    ) -> FingerprintSet:
        """Generate N fingerprint samples of ``model`` from candidate images.

        Candidates are taken in a seeded random order; only those whose prediction the target gets right (for
        classification) are used. Each is optimised for eq. 4; of the iterates that keep the prediction, the one
        with the lowest L_sam is kept. A sample whose prediction changed at every step is re-optimised with a
        doubled lambda (``retries`` times), then replaced by the next candidate; both are counted in ``stats``.

        Args:
            model: the target, taking images in [0, 1].
            images: candidate images, N' x C x H x W in [0, 1] (N' >= n).
            labels: their labels (classes, or values for regression).
            task: the task adapter; classification when None.
            pairs: pair images for tasks that compare two images (similarity), aligned with ``images``.
            references: the owner's independently trained models, for the uniqueness penalty (``beta``) and the
                occlusion term; needed when ``beta > 0``.
            surrogates: the owner's own pirated copies, for the robustness reward (``gamma``) and the occlusion
                term; needed when ``gamma > 0``.
            calibration: the owner's independently trained models that the calibrated thresholds (``"calibration"``,
                ``"per_sample"``) are read on; never used by the objective.
            progress: show a progress bar.

        Returns:
            The fingerprint set, with thresholds derived on the target.
        """
        if self.black_box_settings is not None:
            return self._generate_groups(model, images, labels, task, pairs=pairs, references=references, surrogates=surrogates, calibration=calibration, progress=progress)
        start = time.perf_counter()
        task = task or Classification()
        model = model.eval()
        device = device_of(model)
        check_images(images, what="candidate images")
        check_input_shape(model, images)
        if len(labels) != len(images):
            raise InputError(f"{len(images)} candidate images but {len(labels)} labels")
        if task.needs_pairs and (pairs is None or len(pairs) != len(images)):
            raise InputError(f"the {task.name} task needs one pair image per candidate")
        self._check_helpers(task, references, surrogates, calibration)

        layer = self.layer or find_cam_layer(model, images[:1].to(device))
        resolve_layer(model, layer)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(images), generator=generator)

        with torch.no_grad():
            probe = model(images[:1].to(device))
        task.check_labels(labels, probe.shape[1] if probe.ndim == 2 else 1)

        with GradCAM(model, layer) as cam, contextlib.ExitStack() as stack:
            helpers = [
                (role, stack.enter_context(GradCAM(helper.eval(), find_cam_layer(helper, images[:1].to(device)))))
                for role, group in (("reference", references), ("surrogate", surrogates))
                for helper in group
            ]
            first = task.condition_on(model, labels[:1], _rows(pairs, slice(0, 1)))
            grid = tuple(cam(images[:1].to(device), self._score_fn(task, first))[0].shape[1:])
            pattern = self.pattern_mask(grid).to(device)  # type: ignore[arg-type]
            eligible = self._eligible(model, task, images, labels, pairs, order, device)
            # A pool larger than the candidates that keep their prediction shrinks to them; n are always needed.
            needed = self.n if self.selects else self.made
            if len(eligible) < needed:
                raise InputError(f"only {len(eligible)} candidate images keep their prediction on the target, {needed} are needed")
            made = min(self.made, len(eligible))
            tolerance, pool_t_bb = self._tolerance(model, task, images, labels, pairs, eligible, pattern, device)
            accepted, stats = self._optimise_all(cam, helpers, model, task, images, labels, pairs, eligible, pattern, generator, device, progress, tolerance, made)

        if len(accepted) < needed:
            raise InputError(
                f"only {len(accepted)} of {made} fingerprints kept the target's prediction; give more candidates or a larger xi"
            )
        stats["pool_size"] = len(accepted)
        accepted.sort(key=lambda item: item[0])  # candidate order: deterministic
        index = torch.tensor([i for i, _ in accepted])
        samples = torch.stack([x for _, x in accepted]).cpu()
        tensors = {"samples": samples, "originals": images[index].cpu(), "labels": labels[index].cpu(), "pattern": pattern.cpu()}
        if pairs is not None:
            tensors["pairs"] = pairs[index].cpu()
        fingerprints = FingerprintSet(
            scheme=self.name,
            config={**self.settings(), "layer": layer, "tolerance": tolerance, **helper_hashes(references=references, surrogates=surrogates, calibration=calibration)},
            task=task.to_config(),
            tensors=tensors,
            target=target_identity(model),
        )
        if self.selects:
            fingerprints, selection_stats = self._select(fingerprints, task, model, surrogates, references)
            stats.update(selection_stats)
        anchors = surrogates if self.threshold_anchor == "surrogates" else ()
        thresholds, per_sample, threshold_stats = self._derive_thresholds(model, fingerprints, task, calibration, anchors)
        if pool_t_bb is not None and self.bb_threshold == "originals":
            thresholds["black_box"] = pool_t_bb  # the t_bb that the tolerance is half of
        fingerprints.thresholds = thresholds
        fingerprints.tensors.update(per_sample)
        fingerprints.stats = {
            **stats,
            "labels_kept": self._kept_share(model, fingerprints, task),
            **threshold_stats,
            "psnr_db_mean": float(psnr(tensors["originals"], samples).mean()),
            "psnr_db_min": float(psnr(tensors["originals"], samples).min()),
            "linf_max": float((samples - tensors["originals"]).abs().max()),
            "reference_models": len(references),
            "surrogate_models": len(surrogates),
            "calibration_models": len(calibration),
            "generation_s": time.perf_counter() - start,
        }
        return fingerprints

    def _generate_groups(self, model, images, labels, task, *, pairs, references, surrogates, calibration, progress) -> FingerprintSet:
        """Make the white-box group and the black-box group (``black_box_settings``) and join them into one set whose
        ``mode`` tensor says which verification reads each sample."""
        task = task or Classification()
        self._check_helpers(task, references, surrogates, calibration)
        made = []
        for group in self._groups():
            helpers = {
                "references": references if group.uses_references else (),
                "surrogates": surrogates if group.uses_surrogates else (),
                "calibration": calibration if group.uses_calibration else (),
            }
            made.append(group.generate(model, images, labels, task, pairs=pairs, progress=progress, **helpers))
        white, black = made
        tensors = {"pattern": white.tensors["pattern"], "mode": torch.tensor([MODE_CODE[WHITE_BOX]] * len(white) + [MODE_CODE[BLACK_BOX]] * len(black), dtype=torch.uint8)}
        for key in ("samples", "originals", "labels", "pairs"):
            if key in white.tensors:
                tensors[key] = torch.cat([white.tensors[key], black.tensors[key]])
        # A mode's per-sample thresholds come from its own group; the other group's rows are never read by that mode.
        for key, owner in (("t_white_box", white), ("t_black_box", black)):
            if key in owner.tensors:
                parts = [g.tensors.get(key, torch.full((len(g),), float("nan"))) for g in made]
                tensors[key] = torch.cat(parts)
        joined = replace(
            white,
            config={**white.config, **{k: black.config[k] for k in ("bb_score", "fill")}, "black_box_settings": self.settings()["black_box_settings"]},
            tensors=tensors,
            thresholds={"white_box": white.thresholds["white_box"], "black_box": black.thresholds["black_box"]},
        )
        # The figures of all 2N samples follow from the two groups' own (both hold N samples).
        both = [white.stats, black.stats]
        joined.stats = {
            **white.stats,
            **{f"black_box_group_{k}": v for k, v in black.stats.items()},
            **{k: sum(g[k] for g in both) / 2 for k in ("labels_kept", "psnr_db_mean")},
            "psnr_db_min": min(g["psnr_db_min"] for g in both),
            "linf_max": max(g["linf_max"] for g in both),
            "generation_s": sum(g["generation_s"] for g in both),
            "samples_per_mode": self.n,
        }
        return joined

    def check_helpers(self, references: int = 0, surrogates: int = 0, calibration: int = 0) -> None:
        """Fail early when a setting has no helper models to act on, or helper models are given that nothing would
        use. Takes the numbers of the owner's reference, surrogate and calibration models, so that
        :meth:`generate` and an evaluation that has yet to train them check the same rules.

        Raises:
            InputError: saying which setting and which models do not go together.
        """
        for group in self._groups():
            if group.beta > 0 and not references:
                raise InputError(f"beta={group.beta:g} needs reference models (generate(..., references=[...]), evaluate --references K)")
            if group.gamma > 0 and not surrogates:
                raise InputError(f"gamma={group.gamma:g} needs surrogate models (generate(..., surrogates=[...]), evaluate --surrogates S)")
            if group.selects and not references:
                raise InputError(f"pool={group.pool:g} selects by conferrability, which needs reference models (generate(..., references=[...]), evaluate --references K)")
            if group.select_anchor == "target_and_surrogates" and not (group.selects and surrogates):
                raise InputError("select_anchor='target_and_surrogates' ranks a pool by the target and its surrogates: set pool > 1 and give surrogate models")
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

    def _check_helpers(self, task: Task, references: Sequence, surrogates: Sequence, calibration: Sequence) -> None:
        """:meth:`check_helpers` on the models given to :meth:`generate`, and the black-box score against the task."""
        self.check_helpers(len(references), len(surrogates), len(calibration))
        if any(g.bb_score == "log" for g in self._groups()) and not isinstance(task, Classification):
            raise InputError(f"bb_score='log' needs a probability: use 'abs' or 'diff' for the {task.name} task")

    def _eligible(self, model, task, images, labels, pairs, order, device) -> list[int]:
        """Candidate indices, in ``order``, whose original prediction the target gets right."""
        keep: list[int] = []
        with torch.no_grad():
            for start in range(0, len(order), 256):
                idx = order[start : start + 256]
                outputs = model(images[idx].to(device))
                if not bool(torch.isfinite(outputs).all()):
                    raise InputError("the target's outputs on the candidate images are NaN or infinite: its weights are broken, no fingerprint can be made")
                cond = task.condition_on(model, labels[idx], _rows(pairs, idx))
                right = _correct(task, outputs, cond, labels[idx].to(device))
                keep += idx[right.cpu()].tolist()
        return keep

    def _tolerance(self, model, task, images, labels, pairs, eligible, pattern, device) -> tuple[float | None, float | None]:
        """The tolerance of kept outputs (see ``tolerance``) and, when derived here, the t_bb it is half of."""
        if self.tolerance is not None or isinstance(task, Classification):
            return self.tolerance, None
        idx = torch.tensor(eligible[:256])
        x = images[idx].to(device)
        with torch.no_grad():
            cond = task.condition_on(model, labels[idx], _rows(pairs, idx))
            t_bb = float(self._occlusion_value(model, task, x, model(x), cond, pattern).mean())
        if t_bb <= 0:
            raise InputError("masking P does not move the target's output on any candidate: no tolerance can be derived, give one")
        return t_bb / 2, t_bb

    def _optimise_all(self, cam, helpers, model, task, images, labels, pairs, eligible, pattern, generator, device, progress, tolerance, made):
        """Optimise candidates in order until ``made`` fingerprints kept the target's output (or none are left)."""
        queue = [(i, 0) for i in eligible]  # (candidate index, attempt)
        accepted: list[tuple[int, torch.Tensor]] = []
        reoptimised = replaced = tried = 0
        with tqdm(total=made, desc="fingerprints", disable=not progress, leave=False) as bar:
            while queue and len(accepted) < made:
                need = made - len(accepted)
                batch, queue = queue[: min(self.batch_size, need)], queue[min(self.batch_size, need):]
                idx = torch.tensor([i for i, _ in batch])
                lam = torch.tensor([self.lam * 2.0**attempt for _, attempt in batch], device=device)
                x = images[idx].to(device)
                cond = task.condition_on(model, labels[idx], _rows(pairs, idx))
                tried += len(batch)
                best, kept = self._optimise(cam, helpers, task, x, cond, lam, pattern, generator, tolerance)
                for j, (i, attempt) in enumerate(batch):
                    if kept[j]:
                        accepted.append((i, best[j].detach()))
                    elif attempt < self.retries:
                        queue.insert(0, (i, attempt + 1))
                        reoptimised += 1
                    else:
                        replaced += 1
                bar.update(int(kept.sum()))
        stats = {"candidates_optimised": tried, "reoptimised": reoptimised, "replaced": replaced}
        return accepted, stats

    def _optimise(self, cam, helpers, task, x, cond, lam, pattern, generator, tolerance):
        """PGD on eq. 4 (plus the optional helper and occlusion terms) for one batch; returns the best
        prediction-keeping iterate per sample and whether any kept."""
        with torch.no_grad():
            original = cam.model(x)
        score_fn = self._score_fn(task, cond)
        alpha = self.step_size if self.step_size is not None else 2.5 * self.xi / max(self.steps, 1)
        x_adv = self._random_start(x, generator)
        best = x.clone()
        best_loss = torch.full((len(x),), float("inf"), device=x.device)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for step in range(self.steps + 1):
            last = step == self.steps
            x_adv = x_adv.detach().requires_grad_(True)
            maps, outputs = cam(x_adv, score_fn, create_graph=not last)
            sam = self._sam_loss(maps, pattern)
            kept = task.kept(outputs.detach(), original, cond, tolerance=tolerance)
            better = kept & (sam.detach() < best_loss)
            best[better] = x_adv.detach()[better]
            best_loss[better] = sam.detach()[better]
            found |= kept
            if last:
                break
            keep = task.keep_loss(outputs, original, cond, mode=self.keep)
            if tolerance and not isinstance(task, Classification):  # a squared change in tolerances: the same for years or distances
                keep = keep / tolerance**2
            loss = sam + lam * keep
            loss = loss + self._helper_loss(helpers, task, x_adv, cond, score_fn, pattern)
            if self.occlusion > 0:
                loss = loss - self.occlusion * self._occlusion_value(cam.model, task, x_adv, outputs, cond, pattern)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
            if self.norm == "linf":
                x_adv = x_adv.detach() - alpha * grad.sign()
            else:
                norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                x_adv = x_adv.detach() - alpha * grad / norms
            x_adv = self._project(x_adv, x)
        return best, found

    def _helper_loss(self, helpers, task, x_adv, cond, score_fn, pattern) -> torch.Tensor:
        """Per sample: beta x the references' mean P-saliency, plus gamma x the surrogates' mean L_sam, minus
        (occlusion) the surrogates' mean black-box value, plus (occlusion) the references' mean black-box value."""
        total = torch.zeros(len(x_adv), device=x_adv.device)
        for role in ("reference", "surrogate"):
            cams = [helper for r, helper in helpers if r == role]
            for helper in cams:
                maps, outputs = helper(x_adv, score_fn, create_graph=True)
                if maps.shape[1:] != pattern.shape:
                    maps = F.interpolate(maps[:, None], size=tuple(pattern.shape), mode="bilinear", align_corners=False)[:, 0]
                if role == "reference":
                    inside = (normalise_maps(maps, "max") * pattern).sum(dim=(1, 2)) / pattern.sum()
                    term = self.beta * inside
                else:
                    term = self.gamma * self._sam_loss(maps, pattern)
                if self.occlusion > 0:
                    sign = 1.0 if role == "reference" else -1.0
                    term = term + sign * self.occlusion * self._occlusion_value(helper.model, task, x_adv, outputs, cond, pattern)
                total = total + term / len(cams)
        return total

    def _occlusion_value(self, model, task, x_adv, outputs, cond, pattern) -> torch.Tensor:
        """The black-box value (``bb_score``, on the current sample) as a differentiable function of the input."""
        mask = self.input_mask(pattern, tuple(x_adv.shape[-2:]))
        masked = x_adv * (1 - mask) + self.fill * mask
        before = task.score_deployed(task.deployed(outputs), cond)
        after = task.score_deployed(task.deployed(model(masked)), cond)
        return _bb_change(self.bb_score, before, after)

    def _select(
        self, fingerprints: FingerprintSet, task: Task, model, surrogates: Sequence, references: Sequence
    ) -> tuple[FingerprintSet, dict[str, float]]:
        """Keep the ``n`` samples with the largest conferrability margin (see ``pool`` and ``select_anchor``), in
        candidate order."""
        pirated = self._mean_values(list(surrogates) or [model], fingerprints, task)
        if self.select_anchor == "target_and_surrogates" and surrogates:
            pirated = tuple(torch.minimum(t, s) for t, s in zip(self._mean_values([model], fingerprints, task), pirated))
        margins = [p - r for p, r in zip(pirated, self._mean_values(references, fingerprints, task))]
        ranks = [m.argsort().argsort().float() for m in margins]  # 0 = smallest margin
        margin = {"white_box": margins[0], "black_box": margins[1], "both": (ranks[0] + ranks[1]) / 2}[self.select]
        keep = margin.topk(self.n).indices.sort().values
        tensors = {k: (v if k == "pattern" else v[keep]) for k, v in fingerprints.tensors.items()}
        stats = {
            f"selection_{mode}_margin_{part}": float(m[index].mean())
            for mode, m in zip(("wb", "bb"), margins)
            for part, index in (("pool", slice(None)), ("kept", keep))
        }
        return replace(fingerprints, tensors=tensors), stats

    def _kept_share(self, model, fingerprints: FingerprintSet, task: Task) -> float:
        """Share of samples whose target output is kept (an independent re-check of label invariance)."""
        device = device_of(model)
        pairs = fingerprints.tensors.get("pairs")
        with torch.no_grad():
            cond = task.condition_on(model, fingerprints.labels, pairs)
            original = model(fingerprints.tensors["originals"].to(device))
            outputs = model(fingerprints.samples.to(device))
        return float(task.kept(outputs, original, cond, tolerance=fingerprints.config.get("tolerance")).float().mean())

    # ------------------------------------------------------------------------------------------------ thresholds
    def _derive_thresholds(
        self, model, fingerprints: FingerprintSet, task: Task, calibration: Sequence, anchors: Sequence = ()
    ) -> tuple[dict, dict, dict]:
        """t_wb and t_bb: on the target the way the paper sets them, or against the calibration models (see the
        class docstring). Returns the thresholds, the per-sample ones as tensors (``t_white_box``/``t_black_box``,
        only for ``"per_sample"``; the thresholds then hold their mean) and statistics. ``anchors``: models whose mean
        values replace the target's on the pirated side of calibrated thresholds (``threshold_anchor``)."""
        access = WhiteBox(model)
        originals = replace(fingerprints, tensors={**fingerprints.tensors, "samples": fingerprints.tensors["originals"]})
        wb_fp = self._white_box_values(access, fingerprints)
        wb_orig = self._white_box_values(access, originals)
        bb_fp = self._black_box_values(access.black_box(task), fingerprints)
        bb_orig = self._black_box_values(access.black_box(task), originals)
        stats = {
            "target_wb_value_originals": float(wb_orig.mean()),
            "target_wb_value_fingerprints": float(wb_fp.mean()),
            "target_bb_change_originals": float(bb_orig.mean()),
            "target_bb_change_fingerprints": float(bb_fp.mean()),
        }
        thresholds = {
            "white_box": float(torch.cat([wb_orig, wb_fp]).mean()),
            "black_box": float(bb_orig.mean() if self.bb_threshold == "originals" else torch.cat([bb_orig, bb_fp]).mean()),
        }
        per_sample: dict[str, torch.Tensor] = {}
        if calibration:
            # What an innocent model shows on each fingerprint (the calibration models' mean), and what a pirated one
            # shows: the target's values, or the surrogates' mean when the thresholds are anchored on them.
            wb_null, bb_null = self._mean_values(calibration, fingerprints, task)
            stats.update(calibration_wb_value_fingerprints=float(wb_null.mean()), calibration_bb_change_fingerprints=float(bb_null.mean()))
            if anchors:
                wb_fp, bb_fp = self._mean_values(anchors, fingerprints, task)
                stats.update(anchor_wb_value_fingerprints=float(wb_fp.mean()), anchor_bb_change_fingerprints=float(bb_fp.mean()))
            for mode, rule, pirated, null in (("white_box", self.wb_threshold, wb_fp, wb_null), ("black_box", self.bb_threshold, bb_fp, bb_null)):
                midway = (pirated + null) / 2
                if rule in CALIBRATED:
                    thresholds[mode] = float(midway.mean())
                if rule == "per_sample":
                    per_sample[f"t_{mode}"] = midway.cpu()
        return thresholds, per_sample, stats

    def _mean_values(self, models: Sequence, fingerprints: FingerprintSet, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: the models' mean white-box value and mean black-box value on the fingerprints."""
        accesses = [WhiteBox(m) for m in models]
        white = torch.stack([self._white_box_values(a, fingerprints) for a in accesses]).mean(dim=0)
        black = torch.stack([self._black_box_values(a.black_box(task), fingerprints) for a in accesses]).mean(dim=0)
        return white, black

    # ------------------------------------------------------------------------------------------------ verification
    def verify(self, access: Access, fingerprints: FingerprintSet, *, mode: str | None = None) -> VerificationResult:
        """Matching score of a suspect (eq. 5 in white-box mode, eq. 6 in black-box mode).

        The generation-bound settings (pattern, layer, Grad-CAM score, fill) are read from the fingerprint set, so
        any ``SaliencyFingerprint`` verifies any set it made; this object's ``t_wb``/``t_bb`` override the stored
        thresholds when given.

        Args:
            access: :class:`WhiteBox` (both modes) or :class:`BlackBox` (black-box only).
            fingerprints: a set made by this scheme.
            mode: ``"white-box"`` or ``"black-box"``; the strongest the access allows when None.

        Returns:
            The verification result; in black-box mode ``queries`` is exactly 2N (4N with ``bb_score="diff"``;
            N more for pair tasks).
        """
        if fingerprints.scheme != self.name:
            raise InputError(f"a {fingerprints.scheme!r} fingerprint set cannot be verified by the {self.name!r} scheme")
        mode = self.require(access, mode)
        start = time.perf_counter()
        task = fingerprints.task_adapter()
        fingerprints = rows_read_by(fingerprints, mode)
        if mode == WHITE_BOX:
            assert isinstance(access, WhiteBox)
            values = self._white_box_values(access, fingerprints)
            threshold = self._threshold(fingerprints, "white_box", self.t_wb)
            queries = 0
        else:
            box = access if isinstance(access, BlackBox) else access.black_box(task)  # type: ignore[union-attr]
            before = box.queries
            values = self._black_box_values(box, fingerprints)
            threshold = self._threshold(fingerprints, "black_box", self.t_bb)
            queries = box.queries - before
        per_sample = torch.as_tensor(threshold).float().expand(len(values))  # one number, or one per sample read
        return VerificationResult(
            scheme=self.name,
            mode=mode,
            matching_score=float((values >= per_sample).float().mean()),
            n_samples=len(values),
            queries=queries,
            threshold=float(per_sample.mean()),
            values=values.tolist(),
            elapsed_s=time.perf_counter() - start,
            thresholds=per_sample.tolist(),
        )

    @staticmethod
    def _threshold(fingerprints: FingerprintSet, mode: str, fixed: float | None) -> float | torch.Tensor:
        """The fixed threshold when given, else the set's per-sample thresholds when it has them, else its one."""
        if fixed is not None:
            return fixed
        return fingerprints.tensors.get(f"t_{mode}", fingerprints.thresholds[mode])

    def saliency_maps(self, access: WhiteBox, fingerprints: FingerprintSet) -> torch.Tensor:
        """The suspect's Grad-CAM maps that white-box verification reads, one per sample of ``fingerprints``.

        Args:
            access: the suspect, white-box.
            fingerprints: the samples to read (all rows of the set given; see :meth:`verify` for one mode's rows).

        Returns:
            Max-normalised maps, samples x the pattern's grid (a suspect with another grid is resampled to it), on
            the CPU.
        """
        model, task, config = access.model, fingerprints.task_adapter(), fingerprints.config
        device = device_of(model)
        samples = fingerprints.samples
        check_input_shape(model, samples)
        if isinstance(model, ImageModel) and model.spec.num_outputs > 0:
            _check_outputs(task, (model.spec.num_outputs,), fingerprints, "the suspect model")
        grid = tuple(fingerprints.tensors["pattern"].shape)
        layer = access.layer or _suspect_layer(model, config.get("layer"), samples[:1].to(device))
        maps = []
        with GradCAM(model, layer) as cam:
            for start in range(0, len(samples), self.batch_size):
                x = samples[start : start + self.batch_size].to(device)
                rows = slice(start, start + len(x))
                cond = task.condition_on(model, fingerprints.labels[rows], _rows(fingerprints.tensors.get("pairs"), rows))
                batch, _ = cam(x, lambda o: task.score(o, cond, logit=bool(config.get("cam_logit", True))))
                if batch.shape[1:] != grid:
                    # A suspect of another architecture may have another grid: compare on the pattern's grid.
                    batch = F.interpolate(batch[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
                maps.append(normalise_maps(batch.detach(), "max").cpu())
        return torch.cat(maps)

    def _white_box_values(self, access: WhiteBox, fingerprints: FingerprintSet) -> torch.Tensor:
        """Per sample: mean of the max-normalised saliency map on P (the left side of eq. 5)."""
        pattern = fingerprints.tensors["pattern"].cpu()
        return (self.saliency_maps(access, fingerprints) * pattern).sum(dim=(1, 2)) / pattern.sum()

    def _black_box_values(self, box: BlackBox, fingerprints: FingerprintSet) -> torch.Tensor:
        """Per sample: the left side of eq. 6, |F_c(x_mask) - F_c(x)|, or its ``bb_score`` variant, from 2 queries
        per sample (4 for ``"diff"``, which also sends the original and its masked copy)."""
        task = fingerprints.task_adapter()
        how = fingerprints.config.get("bb_score", "abs")
        samples = fingerprints.samples
        mask = self.input_mask(fingerprints.tensors["pattern"], tuple(samples.shape[-2:]))
        fill = float(fingerprints.config.get("fill", 0.0))
        sent = [samples, fingerprints.tensors["originals"]] if how == "diff" else [samples]
        sent = [part for x in sent for part in (x, x * (1 - mask) + fill * mask)]
        pair_outputs = box.predict(fingerprints.tensors["pairs"]) if task.needs_pairs else None
        outputs = box.predict(torch.cat(sent))
        _check_outputs(task, tuple(outputs.shape[1:]), fingerprints, box.describe())  # one line, not an index error
        cond = task.condition_from(fingerprints.labels, pair_outputs)
        n = len(samples)
        scores = [task.score_deployed(outputs[i * n : (i + 1) * n], cond) for i in range(len(sent))]
        values = _bb_change(how, scores[0], scores[1])
        if how == "diff":
            values = values - _bb_change("abs", scores[2], scores[3])
        return values


def _bb_change(how: str, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """How far masking moved F_c: on the score itself, or on its log (``"log"``)."""
    if how == "log":
        return (after.clamp_min(1e-12).log() - before.clamp_min(1e-12).log()).abs()
    return (after - before).abs()


def rows_read_by(fingerprints: FingerprintSet, mode: str) -> FingerprintSet:
    """The samples that ``mode``'s verification reads: all of them, or one group of a set made with
    ``black_box_settings`` (whose ``mode`` tensor marks each row with :data:`MODE_CODE`)."""
    if "mode" not in fingerprints.tensors:
        return fingerprints
    keep = fingerprints.tensors["mode"] == MODE_CODE[mode]
    return replace(fingerprints, tensors={k: (v if k == "pattern" else v[keep]) for k, v in fingerprints.tensors.items()})


def _settings_items(settings: Any) -> tuple[tuple[str, Any], ...]:
    """A mapping of settings (or its JSON form, a list of pairs) as sorted, hashable pairs."""
    pairs = settings.items() if isinstance(settings, dict) else settings
    try:
        return tuple(sorted((str(k), _hashable(v)) for k, v in pairs))
    except (TypeError, ValueError):
        raise InputError(f"black_box_settings must map setting names to values, got {settings!r}") from None


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


def _check_outputs(task: Task, shape: tuple[int, ...], fingerprints: FingerprintSet, who: str) -> None:
    """One clear line when a suspect's outputs (``shape`` per image) cannot be read with this set, e.g. 3 classes for 10."""
    arch_kwargs = fingerprints.target.get("arch_kwargs") if isinstance(fingerprints.target, dict) else None
    expected = arch_kwargs.get("num_outputs") if isinstance(arch_kwargs, dict) else None
    expected = expected if isinstance(expected, int) and not isinstance(expected, bool) and expected > 0 else None
    task.check_output_shape(shape, fingerprints.labels, num_outputs=expected, who=who)


def _rows(tensor: torch.Tensor | None, index) -> torch.Tensor | None:
    return None if tensor is None else tensor[index]


def _correct(task: Task, outputs: torch.Tensor, condition: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which originals may become fingerprints: for classification, those the target classifies right."""
    if isinstance(task, Classification):
        return outputs.argmax(dim=1) == labels.long()
    return torch.ones(len(outputs), dtype=torch.bool, device=outputs.device)


def _suspect_layer(model: torch.nn.Module, stored: str | None, example: torch.Tensor) -> str:
    """The Grad-CAM layer of a suspect: the target's layer name when the suspect has it, else its own last one."""
    if stored and stored in dict(model.named_modules()):
        return stored
    return find_cam_layer(model, example)
