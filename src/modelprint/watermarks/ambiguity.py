"""The ambiguity (forgery) test: a thief claims the marked model with a key of their own.

The thief draws keys by the scheme's own procedure (:meth:`~modelprint.watermarks.WatermarkScheme.forge`: another
key chain, another projection and signature ...) without the owner's secret, and counts those that verify. A
scheme is unambiguous when (almost) none do: on the marked model, whose answers the owner's training shaped, and on
independent models. The count is bounded (``keys`` draws, seeded) and reported beside the false-positive rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..access import WHITE_BOX, Access, BlackBox, WhiteBox
from ..fingerprints.base import VerificationResult
from ..journal import image_key
from .base import WatermarkKey, WatermarkScheme

#: Forged keys of one test are drawn from seeds FORGERY_SEED + 0 .. keys - 1 (far from the owners' key seeds).
FORGERY_SEED = 1_000_003


@dataclass
class AmbiguityCount:
    """How many of ``keys`` forged keys a model verifies (p-value at most ``alpha``), per mode."""

    keys: int
    alpha: float
    declared: dict[str, int] = field(default_factory=dict)
    best_p: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {"keys": self.keys, "alpha": self.alpha, "declared": dict(self.declared), "best_p": dict(self.best_p)}


def forged_keys(scheme: WatermarkScheme, key: WatermarkKey, keys: int, seed: int = FORGERY_SEED) -> list[WatermarkKey]:
    """``keys`` forged keys of ``key``'s shape, drawn from seeds ``seed``, ``seed + 1``, ..."""
    return [scheme.forge(key, seed + i) for i in range(keys)]


def ambiguity(scheme: WatermarkScheme, forged: Sequence[WatermarkKey], access: Access, *, alpha: float = 0.05,
              modes: Sequence[str] | None = None) -> AmbiguityCount:
    """Verify ``access`` with every forged key in every mode and count the keys declared at ``alpha``.

    Args:
        scheme: the watermark scheme.
        forged: keys from :func:`forged_keys`.
        access: the model the thief claims (the marked model, or an independent one).
        alpha: the verdict's false-positive level (the scheme's p-value).
        modes: modes to verify in (all the scheme's when None).
    """
    count = AmbiguityCount(keys=len(forged), alpha=alpha)
    if forged and WHITE_BOX not in scheme.modes and isinstance(access, WhiteBox):
        access = answered_once(access.black_box(forged[0].task_adapter()))  # forged keys often ask the same images
    for mode in modes or scheme.modes:
        results: list[VerificationResult] = [scheme.verify(access, key, mode=mode) for key in forged]
        p = [r.p_value if r.p_value is not None else 1.0 for r in results]
        count.declared[mode] = sum(v <= alpha for v in p)
        count.best_p[mode] = min(p) if p else 1.0
    return count


def answered_once(box: BlackBox) -> BlackBox:
    """``box`` computing its answer to each distinct image once (a local model's, for many keys that ask the same
    images); its counters still count every image asked."""
    ask, memo = box.predict_fn, {}

    def predict(images: torch.Tensor) -> torch.Tensor:
        keys = [image_key(x) for x in images]
        new = [i for i, k in enumerate(keys) if k not in memo]
        if new:
            memo.update(zip([keys[i] for i in new], torch.as_tensor(ask(images[new]))))
        return torch.stack([memo[k] for k in keys])

    box.predict_fn = predict
    return box
