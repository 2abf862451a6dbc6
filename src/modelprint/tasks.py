"""Task adapters: what F_c(x) is, what a deployed model returns, and the loss L_prd that keeps the prediction.

The saliency fingerprint is task-agnostic because it only needs a differentiable scalar F_c(x) per sample (section
3.4 of the paper). Each adapter turns a model's raw output into that scalar, given a per-sample *condition* ``c``:
the class label (classification), nothing (regression), or the embedding of the pair image (similarity).

Shapes: ``outputs`` is what the network returns for N images (N x K logits, N x 1 values or N x D embeddings);
``condition`` has N rows; every method returns one value per sample unless said otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .data import ImageDataset, same_label_pairs
from .errors import InputError
from .models import device_of


@dataclass(frozen=True)
class Task(ABC):
    """Base class of the task adapters."""

    name: ClassVar[str]
    #: True when F_c needs the model's output for a pair image (the condition comes from the suspect itself).
    needs_pairs: ClassVar[bool] = False

    @abstractmethod
    def score(self, outputs: torch.Tensor, condition: torch.Tensor, *, logit: bool = False) -> torch.Tensor:
        """F_c(x) from the network's raw outputs (differentiable; used for Grad-CAM).

        Args:
            outputs: raw network outputs for N images.
            condition: per-sample condition (label, unused, or pair embedding).
            logit: for classification, the logit of class c instead of its probability; ignored elsewhere.
        """

    def deployed(self, outputs: torch.Tensor) -> torch.Tensor:
        """What a prediction API serving this model returns for raw ``outputs`` (identity unless overridden)."""
        return outputs

    @abstractmethod
    def score_deployed(self, deployed: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """F_c(x) from what a prediction API returned (black-box verification)."""

    @abstractmethod
    def keep_loss(
        self, outputs: torch.Tensor, original: torch.Tensor, condition: torch.Tensor, *, mode: str = "output"
    ) -> torch.Tensor:
        """L_prd per sample: how far ``outputs`` moved from the original prediction.

        Args:
            outputs: raw outputs on the perturbed images.
            original: raw outputs on the original images (constants).
            condition: per-sample condition.
            mode: ``"label"`` keeps the label (cross-entropy, classification) and ``"output"`` keeps the whole
                original output (KL for classification); regression and similarity always keep the output value.
        """

    @abstractmethod
    def kept(
        self, outputs: torch.Tensor, original: torch.Tensor, condition: torch.Tensor, *, tolerance: float | None = None
    ) -> torch.Tensor:
        """Boolean per sample: is the prediction on the perturbed image still the original one?"""

    def condition_from(self, labels: torch.Tensor, pair_outputs: torch.Tensor | None = None) -> torch.Tensor:
        """The per-sample condition of F_c, given the stored labels and (for pair tasks) the outputs on the pairs."""
        return labels

    def condition_on(self, model: torch.nn.Module, labels: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """The condition of F_c for ``model``: the labels, or (pair tasks) the model's own outputs on the pair images,
        on the device of ``model``."""
        device = device_of(model)
        pair_outputs = None
        if self.needs_pairs:
            if pairs is None:
                raise InputError(f"the {self.name} task needs the pair images")
            with torch.no_grad():
                pair_outputs = model(pairs.to(device))
        return self.condition_from(labels.to(device), pair_outputs)

    def candidates(self, data: ImageDataset, *, seed: int = 0) -> tuple[ImageDataset, torch.Tensor | None]:
        """Fingerprint candidates from ``data`` and their pair images (pair tasks: another image of the same label,
        see :func:`~modelprint.data.same_label_pairs`; otherwise none)."""
        return same_label_pairs(data, seed=seed) if self.needs_pairs else (data, None)

    def check_labels(self, labels: torch.Tensor, num_outputs: int) -> None:
        """Raise :class:`InputError` if ``labels`` cannot be used with a model of ``num_outputs`` outputs."""

    def check_output_shape(self, shape: tuple[int, ...], labels: torch.Tensor, *, num_outputs: int | None, who: str) -> None:
        """Raise :class:`InputError` unless a suspect whose output per image has ``shape`` can be scored.

        Args:
            shape: the shape of one image's output (answer rows, or a model's declared outputs).
            labels: the fingerprint samples' labels.
            num_outputs: the target's output count, when the fingerprint set records it.
            who: the suspect, for the message.
        """
        if len(shape) != 1 or shape[0] < 1:
            raise InputError(f"{who} answers outputs of shape {list(shape)} per image; the {self.name} task reads one "
                             "vector of values per image")

    def to_config(self) -> dict:
        return {"name": self.name, **asdict(self)}


def _kl_to_original(outputs: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """KL(softmax(original) || softmax(outputs)) per sample."""
    log_p = F.log_softmax(original, dim=1)
    log_q = F.log_softmax(outputs, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


@dataclass(frozen=True)
class Classification(Task):
    """F_c(x) = the probability (or logit) the model gives to class c, the sample's label.

    A prediction API returns the class probabilities (softmax of the logits).
    """

    name: ClassVar[str] = "classification"

    def score(self, outputs, condition, *, logit=False):
        c = condition.long().view(-1, 1)
        if logit:
            return outputs.gather(1, c).squeeze(1)
        return F.softmax(outputs, dim=1).gather(1, c).squeeze(1)

    def deployed(self, outputs):
        return F.softmax(outputs, dim=1)

    def score_deployed(self, deployed, condition):
        return deployed.gather(1, condition.long().view(-1, 1)).squeeze(1)

    def keep_loss(self, outputs, original, condition, *, mode="output"):
        if mode == "label":
            return F.cross_entropy(outputs, condition.long(), reduction="none")
        if mode == "output":
            return _kl_to_original(outputs, original)
        raise InputError(f"classification keep mode must be 'label' or 'output', got {mode!r}")

    def kept(self, outputs, original, condition, *, tolerance=None):
        return outputs.argmax(dim=1) == condition.long()

    def check_output_shape(self, shape, labels, *, num_outputs, who):
        super().check_output_shape(shape, labels, num_outputs=num_outputs, who=who)
        needed = int(labels.max()) + 1 if labels.numel() else 1
        if (num_outputs and shape[0] != num_outputs) or shape[0] < needed:
            target = f"the fingerprint set's target has {num_outputs} classes" if num_outputs else f"its labels need {needed} classes"
            raise InputError(f"{who} answers {shape[0]} values per image, but {target}: the suspect is not a classifier "
                             "of the same classes, or another of its outputs was read")

    def check_labels(self, labels, num_outputs):
        if labels.is_floating_point():
            raise InputError("classification needs integer class labels, got float labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_outputs):
            raise InputError(
                f"labels out of range: found {labels.min().item()}..{labels.max().item()}, the model has {num_outputs} classes"
            )


@dataclass(frozen=True)
class Regression(Task):
    """F(x) = the predicted value y (a network with one output).

    Attributes:
        tolerance: how far a fingerprint's prediction may move and still count as kept (output units); None lets
            the scheme decide (the saliency fingerprint uses t_bb / 2).
    """

    name: ClassVar[str] = "regression"
    tolerance: float | None = None

    def score(self, outputs, condition, *, logit=False):
        return outputs.reshape(len(outputs), -1)[:, 0]

    def score_deployed(self, deployed, condition):
        return deployed.reshape(len(deployed), -1)[:, 0]

    def check_output_shape(self, shape, labels, *, num_outputs, who):
        if len(shape) > 1 or (shape and shape[0] < 1):  # a value per image: shape (), (1,) or a vector whose first is read
            raise InputError(f"{who} answers outputs of shape {list(shape)} per image; regression reads one value per image")

    def keep_loss(self, outputs, original, condition, *, mode="output"):
        return (self.score(outputs, condition) - self.score(original, condition)) ** 2

    def kept(self, outputs, original, condition, *, tolerance=None):
        tol = tolerance if tolerance is not None else self.tolerance
        if tol is None:
            raise InputError("regression needs a tolerance to decide whether a prediction was kept")
        return (self.score(outputs, condition) - self.score(original, condition)).abs() <= tol


@dataclass(frozen=True)
class Similarity(Task):
    """F_c(x) compares the embedding of x with the embedding of its pair image (eq. 7 or 8).

    Attributes:
        metric: ``"l2"`` for ||Emb(x) - Emb(x_pair)||_2 (eq. 7) or ``"cosine"`` for the cosine similarity (eq. 8).
        tolerance: how far F may move for a fingerprint to count as kept; None lets the scheme decide.

    The condition is the pair image's embedding, computed by the model under examination (so a suspect is always
    compared with itself), and a prediction API returns embeddings.
    """

    name: ClassVar[str] = "similarity"
    needs_pairs: ClassVar[bool] = True
    metric: str = "l2"
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in ("l2", "cosine"):
            raise InputError(f"similarity metric must be 'l2' or 'cosine', got {self.metric!r}")

    def score(self, outputs, condition, *, logit=False):
        if self.metric == "l2":
            return (outputs - condition).norm(dim=1)
        return F.cosine_similarity(outputs, condition, dim=1)

    def score_deployed(self, deployed, condition):
        return self.score(deployed, condition)

    def keep_loss(self, outputs, original, condition, *, mode="output"):
        return (self.score(outputs, condition) - self.score(original, condition)) ** 2

    def kept(self, outputs, original, condition, *, tolerance=None):
        tol = tolerance if tolerance is not None else self.tolerance
        if tol is None:
            raise InputError("similarity needs a tolerance to decide whether a prediction was kept")
        return (self.score(outputs, condition) - self.score(original, condition)).abs() <= tol

    def condition_from(self, labels, pair_outputs=None):
        if pair_outputs is None:
            raise InputError("similarity needs the embeddings of the pair images")
        return pair_outputs


TASKS: dict[str, type[Task]] = {t.name: t for t in (Classification, Regression, Similarity)}


def task_from_config(config: dict | str) -> Task:
    """Rebuild a task adapter from :meth:`Task.to_config` output (or a bare task name)."""
    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name", None)
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**config)


def task_named(name: str, *, similarity: str = "l2") -> Task:
    """The adapter of a task by name; ``similarity`` is F_c of the similarity task (``"l2"`` or ``"cosine"``)."""
    return task_from_config({"name": name, "metric": similarity} if name == "similarity" else name)
