"""White-box access to a suspect: weights, activations and gradients. See :mod:`modelprint.access`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..tasks import Task
from .blackbox import BlackBox
from .capabilities import BLACK_BOX, SCORES, WHITE_BOX, Access


class WhiteBox(Access):
    """Full access to a model: weights, activations and gradients.

    Args:
        model: the suspect network (any ``nn.Module`` taking images in [0, 1]); it is put in eval mode.
        layer: the Grad-CAM layer to read, overriding the scheme's choice (useful for foreign architectures).
    """

    capabilities = frozenset({WHITE_BOX, BLACK_BOX, SCORES})

    def __init__(self, model: nn.Module, *, layer: str | None = None) -> None:
        from ..architectures import inference_only

        self.model = model.eval()
        self.layer = layer
        if inference_only(model):  # an ONNX file run as it is: predictions only, no weights or gradients
            self.capabilities = frozenset({BLACK_BOX, SCORES})

    def describe(self) -> str:
        return "a model run by ONNX Runtime" if WHITE_BOX not in self.capabilities else "a white-box model"

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def black_box(self, task: Task, *, budget: int | None = None, batch_size: int = 256, **kwargs: Any) -> "BlackBox":
        """A black-box view of this model: it answers what a deployed model of ``task`` would return.

        ``kwargs`` go to :class:`BlackBox` (``journal``, ``identity``, ...)."""
        return BlackBox.from_model(self.model, task, budget=budget, batch_size=batch_size, **kwargs)
