"""Pruning a stolen model to hide it (and to shrink it): weight pruning and filter pruning.

A thief keeps a pruned model only if it still works. The rule here: when pruning costs more than ``recover_if``
of the task metric on the thief's data (accuracy points; relative MAE for regression), the pruned model is
fine-tuned with the pruning mask held (pruned weights stay zero), one epoch at a time (each with its own short
warm-up and decay), until its metric on the thief's data is back within ``recover_if`` of the unpruned model's or
``recover_epochs`` epochs are spent. The model records ``recovery_epochs`` and whether it ``recovered``; one that
never recovered is kept (and so flagged) so that the report shows what the thief would have faced.

(On digits, one epoch of 12 steps left a 4/16 filter-pruned ResNet-18 width 16 at 26% accuracy; three epochs
brought it back to 95%.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn as nn

from ..data import ImageDataset
from ..errors import InputError
from ..models import ImageModel
from ..losses import supervised_loss
from ..train import TrainConfig, evaluate, fit
from .base import Transform


@dataclass(frozen=True, kw_only=True)
class _Prune(Transform):
    ratio: float = 0.3
    recover_if: float = 0.05
    recover_epochs: int = 3
    recover_lr: float = 0.01

    def __post_init__(self) -> None:
        if not 0 <= self.ratio < 1:
            raise InputError(f"pruning ratio must lie in [0, 1), got {self.ratio}")

    def _prune(self, model: ImageModel) -> None:
        raise NotImplementedError

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> None:
        task = model.spec.task
        before = evaluate(model, data, task) if self.recover_epochs else None
        unpruned = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._prune(model)
        # Hold at zero exactly what pruning zeroed (conv weights, and for filters also biases and BN scale/shift).
        masks = {name: p != 0 for name, p in model.named_parameters() if not torch.equal(p, unpruned[name])}
        if not self.recover_epochs:
            return
        lost = _metric_lost(before, evaluate(model, data, task), task)
        model.spec.info["pruning_metric_lost"] = lost
        if lost <= self.recover_if:
            return

        hold_mask = mask_holder(model, masks)
        epochs = 0
        while lost > self.recover_if and epochs < self.recover_epochs:
            config = TrainConfig(epochs=1, lr=self.recover_lr, seed=seed + epochs, device=str(model.mean.device))
            fit(model, data, supervised_loss(task, model=model, data=data), config, after_step=hold_mask, progress=progress, desc=f"{self.kind}-recover")
            epochs += 1
            lost = _metric_lost(before, evaluate(model, data, task), task)
        model.spec.info.update(recovery_epochs=epochs, recovered=lost <= self.recover_if, metric_lost_after_recovery=lost)


def mask_holder(model: nn.Module, masks: dict[str, torch.Tensor]) -> Callable[[], None]:
    """A step hook that holds at zero what pruning zeroed: ``masks`` maps parameter names to their kept entries."""

    def hold_mask() -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in masks:
                    p.mul_(masks[name])

    return hold_mask


def _metric_lost(before: float | None, after: float, task: str) -> float:
    """How much pruning cost: accuracy points (verification accuracy for similarity), or the relative growth of
    the MAE."""
    if before is None:
        return 0.0
    if task in ("classification", "similarity"):
        return before - after
    return (after - before) / max(before, 1e-12)


@dataclass(frozen=True, kw_only=True)
class WeightPrune(_Prune):
    """Magnitude weight pruning (Han et al. 2015): in every conv and linear layer, the ``ratio`` of weights with the
    smallest magnitude are set to zero (layer by layer; biases and batch-norm parameters are kept).

    Args:
        ratio: fraction of each layer's weights removed, in [0, 1).
        recover_if, recover_epochs, recover_lr: the recovery rule of this module's docstring (0 epochs: never).
    """

    kind: ClassVar[str] = "weight_prune"

    def _prune(self, model: ImageModel) -> None:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    prune_smallest_(module.weight, self.ratio)


@dataclass(frozen=True, kw_only=True)
class FilterPrune(_Prune):
    """Filter pruning (Li et al. 2017): in every conv layer, the ``ratio`` of filters with the smallest L1 norm are
    removed. Removal is done by zeroing, which keeps the architecture (and the model file format): the filter's
    weights and bias and, when a batch norm follows, that channel's scale and shift are set to zero, so the channel
    outputs zero and the dependent input channels of the next layer receive nothing — the network computes what
    the physically pruned one computes. (In residual blocks the shortcut still carries its own channel.)

    A depthwise conv (one filter per input channel, as in MobileNet-style blocks) has no filters of its own to
    choose: its channels are those of the conv that feeds it, so it loses exactly the channels that conv lost (a
    physical pruner removes them together). Choosing its own smallest filters instead would remove a second,
    different set of channels, nearly twice ``ratio`` of the block, and leave the fed channels as constants (the
    batch norm's shift after a zero input); revision 1 of this transform did that.

    Args:
        ratio: fraction of each conv layer's filters removed (the paper: 1/16 ... 7/16).
        recover_if, recover_epochs, recover_lr: the recovery rule of this module's docstring.
    """

    kind: ClassVar[str] = "filter_prune"
    revision: ClassVar[int] = 2

    def _prune(self, model: ImageModel) -> None:
        with torch.no_grad():
            fed: tuple[int, torch.Tensor] | None = None  # (out_channels, dropped channels) of the previous conv
            for conv, norm in conv_batchnorm_pairs(model):
                if is_depthwise(conv):
                    drop = fed[1] if fed is not None and fed[0] == conv.in_channels else conv.weight.new_zeros(0, dtype=torch.long)
                else:
                    k = int(round(self.ratio * conv.out_channels))
                    drop = conv.weight.abs().flatten(1).sum(dim=1).argsort()[:k]
                conv.weight[drop] = 0
                if conv.bias is not None:
                    conv.bias[drop] = 0
                if norm is not None:
                    norm.weight[drop] = 0
                    norm.bias[drop] = 0
                fed = (conv.out_channels, drop)


@dataclass(frozen=True, kw_only=True)
class FinePrune(Transform):
    """Fine-pruning (Liu, Dolan-Gavitt, Garg; RAID 2018), the defence against backdoors a thief may run on a marked
    model: the ``ratio`` of the last conv layer's channels least active on the thief's clean data (mean activation
    after the batch norm that follows it, rectified) are removed (zeroed with that batch norm's scale and shift, as
    :class:`FilterPrune` does), then the model is fine-tuned for ``epochs`` with them held at zero.

    Args:
        ratio: fraction of the last conv layer's channels removed, in [0, 1).
        epochs, lr: the fine-tuning after pruning.
        images: clean images whose activations rank the channels.
    """

    kind: ClassVar[str] = "fine_prune"
    ratio: float = 0.5
    epochs: int = 2
    lr: float = 0.01
    images: int = 1024

    def __post_init__(self) -> None:
        if not 0 <= self.ratio < 1:
            raise InputError(f"pruning ratio must lie in [0, 1), got {self.ratio}")

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> None:
        pairs = conv_batchnorm_pairs(model)
        if not pairs:
            raise InputError("fine-pruning needs a model with a conv layer")
        conv, norm = pairs[-1]
        seen: list[torch.Tensor] = []
        handle = (norm or conv).register_forward_hook(lambda m, i, o: seen.append(o.detach().relu().mean(dim=(0, 2, 3))))
        try:
            with torch.no_grad():
                model.eval()
                for start in range(0, min(self.images, len(data)), 256):
                    model(data.images[start : min(start + 256, self.images)].to(conv.weight.device))
        finally:
            handle.remove()
        drop = torch.stack(seen).mean(dim=0).argsort()[: int(round(self.ratio * conv.out_channels))]
        with torch.no_grad():
            for p in (conv.weight, conv.bias, *((norm.weight, norm.bias) if norm is not None else ())):
                if p is not None:
                    p[drop] = 0
        held = {id(conv.weight), *((id(norm.weight), id(norm.bias)) if norm is not None else ())}
        masks = {name: p != 0 for name, p in model.named_parameters() if id(p) in held}
        model.spec.info["pruned_channels"] = len(drop)
        config = TrainConfig(epochs=self.epochs, lr=self.lr, seed=seed, device=str(model.mean.device))
        fit(model, data, supervised_loss(model.spec.task, model=model, data=data), config, after_step=mask_holder(model, masks), progress=progress, desc=self.kind)


def is_depthwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` filters each input channel on its own (groups = in = out channels, more than one)."""
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def conv_batchnorm_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Every conv layer with the batch norm that directly follows it in registration order (or None)."""
    modules = [m for m in model.modules() if not list(m.children())]
    pairs = []
    for i, module in enumerate(modules):
        if isinstance(module, nn.Conv2d):
            following = modules[i + 1] if i + 1 < len(modules) else None
            norm = following if isinstance(following, nn.BatchNorm2d) and following.num_features == module.out_channels else None
            pairs.append((module, norm))
    return pairs


def prune_smallest_(weight: torch.Tensor, ratio: float) -> None:
    """Zero the ``ratio`` of entries of ``weight`` with the smallest magnitude, in place."""
    k = int(round(ratio * weight.numel()))
    if k == 0:
        return
    threshold = weight.abs().flatten().kthvalue(k).values
    weight[weight.abs() <= threshold] = 0.0
