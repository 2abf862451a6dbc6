"""Architectures of timm and torchvision, by name (``timm:resnet18``, ``torchvision:resnet50``).

Built without pretrained weights (nothing is downloaded): the weights come from the owner's model file. The
libraries are imported only when such an architecture is built; without them the message says how to install them.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch.nn as nn

from ..errors import InputError
from .signature import keyword_signature

#: The libraries whose classifiers are architectures here, and the package each needs.
HUBS = {"timm": "timm", "torchvision": "torchvision"}
#: ImageNet's normalisation: torchvision's classifiers, and timm's unless their configuration says otherwise.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hub_module(library: str) -> Any:
    """Import ``library`` (``timm`` or ``torchvision``) or raise one clear line."""
    try:
        return importlib.import_module(HUBS[library])
    except ImportError as exc:
        raise InputError(f"{library} architectures need the {library} package ({exc}); "
                         f"install it with: pip install 'modelprint[ecosystem]'") from None


class HubArchitecture:
    """The builder of one timm or torchvision classifier.

    Args:
        library: ``timm`` or ``torchvision``.
        name: the model's name in that library (``timm.list_models()``, ``torchvision.models.list_models()``).
    """

    def __init__(self, library: str, name: str) -> None:
        self.library, self.name = library, name

    def __repr__(self) -> str:
        return f"HubArchitecture({self.library}:{self.name})"

    __signature__ = keyword_signature("num_outputs", in_channels=3)

    def __call__(self, *, num_outputs: int, in_channels: int = 3) -> nn.Module:
        """A freshly initialised classifier with ``num_outputs`` classes taking ``in_channels`` channels."""
        library = hub_module(self.library)
        try:
            if self.library == "timm":
                if not library.is_model(self.name):
                    near = library.list_models(f"*{self.name[:4]}*")[:5]
                    raise InputError(f"timm has no model {self.name!r}" + (f" (similar: {', '.join(near)})" if near else ""))
                return library.create_model(self.name, pretrained=False, num_classes=num_outputs, in_chans=in_channels)
            names = library.models.list_models(module=library.models)
            if self.name not in names:
                raise InputError(f"torchvision has no classification model {self.name!r} (e.g. {', '.join(names[:5])}, ...)")
            if in_channels != 3:
                raise InputError(f"torchvision:{self.name} takes 3-channel images, not {in_channels} (grayscale images are expanded to 3 channels)")
            return library.models.get_model(self.name, weights=None, num_classes=num_outputs)
        except InputError:
            raise
        except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{self.library}:{self.name} cannot be built with {num_outputs} outputs and {in_channels} channels: {first}") from None

    def default_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The mean and std the library's own weights of this architecture expect (ImageNet's by default)."""
        if self.library == "timm":
            config = getattr(hub_module("timm").models, "get_pretrained_cfg", lambda name: None)(self.name)
            if config is not None and getattr(config, "mean", None) and getattr(config, "std", None):
                return tuple(config.mean), tuple(config.std)
        return IMAGENET_MEAN, IMAGENET_STD
