"""What the schemes read of a target or a suspect, whatever the scheme: the target's identity a set records, the
input shape a modelprint model expects, and a suspect's top-1 labels through any access."""

from __future__ import annotations

from typing import Any

import torch

from ..access import LABELS, Access
from ..errors import InputError


def top1_labels(access: Access, images: torch.Tensor) -> torch.Tensor:
    """The suspect's top-1 label for each image, through any access: a white-box model's argmax, a black-box
    API's argmax of its scores, or its answers when it gives labels only (one query per image).

    Returns:
        int64 labels on the CPU.
    """
    from ..access import BlackBox, WhiteBox

    if isinstance(access, WhiteBox):
        with torch.no_grad():
            outputs = access.model(images.to(access.device))
        return outputs.argmax(dim=1).cpu()
    if isinstance(access, BlackBox):
        answers = access.predict(images)
        return answers.long().view(-1) if LABELS in access.capabilities else answers.argmax(dim=1).long()
    raise InputError(f"top-1 labels need a white-box or black-box access, got {type(access).__name__}")


def target_identity(model: torch.nn.Module) -> dict[str, Any]:
    """What a fingerprint set records of its target: the weights' SHA-256, the class and, for a modelprint model,
    its architecture, input size and task."""
    from ..models import ImageModel, state_sha256

    identity: dict[str, Any] = {"sha256": state_sha256(model), "class": type(model).__name__}
    if isinstance(model, ImageModel):
        identity.update(arch=model.spec.arch, arch_kwargs=model.spec.arch_kwargs, input_size=list(model.spec.input_size), task=model.spec.task)
    return identity


def check_input_shape(model: torch.nn.Module, images: torch.Tensor) -> None:
    """One line when a modelprint model expects images of another shape than ``images`` (N x C x H x W)."""
    from ..models import ImageModel

    if isinstance(model, ImageModel):
        expected = (model.spec.channels, *model.spec.input_size)
        if tuple(images.shape[1:]) != tuple(expected):
            raise InputError(f"images are {'x'.join(map(str, images.shape[1:]))} but the model expects {'x'.join(map(str, expected))}")
