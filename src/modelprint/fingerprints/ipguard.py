"""IPGuard (Cao, Jia, Gong, AsiaCCS 2021): data points just across the target's classification boundary.

Each fingerprint starts from a candidate image the target classifies right (class i) and is optimised on the
target's logits z until a target class j leads i by a margin k while i stays second:
``ReLU(z_i - z_j + k) + ReLU(z_t - z_i)`` with t the best class other than i and j (:func:`boundary_loss`). The
point then sits just across the i/j boundary, where a pirated copy is likely to answer as the target did and an
independently trained model is likely not to. A set stores each sample with the target's top-1 label on it; a
suspect's score is the share of samples whose top-1 label it answers the same (the *matching rate*). Top-1 labels
are all it needs, so a labels-only API can be verified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..access import BLACK_BOX, LABELS, WHITE_BOX, Access
from ..checks import floats_as_floats, rules, setting_types
from ..errors import InputError
from ..metrics import psnr
from ..models import device_of
from ..tasks import Task
from . import checks
from .base import FingerprintScheme, FingerprintSet, VerificationResult, target_identity
from .shared import check_classifier, check_match_thresholds, label_agreement, right_candidates
from .optimise import Loss, ProjectedGradient

#: How the target class j is chosen (see :attr:`IPGuard.target_class`).
TARGET_CLASSES = ("least_likely", "random")

#: A sample has reached the boundary when its loss is at most this (logit units): the margin holds up to float error.
REACHED = 1e-4

#: The threshold of every per-sample value (1.0 match, 0.0 mismatch) and of the matching rate's modes.
MATCH_THRESHOLD = 0.5


def boundary_loss(logits: torch.Tensor, source: torch.Tensor, target: torch.Tensor, k: float) -> torch.Tensor:
    """IPGuard's loss per sample: ``ReLU(z_i - z_j + k) + ReLU(z_t - z_i)``, t the best class other than i and j.

    It is zero exactly when the target class j leads the source class i by at least ``k`` and i is second (no
    other class above it). With two classes only the first term is used.

    Args:
        logits: N x C logits z of the target (C >= 2).
        source: N source classes i.
        target: N target classes j (each other than its i).
        k: the logit margin.

    Returns:
        N losses, differentiable with respect to ``logits`` (t is chosen on detached logits).
    """
    z_i = logits.gather(1, source.view(-1, 1))[:, 0]
    z_j = logits.gather(1, target.view(-1, 1))[:, 0]
    loss = F.relu(z_i - z_j + k)
    if logits.shape[1] > 2:
        others = logits.detach().clone()
        others.scatter_(1, source.view(-1, 1), float("-inf"))
        others.scatter_(1, target.view(-1, 1), float("-inf"))
        z_t = logits.gather(1, others.argmax(dim=1, keepdim=True))[:, 0]
        loss = loss + F.relu(z_t - z_i)
    return loss


class _Holding(ProjectedGradient):
    """The shared optimiser, holding each sample at its first iterate whose loss reached ~0 (Adam's momentum would
    otherwise carry a finished sample on, away from the boundary, while the rest of its batch is optimised)."""

    _held: torch.Tensor | None = None
    _reached: torch.Tensor | None = None

    def project(self, x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        x = super().project(x, start)
        return x if self._held is None else torch.where(self._reached, self._held, x)  # type: ignore[arg-type]

    def run_holding(self, start: torch.Tensor, loss: Loss) -> tuple[torch.Tensor, int]:
        """Optimise until every sample reached the boundary (or ``steps`` ran out).

        Returns:
            The samples and the number of steps taken.
        """
        self._held, self._reached = start.detach().clone(), torch.zeros(len(start), 1, 1, 1, dtype=torch.bool, device=start.device)
        taken = 0

        def tracked(x: torch.Tensor) -> torch.Tensor:
            nonlocal taken
            taken += 1
            values = loss(x)
            now = (values.detach() <= REACHED).view(-1, 1, 1, 1) & ~self._reached  # type: ignore[operator]
            self._held = torch.where(now, x.detach(), self._held)  # type: ignore[arg-type]
            self._reached = self._reached | now  # type: ignore[operator]
            return values

        try:
            x = self.run(start, tracked, done=lambda _: self._reached.view(-1))  # type: ignore[union-attr]
        finally:
            self._held = self._reached = None
        return x, taken


@dataclass(frozen=True, kw_only=True)
class IPGuard(FingerprintScheme):
    """IPGuard: boundary points labelled by the target, scored by the matching rate of top-1 labels.

    Both modes compute the same matching rate: white-box verification reads the suspect model's own top-1 labels
    (0 queries), black-box verification asks an API for them (exactly N queries; an API that answers labels only is
    enough). Each per-sample value is 1.0 (match) or 0.0, compared with the threshold 0.5.

    Samples that do not reach the boundary within ``steps`` are kept, as both public implementations keep them
    (replacing them would favour candidates that are easy to move); their label is still the target's top-1 on the
    final sample, so the target scores 1.0 on its own set; ``stats["unreached"]`` counts them.

    Args:
        n: number of fingerprint samples N.
        k: the logit margin by which the target class must lead the source class (> 0); in logit units, so it must
            suit the model's logit scale. The public implementations use 5 and 0.01. Default 5 with ``lr`` 1e-3
            (one implementation's pair): the best ARUC measured on the CIFAR-10 paper zoo, see docs/baselines.md.
        lr: Adam's learning rate on the pixels (in [0, 1]); 1e-2 in the other implementation.
        steps: most optimiser steps per batch; a batch ends earlier once every sample reached the boundary.
        target_class: ``"least_likely"`` (the class of the smallest logit on the start image) or ``"random"`` (a
            seeded random class other than the source class).
        seed: seeds the order of the candidates and the random target classes.
        batch_size: samples optimised together.
    """

    name: ClassVar[str] = "ipguard"
    modes: ClassVar[tuple[str, ...]] = (WHITE_BOX, BLACK_BOX)
    # the matching rate reads top-1 labels only: a white-box model's own, or an API's answers
    needs: ClassVar[Mapping[str, str]] = {WHITE_BOX: WHITE_BOX, BLACK_BOX: LABELS}
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    n: int = 100
    k: float = 5.0
    lr: float = 0.001
    steps: int = 1000
    target_class: str = "least_likely"
    seed: int = 0
    batch_size: int = 100

    def __post_init__(self) -> None:
        setting_types(self)
        checks: list[tuple[bool, str]] = [
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (self.k > 0, f"k must be > 0 (a logit margin), got {self.k}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.target_class in TARGET_CLASSES, f"target_class must be one of {', '.join(TARGET_CLASSES)}, got {self.target_class!r}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
        ]
        rules(checks)
        floats_as_floats(self)

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
        """Make N boundary points of ``model`` from the first N candidates (in a seeded random order) it classifies right.

        Args:
            model: the target classifier, taking images in [0, 1] and returning logits.
            images: candidate images, N' x C x H x W in [0, 1].
            labels: their classes.
            task: classification (None means classification).
            pairs: unused (classification has no pair images); accepted so that every scheme takes the same call.
            references, surrogates, calibration: the owner's helper models: IPGuard reads none and refuses any.
            progress: show a progress bar over the batches.

        Returns:
            The set: ``samples``, their ``originals`` and ``labels`` (the target's top-1 label on each sample),
            thresholds 0.5 for both modes, and stats (``reached``, ``label_changed``, ``unreached``, PSNR, ...).

        Raises:
            InputError: another task, bad images or labels, or fewer than N candidates the target classifies right.
        """
        began = time.perf_counter()
        task, _ = check_classifier(self.name, model, images, labels, task)
        self.check_helpers(len(references), len(surrogates), len(calibration))
        device = device_of(model)
        generator = torch.Generator().manual_seed(self.seed)
        chosen = self._candidates(model, images, labels, torch.randperm(len(images), generator=generator))

        samples, sources, steps = [], [], []
        for begin in tqdm(range(0, self.n, self.batch_size), desc="ipguard", disable=not progress, leave=False):
            idx = chosen[begin : begin + self.batch_size]
            start = images[idx].to(device)
            with torch.no_grad():
                logits = model(start)
            source = logits.argmax(dim=1)
            target = self._target_classes(logits, source, generator)
            optimiser = _Holding(steps=self.steps, lr=self.lr, eps=None)
            x, taken = optimiser.run_holding(start, lambda x: boundary_loss(model(x), source, target, self.k))
            samples.append(x.cpu())
            sources.append(torch.stack([source, target]).cpu())
            steps.append(taken)
        samples_t = torch.cat(samples)
        source_t, target_t = torch.cat(sources, dim=1)
        with torch.no_grad():
            final = torch.cat([model(samples_t[b : b + self.batch_size].to(device)).cpu() for b in range(0, self.n, self.batch_size)])
        stored = final.argmax(dim=1)
        reached = boundary_loss(final, source_t, target_t, self.k) <= REACHED
        originals = images[chosen].cpu()
        return FingerprintSet(
            scheme=self.name,
            config=self.settings(),
            task=task.to_config(),
            tensors={"samples": samples_t, "originals": originals, "labels": stored},
            thresholds={WHITE_BOX.replace("-", "_"): MATCH_THRESHOLD, BLACK_BOX.replace("-", "_"): MATCH_THRESHOLD},
            target=target_identity(model),
            stats={
                "reached": float(reached.float().mean()),
                "unreached": int((~reached).sum()),
                "label_changed": float((stored != source_t).float().mean()),
                "target_class_kept": float((stored == target_t).float().mean()),
                "steps_max": max(steps),
                "psnr_db_mean": float(psnr(originals, samples_t).mean()),
                "linf_max": float((samples_t - originals).abs().max()),
                "generation_s": time.perf_counter() - began,
            },
        )

    def _candidates(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """The first N candidate indices, in ``order``, that the target classifies right."""
        kept = right_candidates(model, images, labels, order, limit=self.n)
        if len(kept) < self.n:
            raise InputError(f"only {len(kept)} candidate images are classified right by the target, {self.n} are needed")
        return torch.tensor(kept)

    def _target_classes(self, logits: torch.Tensor, source: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """j per sample: the least likely class, or a seeded random class other than the source."""
        if self.target_class == "least_likely":
            return logits.argmin(dim=1)
        classes = logits.shape[1]
        offset = torch.randint(1, classes, (len(source),), generator=generator).to(source.device)
        return (source + offset) % classes

    # ------------------------------------------------------------------------------------------------ verification
    def verify(self, access: Access, fingerprints: FingerprintSet, *, mode: str | None = None) -> VerificationResult:
        """The matching rate: the share of samples whose suspect top-1 label equals the stored label.

        Args:
            access: :class:`WhiteBox` (both modes; black-box mode reads its black-box view) or :class:`BlackBox`
                (black-box only; scores or labels only).
            fingerprints: a set made by this scheme.
            mode: ``"white-box"`` or ``"black-box"``; the strongest the access allows when None.

        Returns:
            Per sample 1.0 (match) or 0.0 against the threshold 0.5; ``queries`` is N in black-box mode, 0 white-box.
        """
        self.check_set(fingerprints)  # this scheme's, and content that fits it (in memory too)
        return label_agreement(self, access, fingerprints, self.require(access, mode))

    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """The generic layout and ``originals``, the starting images (float, shaped as the samples)."""
        n = super().check_layout(layout, task)
        checks.require(layout, "originals", kind="float", shape=layout["samples"][1], why="the starting images")
        return n

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "IPGuard":
        """The generic checks, originals in [0, 1] and thresholds in (0, 1] (the values compared are 0 or 1)."""
        scheme = super().validate(fingerprints)
        checks.check_images(fingerprints.tensors["originals"], "originals")
        check_match_thresholds(fingerprints)
        return scheme  # type: ignore[return-value]
