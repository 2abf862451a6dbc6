"""Zoo transforms aimed at watermarks, registered beside the others (:data:`modelprint.zoo.TRANSFORMS`) so that zoo
specs, manifests and every executor treat them alike. Fine-pruning, which needs no watermark, is in
:mod:`modelprint.zoo.prune`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..data import ImageDataset
from ..errors import InputError
from ..models import ImageModel
from ..zoo import TRANSFORMS
from ..zoo.base import Transform
from .base import WATERMARKS


@dataclass(frozen=True, kw_only=True)
class Overwrite(Transform):
    """Overwriting: the thief embeds a watermark of the same scheme with a key of their own (drawn from the
    suspect's seed) into the stolen model, with the scheme's own embedding, hoping to erase the owner's.

    Args:
        scheme: the registered watermark scheme the thief uses.
    """

    kind: ClassVar[str] = "overwrite"
    scheme: str = "deepsigns"

    def __post_init__(self) -> None:
        if self.scheme not in WATERMARKS:
            raise InputError(f"overwrite: unknown watermark scheme {self.scheme!r}; registered: {', '.join(sorted(WATERMARKS))}")

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> ImageModel:
        marked, _ = WATERMARKS[self.scheme].named("default", seed=seed).embed(model, data, progress=progress)  # type: ignore[attr-defined]
        return marked  # (a watermark in the answers brings its post-processor)


TRANSFORMS[Overwrite.kind] = Overwrite
