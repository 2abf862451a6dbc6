"""Differentiable Grad-CAM (eq. 1-2 of the paper) and discovery of the layer it reads.

``w_k = mean_ij dF/dA^k_ij`` and ``S = ReLU(sum_k w_k A^k)``. With ``create_graph=True`` the gradient in ``w_k`` keeps
its graph, so a loss on ``S`` can be back-propagated to the input (double back-propagation) for fingerprint
generation. Hooks live only inside a ``with GradCAM(...)`` block.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .errors import InputError


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return (name, module) for a layer given by its dotted name or as a module of ``model``."""
    modules = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for name, module in modules.items():
            if module is layer:
                return name, module
        raise InputError("the Grad-CAM layer is not a sub-module of the model")
    if layer not in modules or layer == "":
        raise InputError(f"the model has no layer named {layer!r}")
    return layer, modules[layer]


def find_cam_layer(model: nn.Module, example: torch.Tensor, *, min_side: int = 1) -> str:
    """The name of the layer whose output Grad-CAM should read.

    A model may declare it (``model.cam_layer``, as modelprint's architectures and :class:`ImageModel` do).
    Otherwise the choice is the last sub-module, in execution order, whose output is a 4-D feature map with more
    than one spatial position: the output of the last convolutional stage, before global pooling. With
    ``min_side`` > 1, a choice whose map is narrower than ``min_side`` on either side gives way to the last
    sub-module whose map is at least ``min_side`` on both (VGG11-BN reads 2x2 at 32x32 and 1x1 at 28x28; its
    4x4 stage is read instead with ``min_side=4``).

    Raises:
        InputError: no sub-module produces a spatial map (wide enough).
    """
    declared = getattr(model, "cam_layer", None)
    name = resolve_layer(model, declared)[0] if isinstance(declared, str) and declared else None
    if name is not None and min_side <= 1:
        return name
    grids = _grids(model, example)
    if name is not None and min(grids.get(name, (min_side, min_side))) >= min_side:
        return name
    spatial = [name for name, (h, w) in grids.items() if h * w > 1 and min(h, w) >= min_side]
    if not spatial:
        wide = f" at least {min_side}x{min_side}" if min_side > 1 else ""
        raise InputError(f"no layer of the model produces a spatial feature map{wide}: Grad-CAM needs a CNN")
    return spatial[-1]


def _grids(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int]]:
    """The spatial size of every 4-D output of ``model``'s sub-modules on one example, in the order they finish
    (an eval-mode pass: batch-norm statistics are neither read from one sample nor updated; modes restored)."""
    grids: dict[str, tuple[int, int]] = {}
    handles = []
    for name, module in model.named_modules():
        if name == "":
            continue

        def hook(_module, _inputs, output, name=name):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                grids.pop(name, None)  # a module called twice counts where it last finished
                grids[name] = (int(output.shape[2]), int(output.shape[3]))

        handles.append(module.register_forward_hook(hook))
    modes = {module: module.training for module in model.modules()}
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return grids


class GradCAM:
    """Grad-CAM of a scalar score per sample, with the hook released on exit.

    Args:
        model: the network (put it in eval mode first: batch statistics would couple the samples).
        layer: the layer to read, by name or module; found by :func:`find_cam_layer` when None.

    Example::

        with GradCAM(model, "net.layer4") as cam:
            maps, outputs = cam(x, lambda out: task.score(out, labels))
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module | None = None) -> None:
        self.model = model
        self._layer = layer
        self.layer_name: str | None = None
        self._activation: torch.Tensor | None = None
        self._handle = None

    def __enter__(self) -> "GradCAM":
        if self._layer is None:
            raise InputError("GradCAM needs a layer; use find_cam_layer(model, example) to find one")
        self.layer_name, module = resolve_layer(self.model, self._layer)
        self._handle = module.register_forward_hook(self._keep_activation)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activation = None

    def _keep_activation(self, _module, _inputs, output) -> None:
        self._activation = output

    def __call__(
        self,
        x: torch.Tensor,
        score_fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAM maps of ``score_fn(model(x))``.

        Args:
            x: input batch (N x C x H x W).
            score_fn: maps the model's outputs to one score per sample (F_c).
            create_graph: keep the graph of the maps so they can be differentiated w.r.t. ``x``.

        Returns:
            ``(maps, outputs)``: maps N x h x w (ReLU'd, not normalised) and the model's outputs.
        """
        if self._handle is None:
            raise RuntimeError("use GradCAM inside a 'with' block")
        if not x.requires_grad:
            # The activations need a graph even when the model's parameters are frozen.
            x = x.detach().requires_grad_(True)
        outputs = self.model(x)
        activation = self._activation
        if activation is None:
            raise InputError(f"layer {self.layer_name!r} was not used in the forward pass")
        scores = score_fn(outputs)
        if scores.shape != (len(x),):
            raise InputError(f"the score function must return one value per sample, got shape {tuple(scores.shape)}")
        # Samples are independent in eval mode, so the gradient of the sum gives every sample its own gradient.
        (grads,) = torch.autograd.grad(scores.sum(), activation, create_graph=create_graph)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        maps = torch.relu((weights * activation).sum(dim=1))
        if not create_graph:
            maps, outputs = maps.detach(), outputs.detach()
        return maps, outputs


def normalise_maps(maps: torch.Tensor, how: str = "max", eps: float = 1e-12) -> torch.Tensor:
    """Normalise each saliency map: ``"max"`` divides by its maximum (values in [0, 1]), ``"sum"`` by its sum, and
    ``"none"`` leaves it. An all-zero map stays zero."""
    if how == "none":
        return maps
    flat = maps.flatten(1)
    if how == "max":
        denom = flat.max(dim=1).values
    elif how == "sum":
        denom = flat.sum(dim=1)
    else:
        raise InputError(f"normalisation must be 'max', 'sum' or 'none', got {how!r}")
    return maps / (denom.view(-1, *([1] * (maps.ndim - 1))) + eps)
