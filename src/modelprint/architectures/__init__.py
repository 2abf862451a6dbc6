"""Architectures by name: modelprint's own, any of timm or torchvision, and converted ONNX graphs.

A model file names its architecture (``ModelSpec.arch``) and its arguments; :func:`architecture` turns the name into
a builder that makes a freshly initialised network, so every command can rebuild a model, clone it or train an
independent one of the same architecture:

- ``resnet18``, ``vgg11_bn``, ``mobilefacenet``: modelprint's own, for small inputs (:mod:`.small`);
- ``timm:NAME`` and ``torchvision:NAME``: any classifier of those libraries, built without pretrained weights
  (:mod:`.hub`; the libraries come with ``pip install 'modelprint[ecosystem]'``);
- ``onnx``: an ONNX graph converted to torch modules, identified by the SHA-256 of its weightless graph
  (:mod:`.onnx_graph`);
- ``onnxruntime``: an ONNX file torch cannot rebuild, run by ONNX Runtime, for black-box use only (:mod:`.onnx_runtime`).

Every builder takes ``num_outputs`` and ``in_channels`` as keywords (and its own further arguments).
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import InputError
from .hub import HUBS, HubArchitecture
from .onnx_graph import ONNX, OnnxArchitecture
from .onnx_runtime import ONNX_RUNTIME, RuntimeArchitecture, inference_only
from .small import ARCHITECTURES

__all__ = ["ARCHITECTURES", "HUBS", "ONNX", "ONNX_RUNTIME", "architecture", "inference_only", "is_architecture", "known_names"]


def known_names() -> str:
    """The architecture names modelprint takes, for messages."""
    return ", ".join([*sorted(ARCHITECTURES), *(f"{hub}:NAME" for hub in HUBS), ONNX, ONNX_RUNTIME])


def is_architecture(name: object) -> bool:
    """Whether ``name`` has the form of an architecture name (no library is imported; a timm or torchvision name
    is looked up only when built)."""
    if not isinstance(name, str):
        return False
    library, sep, model = name.partition(":")
    return name in ARCHITECTURES or name in (ONNX, ONNX_RUNTIME) or (bool(sep) and library in HUBS and bool(model))


def architecture(name: object) -> Callable[..., nn.Module]:
    """The builder of the architecture ``name``.

    Args:
        name: ``resnet18``, ``vgg11_bn``, ``mobilefacenet``, ``timm:NAME``, ``torchvision:NAME``, ``onnx`` or
            ``onnxruntime``.

    Returns:
        A callable taking the architecture's keyword arguments (``num_outputs``, ``in_channels``, ...) and returning
        a freshly initialised network (seed torch beforehand for a reproducible one). Its signature names the
        arguments it takes.

    Raises:
        InputError: an unknown name.
    """
    if not is_architecture(name):
        raise InputError(f"unknown architecture {name!r}; choose one of {known_names()}")
    assert isinstance(name, str)
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if name == ONNX:
        return OnnxArchitecture()
    if name == ONNX_RUNTIME:
        return RuntimeArchitecture()
    library, _, model = name.partition(":")
    return HubArchitecture(library, model)
