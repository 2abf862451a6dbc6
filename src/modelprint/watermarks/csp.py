"""CSP: a customised, keyed perturbation of the answers a deployed classifier returns, which students distilled or
extracted from those answers inherit (after Chien and Shen, 2022, "Customized Watermarking for Deep Neural Networks
via Label Distribution Perturbation"; no code was published: this design and its measurements are
docs/watermarks.md's).

**Perturbation** (:class:`modelprint.answers.KeyedSignal`, attached to the host by :meth:`CSP.attach`; the weights
are not changed, nothing is trained): every class j but the answer's top-1 gets ``amplitude * cos(2 pi f_j u_j(x) +
phi_j)`` added to its log-probability, ``u_j`` the image's standardised projection on a secret direction ``w_j``.
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
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..access import BLACK_BOX, LABELS, Access
from ..answers import KeyedSignal
from ..checks import number, setting_types
from ..data import ImageDataset
from ..errors import InputError, IntegrityError
from ..fingerprints import checks
from ..fingerprints.base import VerificationResult, target_identity
from ..fingerprints.shared import suspect_outputs
from ..models import ImageModel, state_sha256, with_answers, without_answers
from ..tasks import Classification
from ..train import predict
from .base import WatermarkKey, WatermarkScheme

#: The key's tensors that define the perturbation (the post-processor's buffers).
SIGNAL_TENSORS = ("directions", "centre", "spread", "frequency", "phase")


@dataclass(frozen=True, kw_only=True)
class CSP(WatermarkScheme):
    """The keyed answer perturbation and its exact phase test (see the module docstring).

    Args:
        amplitude: the signal's amplitude in log-probability (nats).
        margin: in (0, 1): a raised class stays below ``margin`` times its gap to the top-1 (every top-1 kept).
        grid: the lattice of the secret directions.
        min_frequency, max_frequency: the range of the signals' frequencies, in cycles per standard deviation of
            the owner's images' projections.
        inputs: key images (verification queries), drawn from the owner's held-out images.
        clip: residuals are clipped to this many nats (one wild answer cannot dominate a sum).
        alpha: the false-positive level of the verdict the key records.
        seed: draws the directions, frequencies, phases and key images.
    """

    name: ClassVar[str] = "csp"
    modes: ClassVar[tuple[str, ...]] = (BLACK_BOX,)
    needs: ClassVar[dict[str, str]] = {BLACK_BOX: LABELS}

    amplitude: float = 0.1
    margin: float = 0.5
    grid: int = 4
    min_frequency: float = 0.2
    max_frequency: float = 0.5
    inputs: int = 1000
    clip: float = 1.0
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        setting_types(self)
        number(self.amplitude, "amplitude", above=0)
        number(self.margin, "margin", above=0, below=1)
        for name in ("grid", "inputs"):
            number(getattr(self, name), name, minimum=1, integer=True)
        number(self.min_frequency, "min_frequency", above=0)
        number(self.max_frequency, "max_frequency", minimum=self.min_frequency)
        number(self.clip, "clip", above=0)
        number(self.alpha, "alpha", above=0, below=1)

    # ------------------------------------------------------------------------------------------------ the signal
    def draw(self, classes: int, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Secret directions, frequencies and phases for ``classes`` signals; centre and spread from ``images``."""
        coarse = torch.randn(classes, images.shape[1], self.grid, self.grid, generator=generator)
        directions = F.interpolate(coarse, size=tuple(images.shape[2:]), mode="bilinear", align_corners=False)
        directions = directions + directions.flip(-1)  # a mirrored image projects as the image
        directions = directions / directions.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
        projected = images.flatten(1).float() @ directions.flatten(1).T
        span = self.max_frequency - self.min_frequency
        return {"directions": directions, "centre": projected.mean(dim=0), "spread": projected.std(dim=0).clamp_min(1e-6),
                "frequency": self.min_frequency + span * torch.rand(classes, generator=generator),
                "phase": 2 * math.pi * torch.rand(classes, generator=generator)}

    def signal(self, key: WatermarkKey) -> KeyedSignal:
        """The post-processor a key defines."""
        directions = key.tensors["directions"]
        module = KeyedSignal(classes=len(directions), shape=tuple(directions.shape[1:]), amplitude=self.amplitude, margin=self.margin)  # type: ignore[arg-type]
        module.load_state_dict({name: key.tensors[name].float() for name in SIGNAL_TENSORS})
        return module

    def attach(self, host: ImageModel, key: WatermarkKey) -> ImageModel:
        """``host`` answering through the key's perturbation (what ``modelprint serve --watermark`` serves).

        Raises:
            InputError: the key marks another model.
        """
        self.check_key(key)
        plain = without_answers(host)
        sha = plain.spec.info.get("sha256") or state_sha256(plain)
        if sha != key.config.get("host_sha256"):
            raise InputError(f"this key perturbs the answers of model {str(key.config.get('host_sha256'))[:12]}..., not of this one ({sha[:12]}...)")
        marked = with_answers(plain, self.signal(key), {"kind": "keyed_signal", "amplitude": self.amplitude, "margin": self.margin})
        marked.spec.info = {**{k: v for k, v in plain.spec.info.items() if k == "data"}, "watermark": self.name, "host_sha256": sha}
        return marked

    # ------------------------------------------------------------------------------------------------ embedding
    def embed(self, host: ImageModel, data: ImageDataset, *, from_scratch: bool = False, epochs: int | None = None,
              progress: bool = False, held_out: ImageDataset | None = None) -> tuple[ImageModel, WatermarkKey]:
        began = time.perf_counter()
        if from_scratch or epochs:
            raise InputError(f"the {self.name} watermark perturbs the answers of the host as it is: nothing is trained (no --from-scratch or --epochs)")
        if host.spec.task != "classification" or host.spec.num_outputs < 2:
            raise InputError(f"the {self.name} watermark marks classifiers of 2 or more classes, not a {host.spec.task} model of {host.spec.num_outputs} outputs")
        plain = without_answers(host)
        sha = plain.spec.info.get("sha256") or state_sha256(plain)
        g = torch.Generator().manual_seed(self.seed)
        drawn = self.draw(plain.spec.num_outputs, data.images, g)
        pool = (held_out if held_out is not None else data).images
        samples = pool[torch.randperm(len(pool), generator=g)[: self.inputs]]
        host_log_p = F.log_softmax(predict(plain, samples).float(), dim=1)
        key = WatermarkKey(
            scheme=self.name,
            config={**self.settings(), "host_sha256": sha},
            task=Classification().to_config(),
            tensors={"samples": samples, "labels": host_log_p.argmax(dim=1), "host_log_p": host_log_p, **drawn},
            thresholds={"black_box": 0.5},
            target=target_identity(plain),  # the marked model's, once it exists
            stats={"classes": plain.spec.num_outputs},
        )
        marked = self.attach(plain, key)
        key.target = target_identity(marked)
        key.stats["embedding_s"] = round(time.perf_counter() - began, 2)
        return marked, key

    # ------------------------------------------------------------------------------------------------ verification
    def verify(self, access: Access, key: WatermarkKey, *, mode: str | None = None) -> VerificationResult:  # type: ignore[override]
        self.check_key(key)
        mode = self.require(access, mode)
        began = time.perf_counter()
        samples, host_log_p = key.samples, key.tensors["host_log_p"].float()
        answers, queries = suspect_outputs(access, mode, samples, Classification())
        top = key.labels.long()
        soft = LABELS not in access.capabilities  # an access answers labels only, or scores (top-k completed, or all)
        if soft:
            if answers.ndim != 2 or answers.shape[1] != host_log_p.shape[1]:
                raise InputError(f"the suspect answered outputs of shape {list(answers.shape[1:])}; the key's host answers {host_log_p.shape[1]} class scores")
            relative = lambda p: p / p.gather(1, top[:, None]).clamp_min(1e-12)  # noqa: E731  (the normalisation cancels)
            residual = (relative(answers.float()) - relative(host_log_p.exp())).clamp(-self.clip, self.clip)
        else:
            labels = answers.long().view(-1)
            residual = F.one_hot(labels.clamp(0, host_log_p.shape[1] - 1), host_log_p.shape[1]).float()
        strength, estimate = fourier_coefficients(residual, top, self.signal(key).angles(samples))
        difference = torch.remainder(estimate - key.tensors["phase"].float() + math.pi, 2 * math.pi) - math.pi
        statistic = float((strength * torch.cos(difference)).sum())
        total = float(strength.sum())
        values = (1 + torch.cos(difference)) / 2
        result = VerificationResult(scheme=self.name, mode=mode, matching_score=0.5 * (1 + statistic / total) if total > 0 else 0.5, n_samples=len(samples),
                                    queries=queries, threshold=0.5, values=values.tolist(), elapsed_s=time.perf_counter() - began)
        result.p_value = phase_randomisation_p_value(strength, statistic)
        result.p_value_method = (f"exact randomisation test ({'soft labels' if soft else 'labels only'}): sum of |c_j| cos(phase estimate - "
                                 f"secret phase) over {len(strength)} classes, against {RANDOMISATIONS} draws of uniform phases (a model that never saw "
                                 "the marked answers answers independently of the secret phases)")
        return result

    def forge(self, key: WatermarkKey, seed: int) -> WatermarkKey:
        """A thief's key of the same shape drawn from ``seed``: other directions, frequencies and phases (their
        centre and spread from the key's own images: the thief does not have the owner's), the same images and the
        host's answers on them (a thief claiming the model reads those from its API)."""
        drawn = self.draw(int(key.stats["classes"]), key.samples, torch.Generator().manual_seed(seed))
        return WatermarkKey(scheme=self.name, config={**key.config, "seed": seed}, task=key.task, tensors={**key.tensors, **drawn},
                            thresholds=dict(key.thresholds), target=dict(key.target), stats=dict(key.stats))

    # ------------------------------------------------------------------------------------------------ key checks
    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """The generic layout, the host's log-probabilities (N x classes) and the signal's tensors (one per class)."""
        n = super().check_layout(layout, task)
        rows = checks.require(layout, "host_log_p", kind="float", ndim=2, rows=n, why="the host's answers on the key images")
        classes = rows[1]
        checks.require(layout, "directions", kind="float", ndim=4, rows=classes, why="one secret direction per class")
        for name in SIGNAL_TENSORS[1:]:
            checks.require(layout, name, kind="float", ndim=1, rows=classes, why="one value per class")
        return n

    @classmethod
    def validate(cls, key: WatermarkKey) -> "CSP":  # type: ignore[override]
        """The generic checks; finite signal tensors, directions of unit norm shaped as the images, positive
        spreads and frequencies, phases in [0, 2 pi), host log-probabilities that are a distribution whose top-1
        is the stored label, and the number of classes the key records."""
        scheme = super().validate(key)
        t = key.tensors
        for name in ("host_log_p", *SIGNAL_TENSORS):
            checks.check_finite(t[name], name)
        if tuple(t["directions"].shape[1:]) != tuple(key.samples.shape[1:]):
            raise IntegrityError(f"tensor 'directions' has shape {list(t['directions'].shape[1:])} per class; the key images are {list(key.samples.shape[1:])}")
        if not torch.allclose(t["directions"].flatten(1).norm(dim=1), torch.ones(len(t["directions"])), atol=1e-4):
            raise IntegrityError("tensor 'directions' must hold directions of unit norm")
        if not bool((t["spread"] > 0).all() and (t["frequency"] > 0).all() and (t["phase"] >= 0).all() and (t["phase"] < 2 * math.pi).all()):
            raise IntegrityError("the signal needs positive spreads and frequencies and phases in [0, 2 pi)")
        log_p = t["host_log_p"].double()
        if bool((log_p > 1e-6).any()) or not torch.allclose(log_p.exp().sum(dim=1), torch.ones(len(log_p), dtype=torch.float64), atol=1e-3):
            raise IntegrityError("tensor 'host_log_p' must hold log-probabilities (each row a distribution)")
        if not torch.equal(log_p.argmax(dim=1), key.labels.long()):
            raise IntegrityError("the key's labels are not the host's top-1 answers stored beside them")
        if key.stats.get("classes") != log_p.shape[1]:
            raise IntegrityError("the key does not record the number of classes its host answers")
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
    mask = torch.ones_like(residual).scatter(1, top[:, None], 0.0)
    count = mask.sum(dim=0).clamp_min(1)
    centred = (residual - (residual * mask).sum(dim=0) / count) * mask
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
