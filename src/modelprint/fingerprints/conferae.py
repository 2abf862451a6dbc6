"""ConferAE: conferrable adversarial examples (Lukas, Zhang, Kerschbaum, ICLR 2021).

An adversarial example of the target is *conferrable* when its adversarial label transfers to the target's pirated
copies but not to independently trained models. Generation reads the owner's helper models: distilled copies of the
target (*surrogates*, standing for the thief's) and independently trained models (*references*, standing for the
innocent). It optimises correctly classified images inside an L-inf ball towards a high conferrability score of the
conferrable ensemble E(x)_c = mean_S S(x)_c * (1 - mean_R R(x)_c), and keeps a sample only when the target's label
moved and E at that label reaches ``tau``. A suspect is scored by the share of samples on which its top-1 label is the
target's: labels suffice, so black-box verification works against a labels-only API (N queries), and white-box
verification reads the same labels from the weights (0 queries, the same score). The choice of the defaults and the
figures behind them: docs/baselines.md, "ConferAE".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..access import BLACK_BOX, LABELS, WHITE_BOX, Access
from ..checks import floats_as_floats, rules, setting_types
from ..data import check_images
from ..errors import InputError
from ..metrics import psnr
from ..models import device_of
from ..tasks import Classification, Task
from . import checks
from .base import FingerprintScheme, FingerprintSet, VerificationResult, check_input_shape, helper_hashes, target_identity
from .shared import check_task_fits, label_agreement, right_candidates
from .checks import Layout
from .optimise import ProjectedGradient

#: The owner's helper models the default configuration reads: the references and surrogates that the saliency
#: scheme's ``owner`` configuration reads too (so one set of helper models serves both schemes).
OWNER_MODELS = {"references": 8, "surrogates": 4}

#: A sample's value is 1 when the suspect's label is the stored one, else 0; it matches at this threshold.
THRESHOLD = 0.5


@dataclass(frozen=True, kw_only=True)
class ConferAE(FingerprintScheme):
    """Conferrable adversarial examples: settings of generation (verification has none).

    Args:
        n: number of fingerprint samples N.
        eps: L-inf radius of the perturbation (pixels in [0, 1]).
        steps: most optimiser steps per batch of candidates (the loop ends early once every sample of the batch
            qualifies).
        lr: the step size (``optimiser="sign"``: the PGD step) or Adam's learning rate; None: ``eps / 4``.
        optimiser: ``"sign"`` (PGD) or ``"adam"``, both the shared projected-gradient loop.
        keep_p: probability that a helper model takes part in one step's ensemble (members randomly dropped, at
            least one per group kept); 1 keeps them all.
        tau: a sample is kept only when the full ensemble's E at the target's new label reaches it (which implies
            max_c E_c >= tau).
        a: weight of H(1, E(x')_y'), the conferrability of the adversarial label y' (the target's most probable
            class other than the original: its new label once it moved).
        b: weight of -H(M(x0), M(x')), which moves the target off its original label.
        c: weight of H(M(x'), mean_S S(x')), which keeps the surrogates agreeing with the target.
        candidates: how many correctly classified candidates are optimised at most per sample wanted
            (``ceil(candidates * n)`` in all).
        min_fraction: when fewer than ``n`` candidates qualify, the set keeps those that did if they are at least
            ``ceil(min_fraction * n)`` (the count is ``stats["kept"]``); fewer raise :class:`InputError`.
        batch_size: candidates optimised together.
        seed: seeds the order of the candidates and the dropped members.
    """

    name: ClassVar[str] = "conferae"
    modes: ClassVar[tuple[str, ...]] = (WHITE_BOX, BLACK_BOX)
    # Only top-1 labels are read: white-box reads them from the weights (0 queries), black-box from any API (N).
    needs: ClassVar[Mapping[str, str]] = {WHITE_BOX: WHITE_BOX, BLACK_BOX: LABELS}
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    configurations: ClassVar[Mapping[str, Mapping[str, Any]]] = {"default": {}}
    owner_models: ClassVar[Mapping[str, Mapping[str, int]]] = {"default": OWNER_MODELS}

    n: int = 100
    eps: float = 0.1
    steps: int = 50
    lr: float | None = None
    optimiser: str = "sign"
    keep_p: float = 0.7
    tau: float = 0.6
    a: float = 1.0
    b: float = 1.0
    c: float = 1.0
    candidates: float = 6.0
    min_fraction: float = 0.5
    batch_size: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        setting_types(self)  # a type or a NaN/infinite number named in one line, before the ranges below
        checks: list[tuple[bool, str]] = [
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (0 < self.eps <= 1, f"eps must lie in (0, 1], got {self.eps}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.optimiser in ("sign", "adam"), f"optimiser must be 'sign' or 'adam', got {self.optimiser!r}"),
            (0 < self.keep_p <= 1, f"keep_p must lie in (0, 1], got {self.keep_p}"),
            (0 < self.tau < 1, f"tau must lie in (0, 1), got {self.tau}"),
            (min(self.a, self.b, self.c) >= 0, f"a, b and c must be >= 0, got {self.a}, {self.b}, {self.c}"),
            (self.candidates >= 1, f"candidates must be >= 1, got {self.candidates}"),
            (0 < self.min_fraction <= 1, f"min_fraction must lie in (0, 1], got {self.min_fraction}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
        ]
        rules(checks)
        floats_as_floats(self)

    @property
    def step_size(self) -> float:
        """The optimiser's step: ``lr``, or ``eps / 4`` when None."""
        return self.lr if self.lr is not None else self.eps / 4

    def reads(self) -> tuple[str, ...]:
        """The owner's helper models every configuration of this scheme reads."""
        return ("references", "surrogates")

    def check_helpers(self, references: int = 0, surrogates: int = 0, calibration: int = 0) -> None:
        """At least one reference and one surrogate model; no calibration models (nothing here reads them).

        Raises:
            InputError: naming the missing or unused models.
        """
        missing = [role for role, count in (("references", references), ("surrogates", surrogates)) if count < 1]
        if missing:
            raise InputError(f"the conferae scheme needs the owner's {' and '.join(missing)} (generate(..., references=[...], surrogates=[...]))")
        if calibration:
            raise InputError("the conferae scheme reads no calibration models, but calibration models were given")

    # ------------------------------------------------------------------------------------------------ generation
    def generate(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        task: Task | None = None,
        *,
        pairs: torch.Tensor | None = None,
        references: Sequence[nn.Module] = (),
        surrogates: Sequence[nn.Module] = (),
        calibration: Sequence[nn.Module] = (),
        progress: bool = False,
    ) -> FingerprintSet:
        """Make up to N conferrable adversarial examples of ``model`` from candidate images.

        Args:
            model: the target, taking images in [0, 1] and returning class logits.
            images: candidate images, N' x C x H x W in [0, 1]; those the target classifies right are used, in a
                seeded random order.
            labels: their classes.
            task: classification (the only task this scheme protects); None means classification.
            pairs: not read (pair tasks are not supported); must be None.
            references: the owner's independently trained models (at least one).
            surrogates: the owner's distilled copies of the target (at least one).
            calibration: not read; must be empty.
            progress: unused (kept for the common signature).

        Returns:
            The set: ``samples``, ``originals``, ``labels`` (the target's label on each sample), ``original_labels``
            and ``conferrability`` (E at the stored label), thresholds 0.5 for both modes.

        Raises:
            InputError: another task, missing or unused helper models, bad images, or too few qualifying samples.
        """
        start = time.perf_counter()
        task = task or Classification()
        if not isinstance(task, Classification) or pairs is not None:
            raise InputError(f"the conferae scheme protects classifiers only, not the {task.name} task")
        self.check_helpers(len(references), len(surrogates), len(calibration))
        check_images(images, what="candidate images")
        if len(labels) != len(images):
            raise InputError(f"{len(images)} candidate images but {len(labels)} labels")
        check_input_shape(model, images)
        check_task_fits(self.name, self.tasks, model, images, labels.long(), task)
        for member in (model, *references, *surrogates):
            member.eval()
        device = device_of(model)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(images), generator=generator)
        eligible = right_candidates(model, images, labels.long(), order)
        limit = min(len(eligible), math.ceil(self.candidates * self.n - 1e-9))
        floor = math.ceil(self.min_fraction * self.n - 1e-9)
        optimiser = ProjectedGradient(steps=self.steps, lr=self.step_size, eps=self.eps, norm="linf", optimiser=self.optimiser)
        kept: list[tuple[int, torch.Tensor, int, float]] = []  # (candidate, sample, target's label, conferrability)
        tried = 0
        while tried < limit and len(kept) < self.n:
            idx = torch.tensor(eligible[tried : min(tried + self.batch_size, limit)])
            tried += len(idx)
            x0 = images[idx].to(device)
            y0 = labels[idx].long().to(device)
            with torch.no_grad():
                p0 = F.softmax(model(x0), dim=1)
            loss = self._loss(model, references, surrogates, p0, y0, generator)
            x = optimiser.run(x0, loss, done=lambda x: self._qualifies(model, references, surrogates, x, y0, lazy=True)[0])
            ok, label, conf = self._qualifies(model, references, surrogates, x, y0)
            kept += [(int(i), x[j].cpu(), int(label[j]), float(conf[j])) for j, i in enumerate(idx.tolist()) if ok[j]]
        if len(kept) < floor:
            raise InputError(
                f"only {len(kept)} of {tried} candidates became conferrable adversarial examples (tau={self.tau:g}, "
                f"eps={self.eps:g}); at least {floor} are needed: give more candidate images, a larger eps or candidates, or a lower tau"
            )
        kept = sorted(kept[: self.n], key=lambda item: item[0])  # by image index
        index = torch.tensor([i for i, *_ in kept])
        samples = torch.stack([x for _, x, *_ in kept])
        originals = images[index].cpu()
        tensors = {
            "samples": samples,
            "originals": originals,
            "labels": torch.tensor([y for *_, y, _ in kept], dtype=torch.int64),
            "original_labels": labels[index].long().cpu(),
            "conferrability": torch.tensor([e for *_, e in kept], dtype=torch.float32),
        }
        quality = psnr(originals, samples)
        return FingerprintSet(
            scheme=self.name,
            config={**self.settings(), **helper_hashes(references=references, surrogates=surrogates)},
            task=task.to_config(),
            tensors=tensors,
            thresholds={"white_box": THRESHOLD, "black_box": THRESHOLD},
            target=target_identity(model),
            stats={
                "kept": len(kept),
                "tried": tried,
                "eligible": len(eligible),
                "conferrability_mean": float(tensors["conferrability"].mean()),
                "psnr_db_mean": float(quality.mean()),
                "psnr_db_min": float(quality.min()),
                "linf_max": float((samples - originals).abs().max()),
                "reference_models": len(references),
                "surrogate_models": len(surrogates),
                "generation_s": time.perf_counter() - start,
            },
        )

    def _loss(self, model: nn.Module, references: Sequence[nn.Module], surrogates: Sequence[nn.Module], p0: torch.Tensor, y0: torch.Tensor, generator: torch.Generator):
        """The per-sample loss a*H(1, E(x')_y') - b*H(M(x0), M(x')) + c*H(M(x'), mean_S S(x')), with members dropped
        afresh at every call."""
        original = F.one_hot(y0, p0.shape[1]).bool()

        def loss(x: torch.Tensor) -> torch.Tensor:
            p = F.softmax(model(x), dim=1)
            s_mean = _mean_probs(_dropped(surrogates, self.keep_p, generator), x)
            e = s_mean * (1 - _mean_probs(_dropped(references, self.keep_p, generator), x))
            adversarial = p.detach().masked_fill(original, -1.0).argmax(dim=1, keepdim=True)  # y'
            confer = -e.gather(1, adversarial).squeeze(1).clamp_min(1e-12).log()
            away = -(p0 * p.clamp(1e-7, 1.0).log()).sum(dim=1)
            agree = -(p * s_mean.clamp_min(1e-12).log()).sum(dim=1)
            return self.a * confer - self.b * away + self.c * agree

        return loss

    def _qualifies(self, model: nn.Module, references: Sequence[nn.Module], surrogates: Sequence[nn.Module], x: torch.Tensor, y0: torch.Tensor, *, lazy: bool = False):
        """Per sample, with every member: (label moved and E at the target's label >= tau, the target's label, that E).
        ``lazy``: skip the ensemble (E = 0) while some label has not moved, as the early stop needs all to qualify."""
        with torch.no_grad():
            label = model(x).argmax(dim=1)
            moved = label != y0
            if lazy and not bool(moved.all()):
                return moved & False, label, torch.zeros(len(x), device=x.device)
            e = conferrable_ensemble(x, surrogates, references).gather(1, label[:, None]).squeeze(1)
        return moved & (e >= self.tau), label, e

    # ------------------------------------------------------------------------------------------------ verification
    def verify(self, access: Access, fingerprints: FingerprintSet, *, mode: str | None = None) -> VerificationResult:
        """Agreement of the suspect's top-1 labels with the stored labels.

        Args:
            access: :class:`WhiteBox` (both modes) or :class:`BlackBox` (black-box; labels-only APIs included).
            fingerprints: a set made by this scheme.
            mode: ``"white-box"`` (labels read from the weights, 0 queries) or ``"black-box"`` (N queries); the
                strongest the access allows when None. Both give the same score.

        Returns:
            Per sample the value 1.0 (same label) or 0.0, each compared with the threshold 0.5; the matching score is
            the agreement.
        """
        self.check_set(fingerprints)  # this scheme's, and content that fits it (in memory too)
        return label_agreement(self, access, fingerprints, self.require(access, mode))

    # ------------------------------------------------------------------------------------------------ set checks
    @classmethod
    def check_layout(cls, layout: Layout, task: str) -> int:
        """The generic layout, and ``originals`` (as ``samples``), ``original_labels`` (N integers) and
        ``conferrability`` (N floats)."""
        n = super().check_layout(layout, task)
        shape = layout["samples"][1]
        checks.require(layout, "originals", kind="float", shape=shape, why="the images the samples were made from")
        checks.require(layout, "original_labels", kind="integer", ndim=1, rows=n, why="the originals' classes")
        checks.require(layout, "conferrability", kind="float", ndim=1, rows=n, why="E at each stored label")
        return n

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "ConferAE":
        """The generic checks, then originals in [0, 1], conferrability and thresholds in [0, 1]."""
        scheme = super().validate(fingerprints)
        checks.check_images(fingerprints.tensors["originals"], "originals")
        checks.check_finite(fingerprints.tensors["conferrability"], "conferrability", low=0.0, high=1.0)
        for key, value in fingerprints.thresholds.items():
            checks.check_number(value, f"the {key} threshold", low=0.0, high=1.0)
        return scheme  # type: ignore[return-value]


def conferrable_ensemble(
    x: torch.Tensor,
    surrogates: Sequence[nn.Module],
    references: Sequence[nn.Module],
    *,
    keep_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """E(x)_c = mean_S S(x)_c * (1 - mean_R R(x)_c), over the members' softmax outputs.

    Args:
        x: images, N x C x H x W.
        surrogates, references: the helper models (logits out).
        keep_p: probability that each member takes part (1: all of them); at least one per group always does.
        generator: draws the dropped members.

    Returns:
        N x classes, differentiable in ``x``.
    """
    s_mean = _mean_probs(_dropped(surrogates, keep_p, generator), x)
    return s_mean * (1 - _mean_probs(_dropped(references, keep_p, generator), x))


def _dropped(models: Sequence[nn.Module], keep_p: float, generator: torch.Generator | None) -> list[nn.Module]:
    """Each member kept with probability ``keep_p``; one drawn at random when none was."""
    if keep_p >= 1:
        return list(models)
    mask = torch.rand(len(models), generator=generator) < keep_p
    if not bool(mask.any()):
        mask[int(torch.randint(len(models), (1,), generator=generator))] = True
    return [m for m, keep in zip(models, mask.tolist()) if keep]


def _mean_probs(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([F.softmax(m(x), dim=1) for m in models]).mean(dim=0)
