"""How a scheme reaches a suspect: a white-box model or a black-box prediction function.

Schemes state the capability they need; they receive an access object at call time and fail early with a clear
message when it cannot do what they need. A black-box access counts every image it sends and never exceeds its
query budget.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .errors import CapabilityError, InputError, QueryBudgetExceeded
from .tasks import Task

WHITE_BOX = "white-box"
BLACK_BOX = "black-box"


class Access:
    """Base class: what a scheme may do with a suspect."""

    capabilities: frozenset[str] = frozenset()

    def require(self, capability: str, *, who: str) -> None:
        """Raise :class:`CapabilityError` unless this access offers ``capability``."""
        if capability not in self.capabilities:
            offered = ", ".join(sorted(self.capabilities)) or "nothing"
            raise CapabilityError(f"{who} needs {capability} access to the suspect; {type(self).__name__} offers {offered}")


class WhiteBox(Access):
    """Full access to a model: weights, activations and gradients.

    Args:
        model: the suspect network (any ``nn.Module`` taking images in [0, 1]); it is put in eval mode.
        layer: the Grad-CAM layer to read, overriding the scheme's choice (useful for foreign architectures).
    """

    capabilities = frozenset({WHITE_BOX, BLACK_BOX})

    def __init__(self, model: nn.Module, *, layer: str | None = None) -> None:
        self.model = model.eval()
        self.layer = layer

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def black_box(self, task: Task, *, budget: int | None = None, batch_size: int = 256) -> "BlackBox":
        """A black-box view of this model: it answers what a deployed model of ``task`` would return."""
        return BlackBox.from_model(self.model, task, budget=budget, batch_size=batch_size)


class BlackBox(Access):
    """Prediction-only access, with a query counter and an optional budget.

    Args:
        predict_fn: maps a batch of images in [0, 1] (N x C x H x W) to the API's outputs (N x ...).
        budget: the most images that may ever be sent; a call that would exceed it raises
            :class:`QueryBudgetExceeded` before sending anything.
        batch_size: the most images sent in one call of ``predict_fn``.
        input_shape: (C, H, W) the API accepts, when known; other images are refused before sending.

    Attributes:
        queries: number of images sent so far (one query per image).
    """

    capabilities = frozenset({BLACK_BOX})

    def __init__(
        self,
        predict_fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        budget: int | None = None,
        batch_size: int = 256,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        if budget is not None and budget < 0:
            raise InputError(f"query budget must be >= 0, got {budget}")
        self.predict_fn = predict_fn
        self.budget = budget
        self.batch_size = batch_size
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.queries = 0

    @classmethod
    def from_model(cls, model: nn.Module, task: Task, *, budget: int | None = None, batch_size: int = 256) -> "BlackBox":
        """Serve a local model as a prediction API for ``task`` (probabilities, values or embeddings)."""
        model = model.eval()
        device = next(model.parameters()).device

        @torch.no_grad()
        def predict(x: torch.Tensor) -> torch.Tensor:
            return task.deployed(model(x.to(device))).cpu()

        spec = getattr(model, "spec", None)
        shape = (spec.channels, *spec.input_size) if spec is not None else None
        return cls(predict, budget=budget, batch_size=batch_size, input_shape=shape)

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Send ``images`` (in batches) and return the outputs, counting one query per image."""
        n = len(images)
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise InputError(f"images are {'x'.join(map(str, images.shape[1:]))} but the suspect expects {c}x{h}x{w}")
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"sending {n} images would exceed the query budget ({self.queries} of {self.budget} used)"
            )
        outputs = []
        for start in range(0, n, self.batch_size):
            chunk = images[start : start + self.batch_size]
            answer = torch.as_tensor(self.predict_fn(chunk))
            if len(answer) != len(chunk):
                raise InputError(f"the prediction API answered {len(answer)} outputs for {len(chunk)} images")
            self.queries += len(chunk)
            outputs.append(answer.float())
        return torch.cat(outputs) if outputs else torch.empty(0)
