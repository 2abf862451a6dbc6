"""What the meta-verifier reads of a suspect's answers on the N fingerprint inputs, per task.

- **classification**: the class probabilities (an API's scores, or the softmax of a model's logits: the same).
- **regression**: the values, standardised by the target's own mean and spread on the inputs as first drawn
  (stored in the set), so that the verifier reads numbers near 1 whatever the unit.
- **similarity**: the cosine similarity of every pair of the N embeddings (N(N-1)/2 values). An embedding's
  coordinates mean nothing across models (any rotation of a face model's space is the same model), its geometry
  does: pairs of inputs compared through the suspect's own embeddings, as the saliency scheme compares a sample
  with its pair image. Cosine for either F_c of the task: a distance between raw embeddings depends on each model's
  scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...tasks import Classification, Regression, Task


def feature_count(task: Task, n: int, outputs: int) -> int:
    """The verifier's input size for N inputs and ``outputs`` values per answer."""
    if isinstance(task, (Classification, Regression)):
        return n * outputs
    return n * (n - 1) // 2


def features(task: Task, answers: torch.Tensor, norm: torch.Tensor, *, deployed: bool) -> torch.Tensor:
    """The verifier's input from one suspect's answers on the N inputs.

    Args:
        task: the set's task.
        answers: N x K, a model's raw outputs (``deployed=False``) or what an API returned (``deployed=True``).
        norm: ``[shift, scale]`` of regression values (read only for regression).
        deployed: whether ``answers`` are an API's.

    Returns:
        A flat float vector of :func:`feature_count` values (differentiable in ``answers``).
    """
    flat = answers.reshape(len(answers), -1).float()
    if isinstance(task, Classification):
        return (flat if deployed else F.softmax(flat, dim=1)).reshape(-1)
    if isinstance(task, Regression):
        return ((flat - norm[0]) / norm[1]).reshape(-1)
    unit = F.normalize(flat, dim=1)
    gram = unit @ unit.T
    rows, cols = torch.triu_indices(len(flat), len(flat), offset=1, device=flat.device)
    return gram[rows, cols]


def regression_norm(task: Task, outputs: torch.Tensor) -> torch.Tensor:
    """``[shift, scale]`` of the target's answers (its mean and standard deviation) for regression; ``[0, 1]``
    otherwise."""
    if not isinstance(task, Regression):
        return torch.tensor([0.0, 1.0])
    values = outputs.reshape(-1).float()
    return torch.stack([values.mean(), values.std().clamp_min(1e-6)]).detach().cpu()
