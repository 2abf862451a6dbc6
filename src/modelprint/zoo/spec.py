"""Zoo specifications: which suspects to build, as data (presets, or a JSON/YAML file)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data import DIGITS, data_key, is_data_spec
from ..errors import InputError
from . import TRANSFORMS
from .base import Transform

POSITIVE, NEGATIVE = "positive", "negative"


@dataclass(frozen=True)
class SuspectSpec:
    """One suspect: a transform of the target (positive) or an independent model (negative).

    Attributes:
        name: unique within the zoo; the suspect's file name.
        kind: ``"positive"`` (pirated) or ``"negative"`` (independent).
        transform: a key of :data:`modelprint.zoo.TRANSFORMS`.
        params: the transform's settings.
        seed: seeds everything random in building this suspect.
    """

    name: str
    kind: str
    transform: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in (POSITIVE, NEGATIVE):
            raise InputError(f"suspect {self.name!r}: kind must be 'positive' or 'negative', got {self.kind!r}")
        if self.transform not in TRANSFORMS:
            raise InputError(f"suspect {self.name!r}: unknown transform {self.transform!r}; known: {', '.join(TRANSFORMS)}")
        if not self.name or "/" in self.name:
            raise InputError(f"suspect name {self.name!r} is not a valid file name")
        self.build_transform()  # validate the parameters now, not half-way through a build

    def supports(self, task: str) -> bool:
        """Whether this suspect can be made from a model of ``task`` (:meth:`Transform.supports`)."""
        return self.build_transform().supports(task)

    def build_transform(self) -> Transform:
        try:
            return TRANSFORMS[self.transform](**self.params)
        except (TypeError, InputError) as exc:
            raise InputError(f"suspect {self.name!r}: bad parameters for {self.transform}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ZooSpec:
    """A list of suspects with unique names."""

    suspects: tuple[SuspectSpec, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.suspects]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InputError(f"zoo spec: duplicate suspect names {duplicates}")
        if not self.suspects:
            raise InputError("zoo spec: no suspects")

    @property
    def positives(self) -> list[SuspectSpec]:
        return [s for s in self.suspects if s.kind == POSITIVE]

    @property
    def negatives(self) -> list[SuspectSpec]:
        return [s for s in self.suspects if s.kind == NEGATIVE]

    def for_task(self, task: str, *, drop: bool) -> "ZooSpec":
        """The suspects that can be made from a model of ``task``: the others dropped (a preset's, made for every
        task), or refused (a zoo the user wrote).

        Raises:
            InputError: a suspect the task does not allow, with ``drop`` False.
        """
        unfit = [s for s in self.suspects if not s.supports(task)]
        if unfit and not drop:
            raise InputError(f"zoo spec: suspect {unfit[0].name!r} ({unfit[0].transform} {unfit[0].params}) cannot be made from a {task} model")
        return ZooSpec(tuple(s for s in self.suspects if s not in unfit))

    def to_dict(self) -> dict[str, Any]:
        return {"suspects": [s.to_dict() for s in self.suspects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZooSpec":
        try:
            return cls(tuple(SuspectSpec(**entry) for entry in data["suspects"]))
        except (KeyError, TypeError) as exc:
            raise InputError(f"zoo spec: expected {{'suspects': [{{name, kind, transform, params, seed}}, ...]}} ({exc})") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "ZooSpec":
        """Read a spec from JSON or YAML (by extension)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"zoo spec {path} does not exist")
        from ..checks import read_text

        text = read_text(path, "zoo spec")  # a binary file is refused in one line
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is bad input
            raise InputError(f"zoo spec {path}: cannot parse ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputError(f"zoo spec {path}: expected a mapping with a 'suspects' list")
        return cls.from_dict(data)


#: The seed of the preset zoos' extraction thief (no other preset suspect uses 420-449).
EXTRACT_SEED = 420


def extraction(train_epochs: int) -> SuspectSpec:
    """The API thief of the preset zoos: a student of the target's architecture trained on the API's probabilities
    for every image of the thief's split, one query each (:class:`~modelprint.zoo.extract.Extract`)."""
    return SuspectSpec("extract_0", POSITIVE, "extract", {"epochs": train_epochs}, EXTRACT_SEED)


def paper_zoo(*, train_epochs: int, finetune_epochs: int = 2, recover_epochs: int = 3, negatives: int = 20, distilled: int = 4, **_: Any) -> ZooSpec:
    """The paper's zoo: 4 fine-tune/retrain + 5 weight-pruned + 7 filter-pruned + 4 distilled positives, 20 negatives,
    and the API thief (:func:`extraction`), which the paper's zoo did not have.

    Args:
        train_epochs: epochs of the target's own training; negatives and distilled copies get the same budget.
        finetune_epochs: epochs of fine-tuning and retraining.
        recover_epochs: at most this many epochs of pruning recovery (see :mod:`modelprint.zoo.prune`).
        negatives: number of independent models.
        distilled: number of distilled copies.
    """
    suspects = [
        SuspectSpec("ftal", POSITIVE, "finetune", {"layers": "all", "epochs": finetune_epochs}, 101),
        SuspectSpec("ftll", POSITIVE, "finetune", {"layers": "last", "epochs": finetune_epochs}, 102),
        SuspectSpec("rtal", POSITIVE, "retrain", {"layers": "all", "epochs": finetune_epochs}, 103),
        SuspectSpec("rtll", POSITIVE, "retrain", {"layers": "last", "epochs": finetune_epochs}, 104),
    ]
    for i, ratio in enumerate((0.1, 0.2, 0.3, 0.4, 0.5)):
        suspects.append(SuspectSpec(f"weight_prune_{ratio:.1f}", POSITIVE, "weight_prune", {"ratio": ratio, "recover_epochs": recover_epochs}, 200 + i))
    for k in range(1, 8):
        suspects.append(SuspectSpec(f"filter_prune_{k}of16", POSITIVE, "filter_prune", {"ratio": k / 16, "recover_epochs": recover_epochs}, 300 + k))
    for i in range(distilled):
        suspects.append(SuspectSpec(f"distill_{i}", POSITIVE, "distill", {"epochs": train_epochs}, 400 + i))
    suspects.append(extraction(train_epochs))
    for i in range(negatives):
        suspects.append(SuspectSpec(f"independent_{i}", NEGATIVE, "independent", {"epochs": train_epochs}, 1000 + i))
    return ZooSpec(tuple(suspects))


def quick_zoo(*, train_epochs: int, finetune_epochs: int = 1, recover_epochs: int = 3, negatives: int = 4, **_: Any) -> ZooSpec:
    """A small zoo that still holds every transform kind: 7 positives (the API thief among them) and ``negatives``
    independent models."""
    suspects = [
        SuspectSpec("ftal", POSITIVE, "finetune", {"layers": "all", "epochs": finetune_epochs}, 101),
        SuspectSpec("rtll", POSITIVE, "retrain", {"layers": "last", "epochs": finetune_epochs}, 104),
        SuspectSpec("weight_prune_0.3", POSITIVE, "weight_prune", {"ratio": 0.3, "recover_epochs": recover_epochs}, 202),
        SuspectSpec("weight_prune_0.5", POSITIVE, "weight_prune", {"ratio": 0.5, "recover_epochs": recover_epochs}, 204),
        SuspectSpec("filter_prune_4of16", POSITIVE, "filter_prune", {"ratio": 4 / 16, "recover_epochs": recover_epochs}, 304),
        SuspectSpec("distill_0", POSITIVE, "distill", {"epochs": train_epochs}, 400),
        extraction(train_epochs),
    ]
    for i in range(negatives):
        suspects.append(SuspectSpec(f"independent_{i}", NEGATIVE, "independent", {"epochs": train_epochs}, 1000 + i))
    return ZooSpec(tuple(suspects))


#: A student architecture other than the target's, per target architecture (for the distillation family).
OTHER_ARCH = {"vgg11_bn": "resnet18"}


def other_arch(arch: str | None) -> str:
    """The student architecture other than the target's ``arch`` (VGG11-BN for any but a VGG11-BN target)."""
    return OTHER_ARCH.get(arch or "", "vgg11_bn")


#: The seed of the distillation family's first student: no preset zoo, helper model or training zoo uses 450-499.
FAMILY_SEED = 450


def check_transfer_data(transfer: str, data: str | None) -> None:
    """Raise :class:`InputError` unless ``transfer`` names a data folder other than ``data`` (the target's; None:
    not compared), by any path or name."""
    if not is_data_spec(transfer):
        raise InputError(f"transfer data {transfer!r}: no such data folder (expected digits, medmnist:FLAG or a folder with train.npz)")
    if data is not None and data_key(transfer) == data_key(data):
        raise InputError(f"the transfer data must be another data set than the target's, got {transfer!r} for both")


def distillation_family(*, train_epochs: int, arch: str | None = None, data: str | None = None, transfer: str | None = None) -> tuple[SuspectSpec, ...]:
    """Students distilled by other recipes than the paper zoo's (same architecture, soft labels at T = 4, SGD, the
    thief's own split), one setting changed each: temperature 1 and 10, top-1 labels only, the API's top-3
    probabilities only, Adam (lr 0.002), a student of another architecture (VGG11-BN, or ResNet-18 for a VGG11-BN
    target), and another data set as transfer data; and API thieves (:class:`~modelprint.zoo.extract.Extract`) by
    other recipes than the preset zoos' one: top-1 labels only, a budget of 1000 queries, a student of the other
    architecture. Seeds from :data:`FAMILY_SEED` (the thieves from ``FAMILY_SEED + 10``).

    Args:
        train_epochs: every student's epochs.
        arch: the target's architecture (chooses the other one).
        data: the target's data spec.
        transfer: the transfer student's data spec; when None, the built-in digits, except for a digits target,
            which then gets no transfer student. Digits give a CIFAR-10 target's student 12.4% test accuracy (it
            agrees with the target at chance), natural RGB images such as UTKFace's faces 40% (docs/ablation.md).
    """
    if transfer is not None:
        check_transfer_data(transfer, data)
    recipes: list[tuple[str, dict[str, Any]]] = [
        ("distill_t1", {"temperature": 1.0}),
        ("distill_t10", {"temperature": 10.0}),
        ("distill_hard", {"labels": "hard"}),
        ("distill_top3", {"labels": "top_k", "top_k": 3}),
        ("distill_adam", {"optimizer": "adam", "lr": 0.002}),
        ("distill_other_arch", {"arch": other_arch(arch)}),
    ]
    if transfer is not None or data != DIGITS:
        recipes.append(("distill_transfer", {"transfer": transfer or DIGITS}))
    thieves = [("extract_hard", {"labels": "hard"}), ("extract_1000", {"budget": 1000}), ("extract_other_arch", {"arch": other_arch(arch)})]
    return (*(SuspectSpec(name, POSITIVE, "distill", {"epochs": train_epochs, **params}, FAMILY_SEED + i) for i, (name, params) in enumerate(recipes)),
            *(SuspectSpec(name, POSITIVE, "extract", {"epochs": train_epochs, **params}, FAMILY_SEED + 10 + i) for i, (name, params) in enumerate(thieves)))


def paper_distill_zoo(*, train_epochs: int, arch: str | None = None, data: str | None = None, transfer: str | None = None, **kwargs: Any) -> ZooSpec:
    """The paper's zoo with the :func:`distillation_family` added to its positives (31 or 30 positives, 20 negatives)."""
    paper = paper_zoo(train_epochs=train_epochs, **kwargs)
    return ZooSpec((*paper.positives, *distillation_family(train_epochs=train_epochs, arch=arch, data=data, transfer=transfer), *paper.negatives))


def quick_distill_zoo(*, train_epochs: int, arch: str | None = None, data: str | None = None, transfer: str | None = None, **kwargs: Any) -> ZooSpec:
    """The quick zoo with the :func:`distillation_family` added to its positives."""
    quick = quick_zoo(train_epochs=train_epochs, **kwargs)
    return ZooSpec((*quick.positives, *distillation_family(train_epochs=train_epochs, arch=arch, data=data, transfer=transfer), *quick.negatives))


#: The copies of the weights in a training zoo, in the order they are added: every transform of the paper's zoo
#: but distillation, with other settings than its own (other pruning ratios, other fine-tuning epochs).
TRAINING_POSITIVES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("finetune", {"layers": "all", "epochs": 1}),
    ("weight_prune", {"ratio": 0.25}),
    ("filter_prune", {"ratio": 0.2}),
    ("retrain", {"layers": "last", "epochs": 3}),
    ("weight_prune", {"ratio": 0.45}),
    ("filter_prune", {"ratio": 0.35}),
    ("finetune", {"layers": "last", "epochs": 3}),
    ("retrain", {"layers": "all", "epochs": 1}),
)
#: Stands for the architecture other than the target's (:data:`OTHER_ARCH`) in a recipe's settings.
OTHER = "other"
#: How thieves distil, in a training zoo, each recipe named (the name ends the suspect's, so that a bench can leave a
#: recipe out, :func:`training_recipe`), in the order they are added: the paper zoo's distillation and the preset
#: zoos' API thief, the distillation family's recipes (:func:`distillation_family`) and settings no evaluation zoo
#: uses (no augmentation, half the epochs, temperature 2 with Adam). ``epochs`` is a share of the target's.
TRAINING_THIEVES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("distill", "distill", {}),
    ("extract", "extract", {}),
    ("distill_t1", "distill", {"temperature": 1.0}),
    ("distill_hard", "distill", {"labels": "hard"}),
    ("distill_adam", "distill", {"optimizer": "adam", "lr": 0.002}),
    ("distill_other_arch", "distill", {"arch": OTHER}),
    ("extract_hard", "extract", {"labels": "hard"}),
    ("distill_top3", "distill", {"labels": "top_k", "top_k": 3}),
    ("distill_t10", "distill", {"temperature": 10.0}),
    ("extract_other_arch", "extract", {"arch": OTHER}),
    ("distill_no_augment", "distill", {"augment": ""}),
    ("extract_1000", "extract", {"budget": 1000}),
    ("distill_t2_adam", "distill", {"temperature": 2.0, "optimizer": "adam", "lr": 0.001}),
    ("distill_half_epochs", "distill", {"epochs": 0.5}),
)
#: First seeds of a training zoo's positives and negatives: no preset evaluation zoo (seeds below 5000) and none of
#: the owner's helper models (5000-7999) uses them.
TRAINING_SEEDS = {POSITIVE: 8000, NEGATIVE: 9000}


def training_zoo(size: int, *, train_epochs: int, recover_epochs: int = 3, arch: str | None = None, task: str = "classification") -> ZooSpec:
    """The owner's training zoo (for schemes that learn from pirated and independent models, such as MetaV):
    ``size // 2`` positives, alternately a copy of the weights (:data:`TRAINING_POSITIVES`) and a thief's
    distillation (:data:`TRAINING_THIEVES`), each list in turn, and the rest independent models, seeded from
    :data:`TRAINING_SEEDS`. The first k positives and negatives of a larger zoo are those of a smaller one, so one
    built zoo serves every smaller size. A positive is named ``positive_I_RECIPE``.

    Args:
        size: models in all (at least 2).
        train_epochs: epochs of the target's own training (negatives and distilled copies get the same).
        recover_epochs: at most this many epochs of pruning recovery.
        arch: the target's architecture (chooses the other one of the recipes that change it; VGG11-BN when None).
        task: the target's task: a recipe that cannot be made from such a model (top-1 labels, the API thief of a
            classifier) is left out of the cycle.
    """
    if not isinstance(size, int) or size < 2:
        raise InputError(f"a training zoo needs at least 2 models (a positive and a negative), got {size!r}")
    thieves = []  # (recipe, transform, settings) for this target, those its task allows
    for recipe, transform, params in TRAINING_THIEVES:
        params = {**params, "epochs": max(1, round(train_epochs * params.get("epochs", 1)))}
        if params.get("arch") == OTHER:
            params["arch"] = other_arch(arch)
        if TRANSFORMS[transform](**params).supports(task):
            thieves.append((recipe, transform, params))
    suspects = []
    for i in range(size // 2):
        if i % 2 == 0:
            transform, params = TRAINING_POSITIVES[(i // 2) % len(TRAINING_POSITIVES)]
            recipe = transform
            if transform.endswith("prune"):
                params = {**params, "recover_epochs": recover_epochs}
        else:
            recipe, transform, params = thieves[(i // 2) % len(thieves)]
        suspects.append(SuspectSpec(f"positive_{i}_{recipe}", POSITIVE, transform, params, TRAINING_SEEDS[POSITIVE] + i))
    for i in range(size - size // 2):
        suspects.append(SuspectSpec(f"negative_{i}", NEGATIVE, "independent", {"epochs": train_epochs}, TRAINING_SEEDS[NEGATIVE] + i))
    return ZooSpec(tuple(suspects))


def training_recipe(name: str) -> str:
    """The recipe a training zoo's positive was made by, from its name (``positive_3_distill_t1`` ->
    ``distill_t1``); ``""`` for a negative or a name of another form."""
    head, _, rest = name.partition("_")
    index, _, recipe = rest.partition("_")
    return recipe if head == POSITIVE and index.isdigit() else ""


PRESETS = {"paper": paper_zoo, "quick": quick_zoo, "paper-distill": paper_distill_zoo, "quick-distill": quick_distill_zoo}
