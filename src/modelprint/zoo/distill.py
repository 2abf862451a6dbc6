"""Knowledge distillation (Hinton et al. 2015): a fresh model learns the stolen model's outputs on the thief's data;
by default of the same architecture, from soft labels; its settings make a family of recipes (labels, optimiser,
student architecture, transfer data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from ..data import ImageDataset, load_data
from ..errors import InputError
from ..models import ImageModel, ModelSpec, build_model, fresh_like
from ..train import TrainConfig, fit
from .base import Transform


def distillation_loss(task: str, temperature: float, scale: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The student's loss against the teacher's outputs: KL of the softened softmax times T^2 for classification
    (Hinton's scaling keeps gradients comparable across T); MSE on values or embeddings otherwise, divided by
    ``scale``^2 (a regressor's output scale, so that the loss is in standardised units)."""
    if task == "classification":
        t = temperature

        def soft_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="batchmean") * t * t

        return soft_kl
    return lambda student, teacher: F.mse_loss(student.float(), teacher.float()) / scale**2


def label_loss(labels: str, temperature: float, top_k: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A classification student's loss against the teacher's logits, by what the thief's API returns: ``"soft"``
    (every probability: Hinton's KL at temperature T), ``"hard"`` (the top-1 label only: cross-entropy) or
    ``"top_k"`` (the k largest probabilities at temperature T, renormalised, the rest unknown and taken as 0:
    cross-entropy against them, times T^2)."""
    if labels == "soft":
        return distillation_loss("classification", temperature)
    if labels == "hard":
        return lambda student, teacher: F.cross_entropy(student, teacher.argmax(dim=1))
    t = temperature

    def top_k_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(teacher / t, dim=1)
        kept = torch.zeros_like(probs).scatter(1, probs.topk(min(top_k, probs.shape[1]), dim=1).indices, 1.0) * probs
        target = kept / kept.sum(dim=1, keepdim=True)
        return -(target * F.log_softmax(student / t, dim=1)).sum(dim=1).mean() * t * t

    return top_k_loss


@dataclass(frozen=True, kw_only=True)
class Distill(Transform):
    """Distillation from the stolen model's answers on the thief's data, from a fresh (seeded) initialisation: by
    default same-architecture, Hinton's soft labels at T = 4, SGD on the thief's own split. The other settings make
    the recipes of a distillation family (students of another architecture, other labels, optimiser or data).

    Args:
        epochs: passes over the transfer data.
        lr: peak learning rate.
        temperature: softmax temperature of the soft labels (classification).
        augment: augmentation; the teacher labels every augmented batch afresh.
        labels: what the API gives the thief: ``"soft"`` probabilities, ``"hard"`` top-1 labels, or ``"top_k"``
            probabilities (:func:`label_loss`; the last two for classification only).
        top_k: k of ``"top_k"``.
        optimizer: ``"sgd"`` or ``"adam"`` (AdamW, see :class:`~modelprint.train.TrainConfig`).
        arch, width: the student's architecture (the stolen model's when None) and its width (the architecture's
            default when None, the stolen model's when the architecture is the same).
        transfer: a data spec whose training split the thief distils on instead of their own (loaded at the
            stolen model's channels and size); its labels are never read.
    """

    kind: ClassVar[str] = "distill"
    epochs: int = 15
    lr: float = 0.1
    temperature: float = 4.0
    augment: str = "crop,flip"
    labels: str = "soft"
    top_k: int = 3
    optimizer: str = "sgd"
    arch: str | None = None
    width: int | None = None
    transfer: str | None = None

    def supports(self, task: str) -> bool:
        return self.labels == "soft" or task == "classification"  # top-1 and top-k labels need classes

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise InputError(f"temperature must be > 0, got {self.temperature}")
        if self.labels not in ("soft", "hard", "top_k"):
            raise InputError(f"labels must be 'soft', 'hard' or 'top_k', got {self.labels!r}")
        if self.top_k < 1:
            raise InputError(f"top_k must be >= 1, got {self.top_k}")
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> ImageModel:
        spec = model.spec
        if not self.supports(spec.task):
            raise InputError(f"labels={self.labels!r} distils a classifier; the stolen model is a {spec.task} model")
        teacher = fresh_like(model)  # (drawn first, as before the family existed: the default recipe's student is unchanged)
        teacher.load_state_dict(model.state_dict())  # the stolen weights
        if same_architecture(spec, self.arch, self.width):
            model.load_state_dict(fresh_like(model).state_dict())  # a fresh student, initialised from the seeded RNG
            student = model
        else:
            student = student_of(spec, self.arch or spec.arch, self.width)
        if self.transfer is not None:
            data = load_data(self.transfer, channels=spec.channels, size=spec.input_size[0]).train
        config = TrainConfig(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, augment=self.augment, seed=seed, device=str(model.mean.device))
        loss = label_loss(self.labels, self.temperature, self.top_k) if spec.task == "classification" else distillation_loss(spec.task, self.temperature, spec.output_scale)
        fit(student, data, loss, config, teacher=teacher.eval(), progress=progress, desc=self.kind)
        return student


def same_architecture(spec: ModelSpec, arch: str | None, width: int | None) -> bool:
    """Whether a student of ``arch`` and ``width`` (None: the stolen model's) is of the stolen model's architecture."""
    return (arch is None or arch == spec.arch) and (width is None or width == spec.arch_kwargs.get("width"))


def student_of(spec: ModelSpec, arch: str, width: int | None) -> ImageModel:
    """A fresh model of ``arch`` that reads and answers as the stolen model does (inputs, normalisation, outputs)."""
    return build_model(arch, num_outputs=spec.num_outputs, channels=spec.channels, input_size=spec.input_size, width=width, task=spec.task,
                       mean=spec.mean, std=spec.std, output_shift=spec.output_shift, output_scale=spec.output_scale)
