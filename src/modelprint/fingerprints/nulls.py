"""Null suspects: models that never saw the target, which no fingerprint set (or watermark key) may declare a copy.

A set is *degenerate* when a suspect that cannot be a copy would be declared one under it: its thresholds, labels
or verifier then cannot tell a copy from anything, and every verdict it gives is worthless. Thresholds lowered to 0
and re-hashed are the plain case (every model matches every sample); labels all of one class, a verifier that says
"pirated" to anything, or a key whose binomial null does not hold are others. Validation cannot see them (each
value is in range); running the scheme's own verification on suspects known to be innocent does. The null suspects:

- ``constant``: answers the same output for every image: for classification the class most of the set's labels
  name (the strongest constant against a label read-out), for regression the labels' median value, for similarity
  one fixed unit embedding;
- ``uniform``: the uniform distribution over the classes (classification; similarity: the all-equal embedding);
- ``fresh``: a freshly initialised model of the target's architecture (seeded; when the set records the architecture,
  ``target.arch``/``arch_kwargs``).

Each is examined in black-box mode (an API answering its outputs) and in white-box mode (a network: the fresh model
itself, or a one-convolution network whose output does not depend on its input, so that Grad-CAM reads zero
gradients). A null suspect whose answers the scheme cannot read (a white-box read-out of a layer it lacks) is
reported and skipped: it cannot be declared anything. What "declared a copy" means is the scheme's
(:meth:`~.base.Scheme.declares_copy`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn as nn

from ..access import WHITE_BOX, BlackBox, WhiteBox
from ..errors import CapabilityError, InputError, IntegrityError
from ..tasks import Task

if TYPE_CHECKING:
    from .sets import FingerprintSet

#: Seeds the fresh model's initialisation (the check is deterministic); not a seed anyone trains from (a target
#: initialised from the same seed and never trained would be this very model: then the next seed is taken).
NULL_SEED = 0x6E756C6C

#: The identity of every null suspect's black-box access (never a real suspect: nothing is sent anywhere).
NULL_IDENTITY = {"kind": "null"}

#: Logit of the constant answer's class (its softmax is 1 up to float rounding).
CONSTANT_LOGIT = 30.0


@dataclass(frozen=True)
class NullSuspect:
    """One suspect known not to be a copy.

    Attributes:
        name: ``"constant"``, ``"uniform"`` or ``"fresh"``.
        model: builds the white-box network (None: no white-box form).
        answers: a black-box API's answers for a batch of images (None: the model's black-box view).
    """

    name: str
    model: Callable[[], nn.Module] | None
    answers: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class NullOutcome:
    """What one null suspect scored in one mode.

    Attributes:
        suspect: its name.
        mode: ``"white-box"`` or ``"black-box"``.
        score: the matching score (None: the scheme could not read this suspect).
        p_value: the scheme's own p-value, when it defines one.
        declared: whether the set declares this innocent suspect a copy.
        seconds: wall-clock seconds of the verification.
        note: why it was skipped.
    """

    suspect: str
    mode: str
    score: float | None
    p_value: float | None
    declared: bool
    seconds: float
    note: str = ""


class ConstantNet(nn.Module):
    """A network whose output is the same for every image: one 1x1 convolution (a spatial layer Grad-CAM can read)
    whose contribution is multiplied by 0, plus the fixed output."""

    def __init__(self, outputs: torch.Tensor, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.register_buffer("outputs", outputs.float().view(1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs.expand(len(x), -1) + 0.0 * self.conv(x).mean(dim=(1, 2, 3))[:, None]


def output_size(fingerprints: "FingerprintSet") -> int | None:
    """How many values the target answers per image: recorded, or read off the set (classes of its labels,
    one value for regression, the width of TAFA's bend vectors); None when nothing says."""
    kwargs = fingerprints.target.get("arch_kwargs")
    recorded = kwargs.get("num_outputs") if isinstance(kwargs, dict) else None
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
        return recorded
    task = fingerprints.task.get("name")
    if task == "regression":
        return 1
    if task == "classification" and fingerprints.labels.numel():
        return max(2, int(fingerprints.labels.max()) + 1)
    bends = fingerprints.tensors.get("bends")
    return int(bends.shape[1]) if bends is not None and bends.ndim == 2 else None


def constant_outputs(fingerprints: "FingerprintSet") -> dict[str, torch.Tensor]:
    """The raw outputs of the ``constant`` and ``uniform`` suspects (see the module's description), by name."""
    task, size = fingerprints.task.get("name"), output_size(fingerprints)
    if size is None:
        return {}
    labels = fingerprints.labels
    if task == "classification":
        common = int(torch.mode(labels.long().view(-1)).values) if labels.numel() else 0
        return {"constant": CONSTANT_LOGIT * nn.functional.one_hot(torch.tensor(common), size).float(), "uniform": torch.zeros(size)}
    if task == "regression":
        return {"constant": labels.float().median().view(1) if labels.numel() else torch.zeros(1)}
    unit = torch.zeros(size)
    unit[0] = 1.0
    return {"constant": unit, "uniform": torch.ones(size) / size ** 0.5}


def fresh_model(fingerprints: "FingerprintSet") -> nn.Module | None:
    """A freshly initialised model of the target's architecture (seeded by :data:`NULL_SEED`), or None when the set
    does not record one."""
    from ..architectures import ONNX, architecture, is_architecture
    from ..errors import InputError
    from ..models import ImageModel, ModelSpec, state_sha256

    target, samples = fingerprints.target, fingerprints.samples
    arch, kwargs = target.get("arch"), target.get("arch_kwargs")
    if not is_architecture(arch) or arch == ONNX or not isinstance(kwargs, dict):
        return None  # an ONNX graph is not recorded in the set
    channels = int(samples.shape[1])
    spec = ModelSpec(arch=arch, arch_kwargs=dict(kwargs), task=str(fingerprints.task.get("name")), input_size=tuple(samples.shape[2:]),  # type: ignore[arg-type]
                     channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)
    for seed in (NULL_SEED, NULL_SEED + 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = ImageModel(architecture(arch)(**kwargs), spec).eval()
            except InputError:  # a library this machine does not have
                return None
        if state_sha256(model) != target.get("sha256"):
            break
    return model


def null_suspects(fingerprints: "FingerprintSet") -> list[NullSuspect]:
    """The constant, uniform and fresh suspects of a set (those it records enough to build)."""
    task = fingerprints.task_adapter()
    channels = int(fingerprints.samples.shape[1])
    made = []
    for name, outputs in constant_outputs(fingerprints).items():
        deployed = task.deployed(outputs.view(1, -1)).detach()
        made.append(NullSuspect(name, lambda o=outputs: ConstantNet(o, channels), lambda x, d=deployed: d.expand(len(x), -1).clone()))
    fresh = fresh_model(fingerprints)
    if fresh is not None:
        made.append(NullSuspect("fresh", lambda m=fresh: m))
    return made


def examine(scheme: Any, fingerprints: "FingerprintSet", *, modes: Sequence[str] | None = None, alpha: float = 0.05,
            null_scores: Sequence[float] | None = None) -> list[NullOutcome]:
    """Verify every null suspect of ``scheme.null_suspects(fingerprints)`` with the set, in each mode.

    Args:
        scheme: the scheme that verifies the set (its ``verify``, ``null_suspects`` and ``declares_copy``).
        fingerprints: the set (or watermark key).
        modes: the modes to examine [default: every mode of the scheme].
        alpha: the false-positive level of a p-value or calibrated verdict.
        null_scores: independent models' scores a calibrated verdict would use.

    Returns:
        One outcome per suspect and mode.
    """
    task: Task = fingerprints.task_adapter()
    outcomes = []
    for suspect in scheme.null_suspects(fingerprints):
        model = suspect.model() if suspect.model is not None else None
        for mode in modes or scheme.modes:
            began = time.perf_counter()
            if mode == WHITE_BOX:
                access: Any = WhiteBox(model) if model is not None else None
            elif suspect.answers is not None:
                access = BlackBox(suspect.answers, identity=NULL_IDENTITY)
            else:
                access = BlackBox.from_model(model, task, identity=NULL_IDENTITY) if model is not None else None
            if access is None:
                outcomes.append(NullOutcome(suspect.name, mode, None, None, False, 0.0, "no such form"))
                continue
            try:
                result = scheme.verify(access, fingerprints, mode=mode)
            except (InputError, CapabilityError) as exc:
                outcomes.append(NullOutcome(suspect.name, mode, None, None, False, time.perf_counter() - began, f"not readable ({exc})"))
                continue
            declared = scheme.declares_copy(result, alpha=alpha, null_scores=null_scores)
            outcomes.append(NullOutcome(suspect.name, mode, result.matching_score, result.p_value, declared, time.perf_counter() - began))
    return outcomes


#: Sets already found not degenerate in this process: (digest, modes, alpha, null scores).
_PASSED: set[tuple[Any, ...]] = set()


def check_not_degenerate(scheme: Any, fingerprints: "FingerprintSet", *, modes: Sequence[str] | None = None, alpha: float = 0.05,
                         null_scores: Sequence[float] | None = None, what: str | None = None) -> list[NullOutcome]:
    """Refuse a set under which a null suspect is declared a copy (:func:`examine`); a set that passed once in this
    process (same content, modes, alpha and null scores) is not examined again.

    Returns:
        The outcomes (empty when the set passed before).

    Raises:
        IntegrityError: in one line, naming the suspect, the mode and its score.
    """
    key = (fingerprints.sha256(), scheme.name, tuple(modes or scheme.modes), float(alpha), tuple(null_scores or ()))
    if key in _PASSED:
        return []
    outcomes = examine(scheme, fingerprints, modes=modes, alpha=alpha, null_scores=null_scores)
    declared = [o for o in outcomes if o.declared]
    if declared:
        first = declared[0]
        how = f"p-value {first.p_value:.3g} <= alpha {alpha:g}" if first.p_value is not None else f"matching score {first.score:.3f}"
        others = f" (and {len(declared) - 1} more)" if len(declared) > 1 else ""
        raise IntegrityError(
            f"{what or f'the {fingerprints.WHAT}'}: would declare a null suspect a copy: the {first.suspect} suspect, which never saw the "
            f"target, gets {how} in {first.mode} verification{others}; its thresholds, labels or verifier cannot tell a copy from anything"
        )
    _PASSED.add(key)
    return outcomes
