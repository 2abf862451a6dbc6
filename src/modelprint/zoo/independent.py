"""Negatives: models of the same architecture trained from scratch, with other seeds, on the owner's task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..data import ImageDataset
from ..models import ImageModel, fresh_like
from ..losses import supervised_loss
from ..train import TrainConfig, fit
from .base import Transform


@dataclass(frozen=True, kw_only=True)
class Independent(Transform):
    """An independently trained model: only the architecture and preprocessing come from the target; the weights
    are initialised from the seed and trained on labels. Not derived from the target (no parent hash is recorded).

    Args:
        epochs, lr, augment: the training run (use the target's own settings for a fair negative).
    """

    kind: ClassVar[str] = "independent"
    derived: ClassVar[bool] = False
    epochs: int = 15
    lr: float = 0.1
    augment: str = "crop,flip"

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> None:
        model.load_state_dict(fresh_like(model).state_dict())
        config = TrainConfig(epochs=self.epochs, lr=self.lr, augment=self.augment, seed=seed, device=str(model.mean.device))
        fit(model, data, supervised_loss(model.spec.task, model=model, data=data), config, progress=progress, desc=self.kind)
