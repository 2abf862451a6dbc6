"""USP: one perturbation of the answers a deployed classifier returns, learned for its host and paired with the
detector that reads it in a suspect's answers (after Chien and Shen, 2022, "Customized Watermarking for Deep Neural
Networks via Label Distribution Perturbation": "a detector paired with the model to be watermarked"; no code was
published: this design and its measurements are docs/watermarks.md's).

**Perturbation** (:class:`modelprint.answers.LearnedSignal`; the host's weights are not changed): one map of the
image for every class, ``t(x) = tanh(W v(x) + b)``, ``v`` the image averaged over a ``grid`` x ``grid`` lattice and
mirrored, gives class j (every class but the answer's top-1) ``amplitude * (1 + s_j t_j(x)) / 2`` of probability,
``s_j`` a secret sign; capped below the top-1, so every top-1 label is the host's.

**Paired detector** (learned with the perturbation, at embedding): the detector correlates a suspect's residuals
with ``t``: ``T_j = sum_i e_ij t_ij`` (both centred over the key images whose host top-1 is not j), and
``statistic = sum_j s_j T_j``. The map and the detector are one set of weights, learned jointly on the owner's
images and the host's answers to make the detector's signal-to-noise ratio large: a student that copied the
perturbation has residuals ``e_ij`` proportional to ``s_j t_ij``, which give ``T_j`` of size ``sum_i t_ij^2``, while
a model that did not answers with residuals of the size of the host's own uncertainty, so the objective per class
is ``sum_i t_ij^2 / sqrt(sum_i t_ij^2 rho_ij^2)``, ``rho_ij`` the host's ``p_j / p_top`` (plus a floor). The
pre-activations are standardised (the map's slope is fixed: a student learns a smooth map), so the learning chooses
where the perturbation varies, not how steeply; ``steps=0`` keeps the random map it starts from (the ablation).

**Decision**, exact: the signs are drawn uniformly after the map is learned, from nothing a model without the
marked answers could know; given its ``T_j``, the statistic of such a model is distributed as ``sum_j S_j T_j``
with S_j independent uniform signs, and the p-value counts the 2^classes sign vectors that reach the observed
statistic (:func:`sign_flip_p_value`; its floor is 2^-classes: a 10-class model reaches 0.001, a 2-class model
never goes below 0.25, where CSP's continuous phases serve better). No assumption on the suspect's outputs enters it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from ..answers import LearnedSignal, pooled
from ..checks import number
from ..errors import IntegrityError
from ..fingerprints import checks
from .answer_marks import AnswerWatermark, centred_residuals
from .base import WatermarkKey

#: The key's tensors that define the perturbation (the post-processor's buffers).
PATTERN_TENSORS = ("centre", "spread", "weight", "bias", "sign")
#: The host's ``p_j / p_top`` below this floor counts as this floor in the detector's noise (a confident answer is
#: not noiseless).
NOISE_FLOOR = 0.01


@dataclass(frozen=True, kw_only=True)
class USP(AnswerWatermark):
    """The learned answer perturbation, its paired detector and their exact sign test (see the module docstring).

    Args:
        amplitude, margin, grid, inputs, clip, alpha: as :class:`~.answer_marks.AnswerWatermark` (``grid``: the
            lattice of the image features the map reads).
        steps: Adam steps of the joint learning (0: the random map it starts from).
        learning_rate: of those steps.
        fit_images: the owner's training images the learning reads (at most).
        seed: draws the map's start, the signs and the key images.
    """

    name: ClassVar[str] = "usp"
    kind: ClassVar[str] = "learned_signal"
    tensor_names: ClassVar[tuple[str, ...]] = PATTERN_TENSORS

    steps: int = 300
    learning_rate: float = 0.05
    fit_images: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        number(self.steps, "steps", minimum=0, integer=True)
        number(self.learning_rate, "learning_rate", above=0)
        number(self.fit_images, "fit_images", minimum=2, integer=True)

    # ------------------------------------------------------------------------------------------------ the map
    def draw(self, classes: int, images: torch.Tensor, answers: Callable[[torch.Tensor], torch.Tensor],
             generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The map learned on (at most ``fit_images`` of) ``images`` and the host's answers on them, then the
        secret signs."""
        if len(images) > self.fit_images:
            images = images[torch.randperm(len(images), generator=generator)[: self.fit_images]]
        features = pooled(images, self.grid)
        centre, spread = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
        weight, bias = learn_map((features - centre) / spread, answers(images).float(), steps=self.steps,
                                 learning_rate=self.learning_rate, generator=generator)
        sign = (2 * torch.randint(0, 2, (classes,), generator=generator) - 1).float()
        return {"centre": centre, "spread": spread, "weight": weight, "bias": bias, "sign": sign}

    def perturbation(self, key: WatermarkKey) -> LearnedSignal:
        module = LearnedSignal(classes=len(key.tensors["sign"]), shape=tuple(key.samples.shape[1:]), amplitude=self.amplitude,  # type: ignore[arg-type]
                               margin=self.margin, grid=self.grid)
        module.load_state_dict({name: key.tensors[name].float() for name in PATTERN_TENSORS})
        return module

    def answer_settings(self) -> dict:
        return {**super().answer_settings(), "grid": self.grid}

    # ------------------------------------------------------------------------------------------------ the detector
    def decide(self, residual: torch.Tensor, top: torch.Tensor, key: WatermarkKey) -> tuple[float, list[float], float, str]:
        correlation = detector(residual, top, self.perturbation(key).pattern(key.samples))
        signed = key.tensors["sign"].double() * correlation
        statistic, total = float(signed.sum()), float(correlation.abs().sum())
        method = (f"exact sign test: sum of s_j T_j over {len(correlation)} classes (T_j the residuals' correlation with the learned map), "
                  f"against all {2 ** len(correlation) if len(correlation) <= EXACT_CLASSES else RANDOMISATIONS} sign vectors "
                  f"{'' if len(correlation) <= EXACT_CLASSES else 'drawn '}(a model that never saw the marked answers answers independently of the secret signs)")
        return (0.5 * (1 + statistic / total) if total > 0 else 0.5, ((1 + torch.sign(signed)) / 2).tolist(),
                sign_flip_p_value(correlation, statistic), method)

    # ------------------------------------------------------------------------------------------------ key checks
    @classmethod
    def check_tensors(cls, layout: checks.Layout, classes: int) -> None:
        """The map's tensors: features of one size, one row and one sign per class."""
        features = checks.require(layout, "centre", kind="float", ndim=1, why="the features' centre")[0]
        checks.require(layout, "spread", kind="float", shape=(features,), why="the features' spread")
        checks.require(layout, "weight", kind="float", shape=(classes, features), why="the map: one row of feature weights per class")
        for name in ("bias", "sign"):
            checks.require(layout, name, kind="float", shape=(classes,), why="one value per class")

    @classmethod
    def validate(cls, key: WatermarkKey) -> "USP":  # type: ignore[override]
        """The answer watermarks' checks; features of the size the images and the grid give, positive spreads,
        signs of +1 or -1."""
        scheme = super().validate(key)
        t = key.tensors
        expected = key.samples.shape[1] * scheme.grid * scheme.grid
        if scheme.grid > min(key.samples.shape[2:]) or t["centre"].shape[0] != expected:
            raise IntegrityError(f"the map reads {t['centre'].shape[0]} features; images of {key.samples.shape[1]} channels on a "
                                 f"{scheme.grid} x {scheme.grid} lattice give {expected}")
        if not bool((t["spread"] > 0).all()):
            raise IntegrityError("the map needs positive feature spreads")
        if not bool((t["sign"].abs() == 1).all()):
            raise IntegrityError("tensor 'sign' must hold signs (+1 or -1)")
        return scheme  # type: ignore[return-value]


def learn_map(features: torch.Tensor, log_p: torch.Tensor, *, steps: int, learning_rate: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The map ``t = tanh(features @ weight.T + bias)`` that makes the paired detector's signal-to-noise ratio large
    on these images (see the module docstring); the pre-activations standardised on them.

    Args:
        features: N x F, standardised.
        log_p: N x classes, the host's log-probabilities on the same images.
        steps, learning_rate: Adam's (0 steps: the random start).
        generator: draws the start.

    Returns:
        ``weight`` (classes x F) and ``bias`` (classes), the standardisation folded in.
    """
    p = log_p.exp()
    top = p.argmax(dim=1)
    mask = torch.ones_like(p).scatter(1, top[:, None], 0.0)
    noise_scale = (p / p.gather(1, top[:, None])).clamp_min(NOISE_FLOOR) ** 2 * mask
    direction = torch.randn(p.shape[1], features.shape[1], generator=generator) / math.sqrt(features.shape[1])
    offset = torch.zeros(p.shape[1])
    direction.requires_grad_(True)
    offset.requires_grad_(True)
    optimiser = torch.optim.Adam([direction, offset], lr=learning_rate)

    def standardised() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = features @ direction.T
        return (z - z.mean(dim=0)) / z.std(dim=0).clamp_min(1e-12), z.mean(dim=0), z.std(dim=0).clamp_min(1e-12)

    for _ in range(steps):
        z, _, _ = standardised()
        t = centred_residuals(torch.tanh(z + offset), top)
        signal = (t * t).sum(dim=0)
        ratio = signal / ((t * t) * noise_scale).sum(dim=0).clamp_min(1e-12).sqrt()
        optimiser.zero_grad()
        (-ratio.mean()).backward()
        optimiser.step()
    with torch.no_grad():
        _, mean, std = standardised()
        return (direction / std[:, None]).detach().clone(), (offset - mean / std).detach().clone()


def detector(residual: torch.Tensor, top: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``T_j = sum_i e_ij t_ij`` per class, residuals and map both centred over the images whose host top-1 is not
    j (float64)."""
    return (centred_residuals(residual.double(), top) * centred_residuals(pattern.double(), top)).sum(dim=0)


#: Up to this many classes the sign test enumerates every sign vector; above, it draws RANDOMISATIONS of them.
EXACT_CLASSES = 16
RANDOMISATIONS = 100_000


def sign_flip_p_value(values: torch.Tensor, statistic: float, *, seed: int = 0) -> float:
    """The exact p-value of ``statistic = sum_j s_j values_j`` for secret uniform signs independent of ``values``:
    the share of sign vectors whose sum reaches it (all 2^len of them up to :data:`EXACT_CLASSES`; beyond,
    ``(1 + #{draws reaching it}) / (1 + draws)``, valid for any number of draws)."""
    values = values.double()
    tolerance = 1e-9 * float(values.abs().sum())
    if float(values.abs().sum()) == 0.0:
        return 1.0
    if len(values) <= EXACT_CLASSES:
        codes = torch.arange(2 ** len(values))
        signs = ((codes[:, None] >> torch.arange(len(values))) & 1).double() * 2 - 1
        return float(((signs @ values) >= statistic - tolerance).double().mean())
    generator, above = torch.Generator().manual_seed(seed), 0
    for start in range(0, RANDOMISATIONS, 10_000):
        signs = torch.randint(0, 2, (min(10_000, RANDOMISATIONS - start), len(values)), generator=generator).double() * 2 - 1
        above += int(((signs @ values) >= statistic - tolerance).sum())
    return (1 + above) / (1 + RANDOMISATIONS)
