"""The saliency-map fingerprint (Zhang, Pan, Zhang 2024): label-keeping samples whose Grad-CAM lights up a region.

Generation moves the target's Grad-CAM saliency onto a background region P of the saliency grid (eq. 3-4) with a
perturbation of at most ``xi``, while keeping the prediction. A pirated copy inherits that trace; an independent
model does not. White-box verification reads the suspect's saliency on P (eq. 5); black-box verification masks P
and measures how much F_c moves, with 2 queries per sample (eq. 6).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ...access import WHITE_BOX, Access, BlackBox, WhiteBox
from ...errors import InputError
from ...tasks import Classification, Task
from ..base import FingerprintSet, VerificationResult
from ..checks import Layout
from ..shared import check_task_fits
from .checks import check_saliency_layout, check_saliency_values
from .configurations import MODE_CODE
from .generation import generate_group, join_groups
from .objective import input_mask, pattern_mask
from .readout import black_box_values, rows_read_by, saliency_maps, white_box_values
from .settings import SaliencySettings


@dataclass(frozen=True, kw_only=True)
class SaliencyFingerprint(SaliencySettings):
    __doc__ = SaliencySettings.__doc__

    name: ClassVar[str] = "saliency"

    @classmethod
    def paper(cls, **overrides: Any) -> "SaliencyFingerprint":
        """The paper-faithful configuration (see :data:`.configurations.PAPER`), with optional overrides."""
        return cls.named("paper", **overrides)  # type: ignore[return-value]

    @classmethod
    def check_layout(cls, layout: Layout, task: str) -> int:
        """The generic layout, and the tensors verification reads: ``originals``, ``pattern``, ``pairs`` (similarity),
        ``mode`` and the per-sample thresholds (see :mod:`.checks`)."""
        n = super().check_layout(layout, task)
        check_saliency_layout(layout, n, task)
        return n

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "SaliencyFingerprint":
        """The generic checks, then P, the mode codes, the sample count and every threshold within the range of the
        values it is compared with (see :mod:`.checks`)."""
        scheme = super().validate(fingerprints)
        check_saliency_values(fingerprints, MODE_CODE)
        return scheme  # type: ignore[return-value]

    def pattern_mask(self, grid: tuple[int, int]) -> torch.Tensor:
        """P as a float mask on a saliency grid of shape ``grid``."""
        return pattern_mask(self.pattern, grid)

    input_mask = staticmethod(input_mask)

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
        """Generate N fingerprint samples of ``model`` from candidate images (2N with ``black_box_settings``).

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
            references: the owner's independently trained models, for the uniqueness penalty (``beta``), the
                occlusion term and pool selection.
            surrogates: the owner's own pirated copies, for the robustness reward (``gamma``), the occlusion term,
                pool selection and surrogate-anchored thresholds.
            calibration: the owner's independently trained models that the calibrated thresholds (``"calibration"``,
                ``"per_sample"``) are read on; never used by the objective.
            progress: show a progress bar.

        Returns:
            The fingerprint set, with thresholds derived on the target (and the calibration models).
        """
        task, _ = check_task_fits(self.name, self.tasks, model, images, labels, task)  # a task that fits the target
        self._check_helpers(task, references, surrogates, calibration)
        made = []
        for group in self.groups():
            helpers = {"references": references, "surrogates": surrogates, "calibration": calibration}
            if self.black_box_settings is not None:  # each group gets the helper models its own settings read
                helpers = {role: models if role in group.reads() else () for role, models in helpers.items()}
            made.append(generate_group(group, model, images, labels, task, pairs=pairs, progress=progress, **helpers))
        if len(made) == 1:
            return made[0]
        return join_groups(*made, self.settings()["black_box_settings"], self.n)

    def _check_helpers(self, task: Task, references: Sequence, surrogates: Sequence, calibration: Sequence) -> None:
        """:meth:`check_helpers` on the models given to :meth:`generate`, and the black-box score against the task."""
        self.check_helpers(len(references), len(surrogates), len(calibration))
        if any(g.bb_score == "log" for g in self.groups()) and not isinstance(task, Classification):
            raise InputError(f"bb_score='log' needs a probability: use 'abs' or 'diff' for the {task.name} task")
        if any(g.cam_direction != "value" for g in self.groups()) and isinstance(task, Classification):
            raise InputError("cam_direction='dominant' reads an output either way round; classification reads the label's evidence: use 'value'")

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
            The verification result over the rows the mode reads, with one threshold per value; in black-box mode
            ``queries`` is exactly 2N (4N with ``bb_score="diff"``; N more for pair tasks).
        """
        self.check_set(fingerprints)  # this scheme's, and content that fits it (in memory too)
        mode = self.require(access, mode)
        start = time.perf_counter()
        task = fingerprints.task_adapter()
        fingerprints = rows_read_by(fingerprints, mode)
        if mode == WHITE_BOX:
            assert isinstance(access, WhiteBox)
            values = white_box_values(access, fingerprints, batch_size=self.batch_size)
            threshold = self._threshold(fingerprints, "white_box", self.t_wb)
            queries = 0
        else:
            box = access if isinstance(access, BlackBox) else access.black_box(task)  # type: ignore[union-attr]
            before = box.queries
            values = black_box_values(box, fingerprints)
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
        """The suspect's Grad-CAM maps that white-box verification reads (see :func:`.readout.saliency_maps`)."""
        return saliency_maps(access, fingerprints, batch_size=self.batch_size)
