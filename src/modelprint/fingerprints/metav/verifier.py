"""The meta-verifier and the joint optimisation of the fingerprint inputs and the verifier over a training zoo."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

#: Prefix of the verifier's tensors in a fingerprint set.
PREFIX = "verifier."

#: Reads one model's features on the inputs: ``read(model, inputs) -> flat feature vector`` (differentiable).
Reader = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def make_verifier(features: int, hidden: int) -> nn.Sequential:
    """The meta-verifier: features -> ``hidden`` ReLU units -> the logit of "pirated"."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def verifier_tensors(verifier: nn.Module) -> dict[str, torch.Tensor]:
    """The verifier's weights as a set stores them (``verifier.0.weight``, ...)."""
    return {PREFIX + name: value.detach().cpu().contiguous() for name, value in verifier.state_dict().items()}


def verifier_from(tensors: dict[str, torch.Tensor]) -> nn.Sequential:
    """Rebuild the verifier a set stores (its sizes read from the tensors), in eval mode."""
    weight = tensors[PREFIX + "0.weight"]
    verifier = make_verifier(weight.shape[1], weight.shape[0])
    verifier.load_state_dict({name[len(PREFIX):]: value.float() for name, value in tensors.items() if name.startswith(PREFIX)})
    return verifier.eval()


@contextlib.contextmanager
def frozen(models: Sequence[nn.Module]) -> Iterator[None]:
    """Models in eval mode with no parameter gradients inside the block (gradients flow to the inputs only);
    their ``requires_grad`` flags and training modes restored after."""
    params = [p for m in models for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    modes = [m.training for m in models]
    for p in params:
        p.requires_grad_(False)
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, mode in zip(models, modes):
            m.train(mode)


def balanced_batch(positives: int, negatives: int, size: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """``size`` (kind, index) pairs, half positives (kind 1) and half negatives (kind 0), drawn without
    replacement while a kind lasts, with replacement beyond."""
    half = max(1, size // 2)

    def draw(count: int) -> list[int]:
        if count >= half:
            return torch.randperm(count, generator=generator)[:half].tolist()
        return torch.randint(count, (half,), generator=generator).tolist()

    return [(1, i) for i in draw(positives)] + [(0, i) for i in draw(negatives)]


def joint_fit(
    inputs: torch.Tensor,
    positives: Sequence[nn.Module],
    negatives: Sequence[nn.Module],
    read: Reader,
    verifier: nn.Module,
    *,
    steps: int,
    models_per_step: int,
    lr_inputs: float,
    lr_verifier: float,
    weight_decay: float,
    generator: torch.Generator,
    progress: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Optimise the fingerprint inputs and the verifier together: each step draws a balanced mini-batch of models,
    reads each one's features on the inputs, and takes one Adam step on both against the binary cross-entropy of
    the verifier's "pirated" logit (1 for positives, 0 for negatives); the inputs are projected back to [0, 1].

    Args:
        inputs: the starting inputs (N x C x H x W in [0, 1]); not modified.
        positives, negatives: the training models (white-box).
        read: a model's features on the inputs (:data:`Reader`).
        verifier: trained in place.
        steps, models_per_step: optimisation steps, models per step (half of each kind).
        lr_inputs, lr_verifier: Adam step sizes.
        weight_decay: the verifier's L2 penalty (Adam's, on its weights).
        generator: seeds the mini-batches.
        progress: a progress bar with the running loss.

    Returns:
        The optimised inputs (detached) and each step's mean loss.
    """
    x = inputs.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([{"params": [x], "lr": lr_inputs}, {"params": verifier.parameters(), "lr": lr_verifier, "weight_decay": weight_decay}])
    losses: list[float] = []
    verifier.train()
    with frozen([*positives, *negatives]), tqdm(range(steps), desc="metav", disable=not progress, leave=False) as bar:
        for _ in bar:
            batch = balanced_batch(len(positives), len(negatives), models_per_step, generator)
            feats = torch.stack([read((positives if kind else negatives)[i], x) for kind, i in batch])
            labels = torch.tensor([float(kind) for kind, _ in batch], device=feats.device)
            loss = F.binary_cross_entropy_with_logits(verifier(feats).squeeze(1), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    verifier.eval()
    return x.detach(), losses


def probabilities(verifier: nn.Module, models: Sequence[nn.Module], inputs: torch.Tensor, read: Reader) -> torch.Tensor:
    """The verifier's probability of "pirated" for each model (no gradients)."""
    with torch.no_grad(), frozen(models):
        if not models:
            return torch.empty(0)
        return torch.sigmoid(verifier(torch.stack([read(m, inputs) for m in models])).squeeze(1)).cpu()
