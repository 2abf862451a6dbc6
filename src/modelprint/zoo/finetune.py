"""Fine-tuning and retraining: continue training a stolen model on the thief's data (Adi et al. 2018's FTLL, FTAL,
RTLL, RTAL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn as nn

from ..data import ImageDataset
from ..errors import InputError
from ..models import ImageModel
from ..losses import supervised_loss
from ..train import TrainConfig, fit
from .base import Transform


def last_layer(model: nn.Module) -> nn.Module:
    """The model's last module that has parameters of its own (the classifier or regression head)."""
    with_params = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    return with_params[-1]


def last_layer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of :func:`last_layer`."""
    return list(last_layer(model).parameters(recurse=False))


@dataclass(frozen=True, kw_only=True)
class FineTune(Transform):
    """Fine-tune with the task's own loss, starting from the stolen weights.

    Args:
        epochs: passes over the thief's data.
        lr: peak learning rate (small: the thief wants to keep the model's quality).
        layers: ``"all"`` (FTAL) or ``"last"`` (FTLL: only the last layer is updated).
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

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> None:
        _train(model, data, seed, progress, epochs=self.epochs, lr=self.lr, layers=self.layers, augment=self.augment, desc=f"{self.kind}-{self.layers}")


@dataclass(frozen=True, kw_only=True)
class Retrain(FineTune):
    """Retraining: re-initialise the last layer, then train it alone (``layers="last"``, RTLL) or together with
    all the others (``layers="all"``, RTAL). The feature extractor is kept from the stolen model.

    Args:
        epochs, lr, layers, augment: as in :class:`FineTune`; the defaults train longer and faster, since the head
            starts from scratch.
    """

    kind: ClassVar[str] = "retrain"
    epochs: int = 2
    lr: float = 0.02

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> None:
        head = last_layer(model)
        if not hasattr(head, "reset_parameters"):
            raise InputError(f"cannot re-initialise the last layer ({type(head).__name__})")
        head.reset_parameters()  # seeded by apply()
        super()._transform(model, data, seed, progress)


def _train(model: ImageModel, data: ImageDataset, seed: int, progress: bool, *, epochs: int, lr: float, layers: str, augment: str, desc: str) -> None:
    config = TrainConfig(epochs=epochs, lr=lr, augment=augment, seed=seed, device=str(model.mean.device))
    params = last_layer_parameters(model) if layers == "last" else None
    fit(model, data, supervised_loss(model.spec.task, model=model, data=data), config, parameters=params, progress=progress, desc=desc)
