"""The settings of one evaluation run: data, target, zoo, the schemes compared and their configurations.

Everything is resolved when the configuration is made, so that the report records what was used and bad settings
fail before the zoo is built: each scheme's named configuration (the owner's, with its helper models, for the paper
preset when the scheme has one), the task's settings of that configuration, and how many helper models of each role
the run trains (the most any compared scheme reads, unless given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..fingerprints import DEFAULT_SCHEME, OWNER_ROLES, SCHEMES, FingerprintScheme
from ..tasks import Task, task_named
from ..zoo.spec import PRESETS, ZooSpec, training_zoo
from ..watermarks import WATERMARKS, watermark_entry, watermark_named
from .training_zoo import check_disjoint

#: Training epochs of the target, the negatives and the distilled copies when none are given. The paper preset's 15
#: bring the CIFAR-10 target (ResNet-18 width 16) from 53.8% to 66.6% test accuracy (docs/ablation.md).
PRESET_EPOCHS = {"paper": 15, "quick": 15, "paper-distill": 15, "quick-distill": 15}
DEFAULT_EPOCHS = 15

#: The configuration a scheme takes, per zoo preset, when the run names none and the scheme has it: the owner's
#: (with helper models) for the paper preset, the measurement; the one without helper models otherwise, whose point
#: is a short run.
PRESET_CONFIGURATION = {"paper": "owner", "paper-distill": "owner"}


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """Settings of one evaluation run (recorded in the report).

    Args:
        data: data spec (see :func:`modelprint.load_data`).
        task: ``"classification"``, ``"regression"`` (float labels) or ``"similarity"`` (identity labels).
        similarity: F_c of the similarity task: ``"l2"`` or ``"cosine"``.
        arch, width: the target's architecture.
        epochs: training epochs of the target (and of the presets' negatives and distilled copies); when None, the
            preset's (:data:`PRESET_EPOCHS`).
        seed: the target's seed.
        preset: ``"paper"`` or ``"quick"`` zoo, or either with the distillation family (``"paper-distill"``,
            ``"quick-distill"``, :func:`modelprint.zoo.spec.distillation_family`), unless ``zoo`` names a JSON/YAML
            zoo spec file.
        zoo: path of a custom zoo spec.
        transfer: the transfer data of the distillation family's student (``-distill`` presets only; see
            :func:`modelprint.zoo.spec.distillation_family`): a data spec other than ``data``; when None, the
            built-in digits.
        repeats: fingerprint sets drawn per scheme (seeds 0 .. repeats-1).
        n: fingerprints per set.
        schemes: the registered schemes compared on the same target and zoo (default: the central one); the first
            is the report's headline. ``("all",)``: every registered scheme that protects the task, the central
            one first.
        scheme: settings of the first scheme, its configuration named by ``"preset"`` (``n`` and ``seed`` are set
            by the run); without a name, :data:`PRESET_CONFIGURATION`'s when the scheme has it, else ``"default"``.
            Every other scheme runs in that same rule's configuration. A configuration's settings for the task
            (``FingerprintScheme.task_settings``) go under those named here.
        references, surrogates, calibration: how many of the owner's helper models of each role (see
            :mod:`.owner`) the run trains; when None, the most that any compared scheme's configuration reads.
        watermarks: registered watermark schemes (:mod:`modelprint.watermarks`), each ``NAME`` or
            ``NAME:CONFIGURATION``, evaluated beside the fingerprints:
            each marks the target (the host) and meets the same negatives and the same transforms, made from the
            marked model (:mod:`.watermark`).
        watermark_settings: settings on top of the watermark schemes' defaults (the seed is the repeat): ``SETTING``
            for every scheme, ``NAME.SETTING`` for scheme ``NAME`` only.
        ambiguity_keys: forged keys each watermark key's ambiguity test draws (0: none).
        executor, workers, ray_address: where the zoo and helper models are built.
        target: an existing target model file instead of training one.
        zoo_dir, owner_dir, training_zoo_dir: where the zoo, the owner's helper models and the owner's training zoo
            (for schemes that learn from one) are built and reused (default ``OUT/zoo``, ``OUT/owner`` and
            ``OUT/training_zoo``).
        detector_fpr: false-positive rate on clean images that sets each stealth detector's threshold.
        detectors: measure the stealth detectors' detection rates.
        device: torch device.
    """

    data: str = "digits"
    task: str = "classification"
    similarity: str = "l2"
    arch: str = "resnet18"
    width: int = 16
    epochs: int | None = None
    seed: int = 0
    preset: str = "quick"
    zoo: str | None = None
    transfer: str | None = None
    repeats: int = 1
    n: int = 100
    schemes: tuple[str, ...] | None = None
    scheme: dict[str, Any] | None = None
    references: int | None = None
    surrogates: int | None = None
    calibration: int | None = None
    watermarks: tuple[str, ...] = ()
    watermark_settings: dict[str, Any] | None = None
    ambiguity_keys: int = 100
    executor: str = "pool"
    workers: int = 2
    ray_address: str | None = None
    target: str | None = None
    zoo_dir: str | None = None
    owner_dir: str | None = None
    training_zoo_dir: str | None = None
    detector_fpr: float = 0.05
    detectors: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs is None:  # resolved here so that the report records the number used
            object.__setattr__(self, "epochs", PRESET_EPOCHS.get(self.preset, DEFAULT_EPOCHS) if self.zoo is None else DEFAULT_EPOCHS)
        if self.preset not in PRESETS and self.zoo is None:
            raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.transfer is not None:
            if self.zoo is not None or not self.preset.endswith("-distill"):
                raise InputError(f"transfer data is the distillation family's: it needs the paper-distill or quick-distill preset, not {self.zoo or self.preset!r}")
            self.zoo_spec()  # transfer data that is no data folder, or the target's, fails now
        self.task_adapter()  # an unknown task or similarity metric fails now
        names = tuple(self.schemes or (DEFAULT_SCHEME,))
        if names == ("all",):  # every registered scheme that protects the task, the central one first
            names = tuple(sorted(SCHEMES, key=lambda name: (name != DEFAULT_SCHEME, name)))
            names = tuple(name for name in names if self.task in SCHEMES[name].tasks)
        unknown = [name for name in names if name not in SCHEMES]
        if unknown or len(set(names)) != len(names):
            raise InputError(f"schemes must be distinct registered names ({', '.join(sorted(SCHEMES))}), got {', '.join(names)}")
        for name in names:
            if self.task not in SCHEMES[name].tasks:
                raise InputError(f"the {name} scheme protects {', '.join(SCHEMES[name].tasks)} models, not {self.task}")
        object.__setattr__(self, "schemes", names)
        object.__setattr__(self, "watermarks", tuple(self.watermarks))
        if len(set(self.watermarks)) != len(self.watermarks):
            raise InputError(f"watermarks must be distinct, got {', '.join(self.watermarks)}")
        for entry in self.watermarks:
            name = watermark_entry(entry)[0]
            if self.task not in WATERMARKS[name].tasks:
                raise InputError(f"the {name} watermark protects {', '.join(WATERMARKS[name].tasks)} models, not {self.task}")
            self.watermark_scheme(entry, 0)  # bad settings fail now
        evaluated = {watermark_entry(entry)[0] for entry in self.watermarks}
        for key in self.watermark_settings or {}:
            scope = scoped_setting(key)[0]
            if scope is not None and scope not in evaluated:
                raise InputError(f"watermark setting {key!r} is for {scope}, which this run does not evaluate (--watermark)")
        if self.watermark_settings and not self.watermarks:
            raise InputError("watermark settings were given, but no watermark is evaluated (--watermark)")
        settings = dict(self.scheme or {})
        if {"n", "seed"} & set(settings):
            raise InputError("n and seed are set by the run (--n; the seed is the repeat index), not by scheme settings")
        first = SCHEMES[names[0]]
        configuration = settings.pop("preset", None) or self._default_configuration(first)
        if configuration not in first.configurations:
            raise InputError(f"{first.name} configuration must be one of {', '.join(first.configurations)}, got {configuration!r}")
        # Recorded resolved (the report shows what was used): the configuration's settings for the task, under the run's.
        settings = {"preset": configuration, **first.task_settings.get(configuration, {}).get(self.task, {}), **settings}
        object.__setattr__(self, "scheme", settings)
        object.__setattr__(self, "_asked", tuple(role for role in OWNER_ROLES if getattr(self, role) is not None))
        for role in OWNER_ROLES:
            if getattr(self, role) is None:
                object.__setattr__(self, role, max(self._reads(name).get(role, 0) for name in names))
        if self.repeats < 1:
            raise InputError(f"repeats must be >= 1, got {self.repeats}")
        if not isinstance(self.ambiguity_keys, int) or isinstance(self.ambiguity_keys, bool) or self.ambiguity_keys < 0:
            raise InputError(f"ambiguity_keys must be an integer >= 0, got {self.ambiguity_keys!r}")
        if min(self.owner_counts().values()) < 0:
            raise InputError("references, surrogates and calibration must be >= 0")
        if self.training_zoo_size():  # a training zoo that overlaps the evaluation zoo fails now, not after both are built
            spec = training_zoo(self.training_zoo_size(), train_epochs=self.epochs, arch=self.arch, task=self.task)  # type: ignore[arg-type]
            check_disjoint({"suspects": [s.to_dict() for s in spec.suspects]}, self.zoo_spec())
        for name in names:  # bad settings, or helper models that do not fit them, fail now, not after the zoo
            scheme = self.fingerprint_scheme(0, name)
            if not scheme.training_zoo()[0]:  # a training zoo gives the others theirs
                scheme.check_helpers(**self.helper_counts(name))

    def _default_configuration(self, cls: type[FingerprintScheme]) -> str:
        wanted = PRESET_CONFIGURATION.get(self.preset) if self.zoo is None else None
        return wanted if wanted in cls.configurations else "default"

    def configuration(self, name: str) -> tuple[str, dict[str, Any]]:
        """The named configuration of scheme ``name`` and the settings on top of it."""
        if name == self.schemes[0]:  # type: ignore[index]
            settings = dict(self.scheme or {})
            return settings.pop("preset"), settings
        return self._default_configuration(SCHEMES[name]), {}

    def _reads(self, name: str) -> dict[str, int]:
        """How many helper models of each role scheme ``name``'s configuration reads."""
        return dict(SCHEMES[name].owner_models.get(self.configuration(name)[0], {}))

    def fingerprint_scheme(self, repeat: int, name: str | None = None) -> FingerprintScheme:
        """Scheme ``name`` (the first when None) as the run uses it for repeat ``repeat`` (its seed)."""
        name = name or self.schemes[0]  # type: ignore[index]
        configuration, settings = self.configuration(name)
        try:
            return SCHEMES[name].configured(configuration, self.task, **{**settings, "n": self.n, "seed": repeat})
        except TypeError as exc:
            raise InputError(f"{name} settings: {exc}") from None

    def watermark_scheme(self, entry: str, repeat: int) -> Any:
        """Watermark ``entry`` (``NAME`` or ``NAME:CONFIGURATION``) as the run uses it for repeat ``repeat`` (its seed)."""
        name, configuration = watermark_entry(entry)
        settings = {}
        for key, value in (self.watermark_settings or {}).items():
            scope, setting = scoped_setting(key)
            if scope in (None, name):
                settings[setting] = value
        if "seed" in settings:
            raise InputError("the watermark's seed is the repeat index, not a setting")
        return watermark_named(name, configuration, **{**settings, "seed": repeat})

    def helper_counts(self, name: str) -> dict[str, int]:
        """The helper models scheme ``name`` receives: every role its settings read; for the first scheme also the
        roles the run was asked for explicitly (``references=`` ...), so that models nothing would use are reported."""
        reads, counts = self.fingerprint_scheme(0, name).reads(), self.owner_counts()
        asked = self._asked if name == self.schemes[0] else ()  # type: ignore[attr-defined,index]
        return {role: counts[role] for role in OWNER_ROLES if role in reads or (role in asked and counts[role])}

    def training_zoo_size(self) -> int:
        """Models in the owner's training zoo the run builds: the most any compared scheme learns from (0: none)."""
        return max(self.fingerprint_scheme(0, name).training_zoo()[0] for name in self.schemes)  # type: ignore[union-attr]

    def owner_counts(self) -> dict[str, int]:
        """How many helper models of each role the run trains."""
        return {role: getattr(self, role) for role in OWNER_ROLES}

    def zoo_spec(self) -> ZooSpec:
        if self.zoo:
            return ZooSpec.from_file(self.zoo).for_task(self.task, drop=False)
        return PRESETS[self.preset](train_epochs=self.epochs, arch=self.arch, data=self.data, transfer=self.transfer).for_task(self.task, drop=True)

    def task_adapter(self) -> Task:
        return task_named(self.task, similarity=self.similarity)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def scoped_setting(key: str) -> tuple[str | None, str]:
    """``"backdoor.seeds"`` -> ``("backdoor", "seeds")`` (for that watermark scheme only); ``"epochs"`` ->
    ``(None, "epochs")`` (for every one).

    Raises:
        InputError: a scope that is no registered watermark scheme.
    """
    scope, dot, setting = key.rpartition(".")
    if not dot:
        return None, setting
    if scope not in WATERMARKS:
        raise InputError(f"watermark setting {key!r}: {scope!r} is no registered watermark scheme ({', '.join(sorted(WATERMARKS))})")
    return scope, setting
