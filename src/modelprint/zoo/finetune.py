"""Fine-tuning: continue training a stolen model on the thief's data, all layers or the last one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..data import ImageDataset
from ..errors import InputError
from ..models import ImageModel
from ..train import TrainConfig, fit, supervised_loss
from .base import Transform


def last_layer_parameters(model: ImageModel) -> list:
    """The parameters of the model's last module that has any (the classifier or regression head)."""
    with_params = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    return list(with_params[-1].parameters(recurse=False))


@dataclass(frozen=True, kw_only=True)
class FineTune(Transform):
    """Fine-tune with the task's own loss.

    Args:
        epochs: passes over the thief's data.
        lr: peak learning rate (small: the thief wants to keep the model's quality).
        layers: ``"all"`` or ``"last"`` (only the last layer is updated).
        augment: augmentation during fine-tuning.
    """

    kind: ClassVar[str] = "finetune"
    epochs: int = 1
    lr: float = 0.01
    layers: str = "all"
    augment: str = "crop,flip"

    def __post_init__(self) -> None:
        if self.layers not in ("all", "last"):
            raise InputError(f"layers must be 'all' or 'last', got {self.layers!r}")

    def _transform(self, model, data: ImageDataset, seed, progress) -> None:
        config = TrainConfig(epochs=self.epochs, lr=self.lr, augment=self.augment, seed=seed, device=str(model.mean.device))
        params = last_layer_parameters(model) if self.layers == "last" else None
        fit(model, data, supervised_loss(model.spec.task), config, parameters=params, progress=progress, desc=f"finetune-{self.layers}")
