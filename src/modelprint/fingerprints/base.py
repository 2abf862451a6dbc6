"""The interface every fingerprint scheme implements and its verification result.

A scheme object holds only its settings (keyword-only, shown by ``repr``). ``generate(model, images, labels, task)``
reads the target and returns a :class:`~modelprint.fingerprints.sets.FingerprintSet`; ``verify(access,
fingerprint_set)`` examines a suspect through an access object and returns a :class:`VerificationResult`. Schemes
register by name (:mod:`.registry`), state per mode what they need from the suspect, and name their configurations,
so that the protocol, the command line and the evidence records drive any of them without naming one. What does
not depend on how a scheme marks its target (settings, configurations, modes and needs, registration, the checks of
the file it verifies with) is in :class:`Scheme`, which watermark schemes (:mod:`modelprint.watermarks`) share.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Mapping, Sequence

import torch

from ..access import LABELS, SCORES, TOP_K, Access
from ..checks import parse_assignments
from ..errors import IntegrityError, InputError
from ..tasks import Task
from . import arguments, checks, nulls
from .registry import SCHEMES, scheme_class
from .targets import check_input_shape, target_identity, top1_labels
from .sets import DIGEST_KEY, FINGERPRINT_META_KEY, SIGNATURE_KEY, FingerprintSet

__all__ = ["DIGEST_KEY", "FINGERPRINT_META_KEY", "SIGNATURE_KEY", "SCHEMES", "FingerprintScheme", "FingerprintSet",
           "OWNER_ROLES", "VerificationResult", "check_input_shape", "scheme_class", "scheme_for", "scheme_named",
           "target_identity", "top1_labels"]


@dataclass
class VerificationResult:
    """What one verification of one suspect found.

    Attributes:
        scheme: the scheme's name.
        mode: ``"white-box"`` or ``"black-box"``.
        matching_score: fraction of fingerprint samples that matched (eq. 5 or 6), in [0, 1].
        n_samples: number of fingerprint samples examined.
        queries: images sent to a black-box suspect (0 in white-box mode).
        threshold: the threshold used (t_wb or t_bb), or the mean of the per-sample ones.
        values: the per-sample statistic compared with the threshold, one per sample read.
        elapsed_s: wall-clock seconds.
        thresholds: the threshold each value was compared with (the same length as ``values``); all ``threshold``
            when not given.
        p_value: the chance that a model without the owner's mark scores at least ``matching_score``, under a null
            model the scheme defines (a watermark's binomial); None for schemes that define none (their verdicts
            are calibrated on independent models' scores).
        p_value_method: that null model, in words.
    """

    scheme: str
    mode: str
    matching_score: float
    n_samples: int
    queries: int
    threshold: float
    values: list[float] = field(repr=False)
    elapsed_s: float
    thresholds: list[float] | None = field(default=None, repr=False)
    p_value: float | None = None
    p_value_method: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.thresholds is None:  # one threshold for every sample read
            self.thresholds = [self.threshold] * len(self.values)
        if len(self.thresholds) != len(self.values):
            raise ValueError(f"{len(self.values)} values but {len(self.thresholds)} thresholds")

    def summary(self) -> dict[str, Any]:
        """The headline figures (everything but the per-sample values and thresholds)."""
        return {k: v for k, v in asdict(self).items() if k not in ("values", "thresholds") and not (k.startswith("p_value") and v is None)}



class Scheme(ABC):
    """What every scheme shares, fingerprint or watermark: settings as a keyword-only dataclass, named
    configurations, the modes it verifies in and what each needs from the suspect, registration by name, and the
    checks of the file it verifies with (a fingerprint set or a watermark key).

    Class attributes:
        name: the scheme's registry name, stored in every file it makes.
        modes: the verification modes it supports.
        registry: where subclasses that set ``name`` register.
    """

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]
    registry: ClassVar[dict[str, type]]
    #: Per mode, what the suspect must offer: ``WHITE_BOX``, ``SCORES`` (black-box outputs) or ``LABELS`` (black-box
    #: top-1 labels, which an access with scores also gives).
    needs: ClassVar[Mapping[str, str]] = {}
    #: Whether a black-box mode that needs ``SCORES`` takes an API's top-k scores completed by an equal share of
    #: what is left for the unnamed classes (set per scheme from its measured scores, docs/own-model.md).
    partial_scores: ClassVar[bool] = False
    #: The tasks the scheme protects.
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    #: Named configurations: settings on top of the class defaults.
    configurations: ClassVar[Mapping[str, Mapping[str, Any]]] = {"default": {}}
    #: For a scheme without a p-value of its own: the matching score from which a suspect reads as a copy (a majority
    #: of the samples match; MetaV: its verifier says "pirated"). See :meth:`declares_copy`.
    copy_score: ClassVar[float] = 0.5

    @classmethod
    def named(cls, name: str = "default", **overrides: Any) -> "Scheme":
        """A named configuration (:attr:`configurations`), with optional overrides.

        Raises:
            InputError: an unknown name, or settings the scheme refuses.
        """
        if name not in cls.configurations:
            raise InputError(f"{cls.name} configuration must be one of {', '.join(cls.configurations)}, got {name!r}")
        try:
            return cls(**{**cls.configurations[name], **overrides})
        except TypeError as exc:
            raise InputError(f"{cls.name} settings: {exc}") from None

    def require(self, access: Access, mode: str | None) -> str:
        """The mode to verify in (the strongest the access allows when None), after checking that the scheme offers
        it and the access can do what it needs.

        Raises:
            InputError: a mode the scheme does not offer.
            CapabilityError: the access cannot do what the mode needs (before anything is sent).
        """
        if mode is None:
            mode = next((m for m in self.modes if m in access.capabilities), self.modes[-1])
        if mode not in self.modes:
            raise InputError(f"the {self.name} scheme verifies in {' or '.join(self.modes)} mode, not {mode!r}")
        who = f"{self.name} {mode} verification"
        access.require(mode, who=who)
        need = self.needs.get(mode, mode)
        if need == SCORES and TOP_K in access.capabilities and self.partial_scores:
            return mode  # completed top-k scores: measured to serve this scheme (docs/own-model.md)
        if need != LABELS:  # top-1 labels: any black-box access gives them
            access.require(need, who=who)
        return mode

    def declares_copy(self, result: "VerificationResult", *, alpha: float = 0.05, null_scores: Sequence[float] | None = None) -> bool:
        """Whether ``result`` declares its suspect a copy: its p-value (a watermark's binomial) is at most ``alpha``,
        or, for a scheme without one, its matching score is at least :attr:`copy_score`; with ``null_scores``, also
        when the calibrated verdict (:func:`~modelprint.metrics.verdict`) says pirated."""
        from ..metrics import verdict

        if null_scores and verdict(result.matching_score, null_scores, alpha=alpha).pirated:
            return True
        if result.p_value is not None:
            return result.p_value <= alpha
        return result.matching_score >= self.copy_score

    def null_suspects(self, fingerprints: FingerprintSet) -> list[nulls.NullSuspect]:
        """Suspects known not to be copies that no sound set declares one (:mod:`.nulls`): a constant and a uniform
        answer, and a fresh model of the target's architecture when the set records it. A scheme may add its own."""
        return nulls.null_suspects(fingerprints)

    def check_not_degenerate(self, fingerprints: FingerprintSet, *, modes: Sequence[str] | None = None, alpha: float = 0.05,
                             null_scores: Sequence[float] | None = None, what: str | None = None) -> list[nulls.NullOutcome]:
        """Refuse a set under which a null suspect (:meth:`null_suspects`) is declared a copy (:meth:`declares_copy`),
        verifying each with this scheme in ``modes`` (every mode when None); nothing is sent to any real suspect.

        Returns:
            Each null suspect's outcome per mode.

        Raises:
            IntegrityError: in one line naming the suspect, the mode and its score.
        """
        return nulls.check_not_degenerate(self, fingerprints, modes=modes, alpha=alpha, null_scores=null_scores, what=what)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        arguments.guard(cls)  # generate/verify/embed refuse arguments of the wrong type in one line
        if "name" in cls.__dict__:
            cls.registry[cls.name] = cls

    def settings(self) -> dict[str, Any]:
        """The scheme's settings as plain JSON data (stored in every fingerprint set)."""
        return json.loads(json.dumps({f.name: getattr(self, f.name) for f in fields(self)}))  # type: ignore[arg-type]

    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """Check the tensors' names, dtypes and shapes (read from a file's header before any tensor is read).

        Every scheme reads ``samples`` (float, N x C x H x W) and N ``labels`` (integers for classification);
        a scheme extends this with the tensors its verification reads.

        Args:
            layout: tensor name -> (dtype, shape).
            task: the set's task name.

        Returns:
            N, the number of samples.

        Raises:
            IntegrityError: naming the tensor and what is wrong with it.
        """
        checks.check_scheme_task(cls.name, cls.tasks, task)
        return checks.check_common_layout(layout, task)

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "Scheme":
        """Check a set's content against what this scheme reads, so that a set edited (and re-hashed) into odd
        contents is refused in one line instead of failing or scoring silently.

        Generic checks: a known task the scheme protects, with valid settings, the layout (:meth:`check_layout`,
        labels of the task's kind), samples finite and in [0, 1], finite labels (classification: classes of the
        target), a target identity a model could have (:func:`.checks.check_target`), a finite threshold per mode,
        settings of the types their fields declare and the scheme's own checks of them. A scheme extends it.

        Returns:
            The scheme rebuilt from the set's settings (:func:`scheme_for`).

        Raises:
            IntegrityError: saying what is wrong (the caller names the file).
        """
        task = checks.check_task(fingerprints.task)
        cls.check_layout(checks.layout_of(fingerprints.tensors), task.name)
        checks.check_images(fingerprints.samples, "samples")
        checks.check_labels(fingerprints, task)
        checks.check_target(fingerprints.target, tuple(fingerprints.samples.shape), task.name)
        for mode in cls.modes:
            key = mode.replace("-", "_")
            if key not in fingerprints.thresholds:
                raise IntegrityError(f"the set has no {key} threshold")
        for key, value in fingerprints.thresholds.items():
            checks.check_number(value, f"the {key} threshold")
        checks.check_settings(cls, fingerprints.config)
        return scheme_for(fingerprints)

    @classmethod
    def parse_settings(cls, assignments: list[str]) -> dict[str, Any]:
        """``["beta=1", "layer=net.layer3", "pattern=[[0,0],[0,1]]"]`` -> settings typed for this scheme.

        A value is read as JSON when it parses (numbers, booleans, lists, null), else as a string.

        Raises:
            InputError: for a malformed assignment or an unknown setting.
        """
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        for text in assignments:
            key = text.partition("=")[0].strip()
            if "=" not in text or key not in known:
                raise InputError(f"{text!r}: expected SETTING=VALUE with SETTING one of {', '.join(sorted(known))}")
        return parse_assignments(assignments)


class FingerprintScheme(Scheme):
    """Base class of fingerprint schemes. Subclasses are keyword-only dataclasses of settings."""

    registry: ClassVar[dict[str, type]] = SCHEMES

    #: The owner's helper models each named configuration reads, by role (:data:`OWNER_ROLES`): how many the owner
    #: trains for it. A configuration not named here reads none.
    owner_models: ClassVar[Mapping[str, Mapping[str, int]]] = {}
    #: Per named configuration and task, settings that configuration takes for that task (under the ones a caller
    #: names): the same idea often needs another budget or score on another task.
    task_settings: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {}
    #: Per task, the named configuration ``generate`` makes when the caller names none (``"default"`` when absent):
    #: the one that separated a target from independent models best where measured on that task.
    task_defaults: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def default_configuration(cls, task: str) -> str:
        """The configuration made for ``task`` when none is named (:attr:`task_defaults`)."""
        return cls.task_defaults.get(task, "default")

    @classmethod
    def configured(cls, name: str = "default", task: str = "classification", **overrides: Any) -> "FingerprintScheme":
        """:meth:`named`, with the configuration's settings for ``task`` under ``overrides``."""
        return cls.named(name, **{**cls.task_settings.get(name, {}).get(task, {}), **overrides})

    def reads(self) -> tuple[str, ...]:
        """The owner's helper models (roles of :data:`OWNER_ROLES`) these settings read; none by default."""
        return ()

    def training_zoo(self) -> tuple[int, bool]:
        """How many models of the owner's training zoo (:mod:`modelprint.protocol.training_zoo`) these settings
        learn from, and whether also from the checkpoints it kept of them: given to :meth:`generate` as
        ``surrogates`` (its pirated models) and ``references`` (its independent ones). ``(0, False)`` (none) by
        default."""
        return 0, False

    def check_helpers(self, references: int = 0, surrogates: int = 0, calibration: int = 0) -> None:
        """Fail early when the settings need helper models that are missing, or helper models are given that nothing
        would use. A scheme that reads none refuses any.

        Raises:
            InputError: saying which models do not go together with the settings.
        """
        given = {k: v for k, v in (("references", references), ("surrogates", surrogates), ("calibration", calibration)) if v}
        if given:
            raise InputError(f"the {self.name} scheme reads no helper models, but {', '.join(given)} were given")

    @abstractmethod
    def generate(
        self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, task: Task | None = None, *,
        pairs: torch.Tensor | None = None, references: Sequence[torch.nn.Module] = (),
        surrogates: Sequence[torch.nn.Module] = (), calibration: Sequence[torch.nn.Module] = (), progress: bool = False,
    ) -> FingerprintSet:
        """Make fingerprints of ``model`` from candidate ``images`` (in [0, 1]) and their ``labels``: every scheme
        takes this call (``pairs`` for pair tasks, the owner's helper models by role, a progress bar) and refuses
        what it does not read."""

    @abstractmethod
    def verify(self, access: Access, fingerprints: FingerprintSet, *, mode: str | None = None) -> VerificationResult:
        """Examine a suspect through ``access`` with ``fingerprints`` (checked first: :meth:`check_set`)."""

    def check_set(self, fingerprints: FingerprintSet) -> None:
        """What every ``verify`` does first: the set is this scheme's and its content fits it (:meth:`validate`), in
        memory as from a file (a set relabelled for another task, say, is refused).

        Raises:
            InputError: a set of another scheme.
            IntegrityError: content the scheme cannot read soundly.
        """
        if fingerprints.scheme != self.name:
            raise InputError(f"a {fingerprints.scheme!r} fingerprint set cannot be verified by the {self.name!r} scheme")
        type(self).validate(fingerprints)



#: The owner's helper models a scheme may read, by the keyword of ``generate`` that takes them.
OWNER_ROLES = ("references", "surrogates", "calibration")
#: The key under which a set's config records the weights' SHA-256 of the helper models of each role.
HELPER_KEYS = {"references": "reference_sha256", "surrogates": "surrogate_sha256", "calibration": "calibration_sha256"}


def helper_hashes(**helpers: Sequence[torch.nn.Module]) -> dict[str, list[str]]:
    """``{"reference_sha256": [...], ...}`` for the helper models given by role: what a set records of them, and
    what an evaluation compares to reuse a set."""
    from ..models import state_sha256

    return {HELPER_KEYS[role]: [state_sha256(m) for m in models] for role, models in helpers.items()}


def scheme_named(name: str, configuration: str = "default", **overrides: Any) -> FingerprintScheme:
    """A registered scheme by name, in one of its named configurations, with optional overrides.

    Raises:
        InputError: an unknown scheme or configuration, or settings it refuses.
    """
    if name not in SCHEMES:
        raise InputError(f"unknown fingerprint scheme {name!r}; registered: {', '.join(sorted(SCHEMES))}")
    return SCHEMES[name].named(configuration, **overrides)


def scheme_for(fingerprints: FingerprintSet) -> FingerprintScheme:
    """Rebuild the scheme that made ``fingerprints``, with the settings it was made with.

    Raises:
        IntegrityError: an unknown scheme, or settings it refuses (in one line).
    """
    cls = fingerprints.scheme_class(fingerprints.scheme)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: _tuples(v) for k, v in fingerprints.config.items() if k in known})
    except (TypeError, ValueError) as exc:  # InputError is a ValueError
        raise IntegrityError(f"the {getattr(fingerprints, 'WHAT', 'set')}'s settings are invalid: {' '.join(str(exc).split())}") from None


def _tuples(value: Any) -> Any:
    """JSON turns tuples into lists; settings are tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
