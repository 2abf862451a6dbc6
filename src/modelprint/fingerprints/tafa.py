"""TAFA (Pan, Zhang, Lu, Yang, ESORICS 2021): a task-agnostic fingerprint from the target's linear regions.

A network of ReLU-like activations (ReLU, leaky ReLU, PReLU, max-pooling; batch normalisation in eval mode) is
piecewise affine: inside one *linear region* of its input space its outputs are an affine function of the input, so
on a segment inside one region the outputs at the midpoint are exactly the mean of those at its ends. Where the
segment crosses region boundaries the outputs bend, and how they bend -- the *bend vector* ``(g(m) - (g(x) +
g(x')) / 2) / ||g(x') - g(x)||`` of outputs g at the ends x, x' and the midpoint m -- is set by where the boundaries
lie and how the slopes change across them: a characteristic of the target's regions around the segment, read from
outputs only (3 queries a pair), for any task.

What the sources leave open, and the choices made here (figures: docs/comparison.md):

- **The pairs.** x is seeded uniform noise (``start="noise"``: no data needed) or a given image
  (``start="images"``), the direction a seeded random unit vector whose every value moves toward 0.5 (a random
  direction would meet the edge of [0, 1] within about 0.02 in L2 from a noise start, at its values nearest 0 or 1), and
  x' the nearest point along it at which the target's outputs bend by ``bend`` (bisection in float64). The regions
  of the networks measured are far narrower than float32 can resolve (a ResNet-18's first boundary lies about 1e-4
  away in L2 along a random direction), so a pair spans a run of the target's regions rather than one.
- **The statistic.** Per pair, the distance of the suspect's bend vector from the target's, and the threshold, from
  the target alone, half the length of the target's: a suspect matches when it bends along the segment as the
  target does, give or take half. A suspect that stays affine there, or bends another way, does not.
- **Outputs.** Made piecewise affine in the network's raw outputs where an API's are not: a classifier's
  probabilities as centred log-probabilities (equal to its centred logits), regression values and embeddings as
  they are.
- **Other activations.** Smooth activations (GELU, SiLU, tanh) bend the outputs everywhere, not at boundaries; the
  statistic reads that curvature the same way (an approximation of the idea, not the idea): nothing is refused.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..access import BLACK_BOX, SCORES, WHITE_BOX, Access
from ..checks import floats_as_floats, rules, setting_types
from ..data import check_images
from ..errors import InputError, IntegrityError
from ..models import device_of
from ..tasks import Classification, Task
from . import checks
from .base import FingerprintScheme, FingerprintSet, VerificationResult, check_input_shape, target_identity
from .shared import check_task_fits, starting_points, suspect_outputs

#: Where pairs start.
STARTS = ("noise", "images")

#: Bisection steps of the segment search (2^-30 of the longest segment).
BISECTIONS = 30


def affine_outputs(task: Task, outputs: torch.Tensor, *, deployed: bool) -> torch.Tensor:
    """Outputs made piecewise affine in the network's raw outputs, N x K (float64): a classifier's centred
    log-probabilities (from an API's probabilities, ``deployed=True``, or from a model's logits, where they equal
    the centred logits), values and embeddings as they are."""
    flat = outputs.reshape(len(outputs), -1).double()
    if isinstance(task, Classification):
        logp = flat.clamp_min(1e-300).log() if deployed else flat.log_softmax(dim=1)
        return logp - logp.mean(dim=1, keepdim=True)
    return flat if deployed else task.deployed(flat).reshape(len(flat), -1)


def bend(a: torch.Tensor, b: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    """How the outputs bend along a segment: ``(mid - (a + b) / 2) / ||b - a||`` per row (outputs at x, x' and the
    midpoint), N x K; 0 for an affine map."""
    return (mid - (a + b) / 2) / (b - a).norm(dim=1, keepdim=True).clamp_min(1e-300)


def midpoint_residual(a: torch.Tensor, b: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    """``||mid - (a + b) / 2|| / ||b - a||`` per row: the size of :func:`bend`; 0 for an affine map."""
    return bend(a, b, mid).norm(dim=1)


@dataclass(frozen=True, kw_only=True)
class TAFA(FingerprintScheme):
    """TAFA: pairs across the target's linear regions, scored by how many a suspect bends along as the target does.

    Both modes read the same statistic from outputs (white-box: the model's own, 0 queries; black-box: an API's
    scores, 3 queries a pair). Per-sample values are the distances of the suspect's bend vectors from the target's,
    each matched when at most its pair's threshold (see the module's description).

    Args:
        n: number of pairs N.
        start: ``"noise"`` or ``"images"`` (the candidate images given to :meth:`generate`, in a seeded order).
        bend: how far the target's outputs bend along a pair (the length of its bend vector), which sets the
            pair's length: larger spans more regions. Where no point of the segment bends that far, x' is where it
            meets the edge of [0, 1]. Default 0.3: on the CIFAR-10 paper zoo copies kept more of the bends with
            longer pairs (0.01, 0.05, 0.2, 0.3, 0.45 measured; docs/comparison.md).
        seed: seeds the starts, the order of the images and the directions.
        batch_size: pairs searched together.
    """

    name: ClassVar[str] = "tafa"
    modes: ClassVar[tuple[str, ...]] = (WHITE_BOX, BLACK_BOX)
    needs: ClassVar[Mapping[str, str]] = {WHITE_BOX: WHITE_BOX, BLACK_BOX: SCORES}
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "similarity")
    configurations: ClassVar[Mapping[str, Mapping[str, object]]] = {"default": {}, "images": {"start": "images"}}

    n: int = 100
    start: str = "noise"
    bend: float = 0.3
    seed: int = 0
    batch_size: int = 100

    def __post_init__(self) -> None:
        setting_types(self)
        rules([
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (self.start in STARTS, f"start must be one of {', '.join(STARTS)}, got {self.start!r}"),
            (self.bend > 0, f"bend must be > 0, got {self.bend}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
        ])
        floats_as_floats(self)

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
        """Make N pairs across the target's linear regions.

        Args:
            model: the target (any task), images in [0, 1].
            images: candidate images: the starts with ``start="images"``, else only their shape is read.
            labels: their labels (unused: the set stores the target's own answer on each x).
            task: the task (None means classification).
            pairs, references, surrogates, calibration: unused; TAFA reads no helper models and refuses any.
            progress: a progress bar over the batches.

        Returns:
            The set: ``samples`` (x), ``partners`` (x'), ``labels`` (the target's top-1 class, or its first output,
            on x) and per-sample thresholds ``t_white_box`` = ``t_black_box``; stats of the segments.

        Raises:
            InputError: bad images, or fewer than N with ``start="images"``.
        """
        began = time.perf_counter()
        task, _ = check_task_fits(self.name, self.tasks, model, images, None, task)  # labels unused: stores its own answers
        self.check_helpers(len(references), len(surrogates), len(calibration))
        check_images(images, what="candidate images")
        model = model.eval()
        device = device_of(model)
        check_input_shape(model, images)
        exact = copy.deepcopy(model).double()  # the region search needs float64: a boundary's kink can be tiny
        generator = torch.Generator().manual_seed(self.seed)
        starts = starting_points(self.start, self.n, images, generator, dtype=torch.float64)
        directions = torch.randn(starts.shape, generator=generator, dtype=torch.float64)

        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        for begin in tqdm(range(0, self.n, self.batch_size), desc=self.name, disable=not progress, leave=False):
            x = starts[begin : begin + self.batch_size].to(device)
            d = directions[begin : begin + self.batch_size].to(device)
            parts.append(self._pairs(exact, task, x, d))
        samples, partners = (torch.cat(p).float().cpu() for p in zip(*parts))
        # The set stores what the target answers on the float32 pair that verification sends (the search ran in float64).
        outputs = self._outputs(model, samples, partners)
        bends = bend(*(affine_outputs(task, o, deployed=False) for o in outputs)).float()
        threshold = bends.norm(dim=1) / 2
        answers = outputs[0]  # the target's raw outputs on x
        labels_out = answers.argmax(dim=1) if isinstance(task, Classification) else answers.reshape(len(answers), -1)[:, 0].float()
        length = (partners - samples).flatten(1).norm(dim=1)
        return FingerprintSet(
            scheme=self.name,
            config=self.settings(),
            task=task.to_config(),
            tensors={"samples": samples, "partners": partners, "bends": bends, "labels": labels_out,
                     "t_white_box": threshold, "t_black_box": threshold.clone()},
            thresholds={WHITE_BOX.replace("-", "_"): float(threshold.mean()), BLACK_BOX.replace("-", "_"): float(threshold.mean())},
            target=target_identity(model),
            stats={
                "pair_l2_mean": float(length.mean()),
                "pair_l2_min": float(length.min()),
                "bend_mean": float(bends.norm(dim=1).mean()),
                "unbent_pairs": int((bends.norm(dim=1) == 0).sum()),
                "generation_s": time.perf_counter() - began,
            },
        )

    def _pairs(self, exact: torch.nn.Module, task: Task, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x and x' for starts ``x`` and directions ``d``: x' the point along ``d`` where the target (in float64)
        bends by ``bend``, found by bisection (or the edge of [0, 1], when it never bends that much)."""
        d = torch.where(x < 0.5, d.abs(), -d.abs())  # each value moves toward the middle: the segment has room
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        room = torch.where(d > 0, (1 - x) / d, torch.where(d < 0, -x / d, torch.full_like(x, float("inf"))))
        longest = room.flatten(1).min(dim=1).values

        def bent(length: torch.Tensor) -> torch.Tensor:
            step = d * length.view(-1, 1, 1, 1)
            return midpoint_residual(*self._affine(exact, task, x, x + step, x + step / 2))

        low, high = torch.zeros_like(longest), longest.clone()
        for _ in range(BISECTIONS):
            mid = (low + high) / 2
            short = bent(mid) < self.bend
            low, high = torch.where(short, mid, low), torch.where(short, high, mid)
        return x, (x + d * high.view(-1, 1, 1, 1)).clamp(0.0, 1.0)

    @staticmethod
    def _affine(model: torch.nn.Module, task: Task, *points: torch.Tensor) -> list[torch.Tensor]:
        """The model's piecewise-affine outputs (:func:`affine_outputs`) at each batch of ``points``."""
        with torch.no_grad():
            out = model(torch.cat(points))
        return list(affine_outputs(task, out, deployed=False).chunk(len(points)))

    @staticmethod
    def _outputs(model: torch.nn.Module, samples: torch.Tensor, partners: torch.Tensor) -> list[torch.Tensor]:
        """The model's raw outputs at the samples, the partners and the midpoints (on the CPU)."""
        device = device_of(model)
        with torch.no_grad():
            return [model(p.to(device)).cpu() for p in (samples, partners, (samples + partners) / 2)]

    def verify(self, access: Access, fingerprints: FingerprintSet, *, mode: str | None = None) -> VerificationResult:
        """The share of pairs whose midpoint residual, in the suspect's outputs, is at most the pair's threshold.

        Args:
            access: :class:`WhiteBox` (both modes) or :class:`BlackBox` with scores (black-box; labels are not enough).
            fingerprints: a set made by this scheme.
            mode: ``"white-box"`` or ``"black-box"``; the strongest the access allows when None.

        Returns:
            Per pair the distance of the suspect's bend vector from the target's, and the pair's threshold;
            ``queries`` 3N in black-box mode (x, x' and the midpoint), 0 white-box.
        """
        self.check_set(fingerprints)  # this scheme's, and content that fits it (in memory too)
        mode = self.require(access, mode)
        began = time.perf_counter()
        task = fingerprints.task_adapter()
        samples, partners = fingerprints.samples, fingerprints.tensors["partners"]
        answers, queries = suspect_outputs(access, mode, torch.cat([samples, partners, (samples + partners) / 2]), task)
        bends = bend(*affine_outputs(task, answers, deployed=mode != WHITE_BOX).chunk(3)).float()
        if bends.shape != fingerprints.tensors["bends"].shape:
            raise InputError(f"the suspect answers {bends.shape[1]} values per image; the set's target answered {fingerprints.tensors['bends'].shape[1]}")
        values = (bends - fingerprints.tensors["bends"].float()).norm(dim=1)
        thresholds = fingerprints.tensors[f"t_{mode.replace('-', '_')}"].float()
        return VerificationResult(
            scheme=self.name, mode=mode, matching_score=float((values <= thresholds).float().mean()), n_samples=len(values),
            queries=queries, threshold=float(thresholds.mean()), values=values.tolist(), elapsed_s=time.perf_counter() - began,
            thresholds=thresholds.tolist(),
        )

    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """The generic layout, ``partners`` shaped as the samples, the target's bend vectors (N x K) and one threshold
        per pair for each mode."""
        n = super().check_layout(layout, task)
        checks.require(layout, "partners", kind="float", shape=layout["samples"][1], why="the second point of each pair")
        outputs = checks.require(layout, "bends", kind="float", ndim=2, rows=n, why="the target's bend vector on each pair")[1]
        if (task == "classification" and outputs < 2) or (task == "regression" and outputs != 1):
            raise IntegrityError(f"tensor 'bends' reads {outputs} output(s) per image, which a {task} target never answers")
        for name in ("t_white_box", "t_black_box"):
            checks.require(layout, name, kind="float", ndim=1, rows=n, why="each pair's threshold")
        return n

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "TAFA":
        """The generic checks, partners in [0, 1], finite bend vectors and finite, non-negative per-pair thresholds."""
        scheme = super().validate(fingerprints)
        checks.check_images(fingerprints.tensors["partners"], "partners")
        checks.check_finite(fingerprints.tensors["bends"], "bends")
        outputs = checks.num_classes(fingerprints.target)
        if outputs is not None and fingerprints.tensors["bends"].shape[1] != outputs:
            raise IntegrityError(f"tensor 'bends' reads {fingerprints.tensors['bends'].shape[1]} outputs per image; the set's target answers {outputs}")
        for name in ("t_white_box", "t_black_box"):
            checks.check_finite(fingerprints.tensors[name], name, low=0.0)
        return scheme  # type: ignore[return-value]
