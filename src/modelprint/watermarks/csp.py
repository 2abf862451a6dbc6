"""CSP: a customised, keyed perturbation of the answers a deployed classifier returns, which students distilled or
extracted from those answers inherit (after Chien and Shen, 2022, "Customized Watermarking for Deep Neural Networks
via Label Distribution Perturbation"; no code was published: this design and its measurements are
docs/watermarks.md's).

**Perturbation** (:class:`modelprint.answers.KeyedSignal`, attached to the host by :meth:`CSP.attach`; the weights
are not changed, nothing is trained): every class j but the answer's top-1 gets ``amplitude * (1 + cos(2 pi f_j
u_j(x) + phi_j)) / 2`` added to its probability, ``u_j`` the image's standardised projection on a secret direction ``w_j``.
The directions are smooth (a ``grid`` x ``grid`` Gaussian lattice, bilinearly enlarged) and mirror-symmetric, so
that a thief's crops and flips of an image keep its phase, and a student can learn the signal as a function of the
image (the periodic signal in the output probabilities of CosWM, AAAI 2022, one per class). A raised class is
capped below the top-1: every top-1 label is the unmarked host's.

**Verification** (black-box; soft labels or labels only, one query per key image): the suspect's answers on the
key's images, compared with the host's (stored in the key): per class j, the residual ``e_ij`` is the change of
``r_j / r_top`` from the host's (soft labels: the API's normalisation cancels), or whether the suspect answers j
where the host answers another class (labels only), centred. Its Fourier coefficient at the key's frequency,
``c_j = sum_i e_ij exp(-i 2 pi f_j u_ij)``, has a phase that estimates ``phi_j``. Statistic:
``sum_j |c_j| cos(estimate_j - phi_j)``; score = ``(1 + statistic / sum_j |c_j|) / 2`` (0.5 by chance, 1 for a
perfect copy of the signal).

**Decision**, exact: a model that never saw the marked answers answers independently of the secret phases, which
are uniform on [0, 2 pi) and independent of everything else; given its coefficients, the statistic is then
distributed as ``sum_j |c_j| cos(U_j)``, U_j independent and uniform, whatever the model answers, and the p-value is
a randomisation test against that law (:func:`phase_randomisation_p_value`). No assumption on the suspect's outputs
(their noise, their spread) enters it. Fisher's combination of the per-class phase tests, measured beside it, had
less power (docs/watermarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from ..answers import KeyedSignal
from ..checks import number
from ..errors import IntegrityError
from ..fingerprints import checks
from .answer_marks import AnswerWatermark, centred_residuals
from .base import WatermarkKey

#: The key's tensors that define the perturbation (the post-processor's buffers).
SIGNAL_TENSORS = ("directions", "centre", "spread", "frequency", "phase")


@dataclass(frozen=True, kw_only=True)
class CSP(AnswerWatermark):
    """The keyed answer perturbation and its exact phase test (see the module docstring).

    Args:
        amplitude, margin, grid, inputs, clip, alpha: as :class:`~.answer_marks.AnswerWatermark` (``grid``: the
            lattice of the secret directions).
        min_frequency, max_frequency: the range of the signals' frequencies, in cycles per standard deviation of
            the owner's images' projections.
        seed: draws the directions, frequencies, phases and key images.
    """

    name: ClassVar[str] = "csp"
    kind: ClassVar[str] = "keyed_signal"
    tensor_names: ClassVar[tuple[str, ...]] = SIGNAL_TENSORS

    min_frequency: float = 0.2
    max_frequency: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        number(self.min_frequency, "min_frequency", above=0)
        number(self.max_frequency, "max_frequency", minimum=self.min_frequency)

    # ------------------------------------------------------------------------------------------------ the signal
    def draw(self, classes: int, images: torch.Tensor, answers: Callable[[torch.Tensor], torch.Tensor],
             generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Secret directions, frequencies and phases for ``classes`` signals; centre and spread from ``images``
        (the host's answers are not read)."""
        coarse = torch.randn(classes, images.shape[1], self.grid, self.grid, generator=generator)
        directions = F.interpolate(coarse, size=tuple(images.shape[2:]), mode="bilinear", align_corners=False)
        directions = directions + directions.flip(-1)  # a mirrored image projects as the image
        directions = directions / directions.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        projected = images.flatten(1).float() @ directions.flatten(1).T
        span = self.max_frequency - self.min_frequency
        return {"directions": directions, "centre": projected.mean(dim=0), "spread": projected.std(dim=0).clamp_min(1e-6),
                "frequency": self.min_frequency + span * torch.rand(classes, generator=generator),
                "phase": 2 * math.pi * torch.rand(classes, generator=generator)}

    def perturbation(self, key: WatermarkKey) -> KeyedSignal:
        directions = key.tensors["directions"]
        module = KeyedSignal(classes=len(directions), shape=tuple(directions.shape[1:]), amplitude=self.amplitude, margin=self.margin)  # type: ignore[arg-type]
        module.load_state_dict({name: key.tensors[name].float() for name in SIGNAL_TENSORS})
        return module

    # ------------------------------------------------------------------------------------------------ verification
    def decide(self, residual: torch.Tensor, top: torch.Tensor, key: WatermarkKey) -> tuple[float, list[float], float, str]:
        strength, estimate = fourier_coefficients(residual, top, self.perturbation(key).angles(key.samples))
        difference = torch.remainder(estimate - key.tensors["phase"].float() + math.pi, 2 * math.pi) - math.pi
        statistic = float((strength * torch.cos(difference)).sum())
        total = float(strength.sum())
        method = (f"exact randomisation test: sum of |c_j| cos(phase estimate - secret phase) over {len(strength)} classes, against "
                  f"{RANDOMISATIONS} draws of uniform phases (a model that never saw the marked answers answers independently of the secret phases)")
        return (0.5 * (1 + statistic / total) if total > 0 else 0.5, ((1 + torch.cos(difference)) / 2).tolist(),
                phase_randomisation_p_value(strength, statistic), method)

    # ------------------------------------------------------------------------------------------------ key checks
    @classmethod
    def check_tensors(cls, layout: checks.Layout, classes: int) -> None:
        """The signal's tensors: one per class."""
        checks.require(layout, "directions", kind="float", ndim=4, rows=classes, why="one secret direction per class")
        for name in SIGNAL_TENSORS[1:]:
            checks.require(layout, name, kind="float", ndim=1, rows=classes, why="one value per class")

    @classmethod
    def validate(cls, key: WatermarkKey) -> "CSP":  # type: ignore[override]
        """The answer watermarks' checks; directions of unit norm shaped as the images, positive spreads and
        frequencies, phases in [0, 2 pi)."""
        scheme = super().validate(key)
        t = key.tensors
        if tuple(t["directions"].shape[1:]) != tuple(key.samples.shape[1:]):
            raise IntegrityError(f"tensor 'directions' has shape {list(t['directions'].shape[1:])} per class; the key images are {list(key.samples.shape[1:])}")
        if not torch.allclose(t["directions"].flatten(1).norm(dim=1), torch.ones(len(t["directions"])), atol=1e-4):
            raise IntegrityError("tensor 'directions' must hold directions of unit norm")
        if not bool((t["spread"] > 0).all() and (t["frequency"] > 0).all() and (t["phase"] >= 0).all() and (t["phase"] < 2 * math.pi).all()):
            raise IntegrityError("the signal needs positive spreads and frequencies and phases in [0, 2 pi)")
        return scheme  # type: ignore[return-value]


#: Draws of the randomisation test: its smallest p-value is 1 / (draws + 1).
RANDOMISATIONS = 100_000


def fourier_coefficients(residual: torch.Tensor, top: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class j, the coefficient ``c_j = sum_i e_ij exp(-i angle_ij)`` of the residual at the signal's frequency,
    over the images whose host top-1 is not j, with ``e`` centred over those images: its size and its phase
    ``atan2(-sum e sin, sum e cos)`` (which estimates the signal's phase).

    Args:
        residual: N x classes, what the suspect answered relative to the host.
        top: N, the host's top-1 class of every image.
        angles: N x classes, ``2 pi f_j u_j(x_i)`` (the key's, without phases).
    """
    centred = centred_residuals(residual, top)
    a, b = (centred.double() * torch.cos(angles.double())).sum(dim=0), (centred.double() * torch.sin(angles.double())).sum(dim=0)
    return torch.sqrt(a * a + b * b).float(), torch.atan2(-b, a).float()


def phase_randomisation_p_value(strength: torch.Tensor, statistic: float, *, draws: int = RANDOMISATIONS, seed: int = 0) -> float:
    """The exact p-value of ``statistic = sum_j |c_j| cos(estimate_j - phase_j)``: a model that never saw the marked
    answers gives coefficients independent of the secret phases, which are uniform, so the statistic is distributed
    as ``sum_j |c_j| cos(U_j)`` with U_j uniform; ``(1 + #{draws >= statistic}) / (1 + draws)`` is a valid p-value
    for any number of draws (the observed phases are one more exchangeable draw)."""
    if float(strength.sum()) == 0.0:
        return 1.0
    generator, above = torch.Generator().manual_seed(seed), 0
    for start in range(0, draws, 10_000):
        phases = 2 * math.pi * torch.rand(min(10_000, draws - start), len(strength), generator=generator, dtype=torch.float64)
        above += int(((strength.double() * torch.cos(phases)).sum(dim=1) >= statistic - 1e-9 * float(strength.sum())).sum())
    return (1 + above) / (1 + draws)
