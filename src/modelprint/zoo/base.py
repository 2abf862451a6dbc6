"""The interface of suspect-zoo transforms: what a thief does to a stolen model to hide the theft."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import fields
from typing import Any, ClassVar

import torch

from ..data import ImageDataset
from ..models import ImageModel, clone_model, state_sha256, without_answers


class Transform(ABC):
    """A seeded, reproducible change of a model. Subclasses are keyword-only dataclasses of settings.

    ``apply`` never modifies its input: it returns a new model whose ``spec.info`` records the transform, its
    parameters, the seed and the parent's weight hash.
    """

    kind: ClassVar[str]
    #: Raised when the transform's algorithm changes, so that zoos built by the old one are rebuilt, not reused.
    revision: ClassVar[int] = 1
    #: False for transforms whose result does not descend from the parent's weights (independent negatives).
    derived: ClassVar[bool] = True
    #: True for a thief who only queries the stolen model's API, and so meets its answer post-processor (a
    #: watermark in the answers); every other transform takes the weights, without it.
    queries_api: ClassVar[bool] = False

    def supports(self, task: str) -> bool:
        """Whether this transform, with these settings, can be applied to a model of ``task`` (a preset zoo leaves
        out the suspects it cannot make for the target's task)."""
        return True

    @abstractmethod
    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> ImageModel | None:
        """Change ``model`` (a private copy) in place, or return the model that replaces it (a student of another
        architecture)."""

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def apply(self, model: ImageModel, data: ImageDataset, *, seed: int = 0, progress: bool = False) -> ImageModel:
        """Return a transformed copy of ``model``.

        Args:
            model: the parent (left untouched).
            data: the data the thief has (used by transforms that train).
            seed: seeds everything random in the transform.
            progress: show progress bars.
        """
        child = clone_model(model if self.queries_api else without_answers(model))
        child.spec.info = {}  # the transform may note what it did here; the parent's provenance is not the child's
        torch.manual_seed(seed)
        child = self._transform(child, data, seed, progress) or child
        child.eval()
        info = {
            **{k: v for k, v in model.spec.info.items() if k in ("data",)},
            **child.spec.info,
            "transform": self.kind,
            "params": self.params(),
            "seed": seed,
        }
        if self.derived:
            info["parent_sha256"] = model.spec.info.get("sha256") or state_sha256(model)
        child.spec.info = info
        return child
