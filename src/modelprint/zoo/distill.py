"""Knowledge distillation (Hinton et al. 2015): a fresh model of the same architecture learns the stolen model's
outputs on the thief's data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from ..data import ImageDataset
from ..errors import InputError
from ..models import ImageModel, fresh_like
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


@dataclass(frozen=True, kw_only=True)
class Distill(Transform):
    """Same-architecture distillation from the stolen model's soft labels, from a fresh (seeded) initialisation.

    Args:
        epochs: passes over the thief's data.
        lr: peak learning rate.
        temperature: softmax temperature of the soft labels (classification).
        augment: augmentation; the teacher labels every augmented batch afresh.
    """

    kind: ClassVar[str] = "distill"
    epochs: int = 15
    lr: float = 0.1
    temperature: float = 4.0
    augment: str = "crop,flip"

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise InputError(f"temperature must be > 0, got {self.temperature}")

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> None:
        teacher = fresh_like(model)
        teacher.load_state_dict(model.state_dict())  # keep the stolen weights as the teacher
        student = fresh_like(model)  # initialised from the seeded RNG
        model.load_state_dict(student.state_dict())
        config = TrainConfig(epochs=self.epochs, lr=self.lr, augment=self.augment, seed=seed, device=str(model.mean.device))
        fit(model, data, distillation_loss(model.spec.task, self.temperature, model.spec.output_scale), config, teacher=teacher.eval(), progress=progress, desc=self.kind)
