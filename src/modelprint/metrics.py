"""Figures computed from tensors and scores: image quality, robustness/uniqueness/ARUC, ROC, calibrated verdicts.

Conventions of the paper: a suspect whose matching score MS is >= rho is declared pirated; positives are pirated
copies, negatives independently trained models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError


# ---------------------------------------------------------------------------------------------- image quality
def psnr(reference: torch.Tensor, image: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (N x C x H x W, values in [0, peak]); identical images give inf."""
    mse = ((reference.float() - image.float()) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(peak**2 / mse)


def ssim(reference: torch.Tensor, image: torch.Tensor, *, peak: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels and positions.

    The standard constants (K1 = 0.01, K2 = 0.03) and an 11x11 Gaussian window of sigma 1.5 with 'valid' borders;
    the window shrinks to the image for images smaller than it.

    Args:
        reference, image: N x C x H x W tensors with values in [0, peak].

    Returns:
        N values in [-1, 1]; 1 for identical images.
    """
    if reference.shape != image.shape or reference.ndim != 4:
        raise InputError(f"ssim needs two N x C x H x W tensors of one shape, got {tuple(reference.shape)} and {tuple(image.shape)}")
    x, y = reference.double(), image.double()
    channels = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(dim=1).float()


# ---------------------------------------------------------------------------------------------- robustness / uniqueness
def _scores(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise InputError(f"{what}: need a non-empty list of matching scores")
    if not np.isfinite(array).all():
        raise InputError(f"{what}: matching scores must be finite")
    return array


def robustness(positive_scores: Sequence[float], rho: float) -> float:
    """R(rho): the share of positive suspects with MS >= rho (declared pirated)."""
    return float((_scores(positive_scores, "positives") >= rho).mean())


def uniqueness(negative_scores: Sequence[float], rho: float) -> float:
    """U(rho): the share of negative suspects with MS < rho (declared independent)."""
    return float((_scores(negative_scores, "negatives") < rho).mean())


def ru_curves(positive_scores: Sequence[float], negative_scores: Sequence[float], *, steps: int = 100) -> dict[str, list[float]]:
    """R(rho) and U(rho) on the grid rho = 0, 1/L, ..., 1 (L = ``steps``)."""
    rhos = np.linspace(0.0, 1.0, steps + 1)
    return {
        "rho": rhos.tolist(),
        "robustness": [robustness(positive_scores, r) for r in rhos],
        "uniqueness": [uniqueness(negative_scores, r) for r in rhos],
    }


def aruc(positive_scores: Sequence[float], negative_scores: Sequence[float], *, steps: int = 100) -> float:
    """ARUC: the area under min(R(rho), U(rho)), as the mean over rho in {0, 1/L, ..., 1} (the paper, L = 100)."""
    curves = ru_curves(positive_scores, negative_scores, steps=steps)
    return float(np.mean(np.minimum(curves["robustness"], curves["uniqueness"])))


def roc_auc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """Area under the ROC curve: P(a positive outscores a negative), ties counted one half (Mann-Whitney U)."""
    pos, neg = _scores(positive_scores, "positives"), _scores(negative_scores, "negatives")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def tpr_at_fpr(positive_scores: Sequence[float], negative_scores: Sequence[float], fpr: float = 0.01) -> float:
    """The largest share of positives declared pirated by a threshold that declares at most ``fpr`` of negatives."""
    pos, neg = _scores(positive_scores, "positives"), _scores(negative_scores, "negatives")
    best = 0.0
    for threshold in np.unique(np.concatenate([pos, neg, [np.inf]])):
        if (neg >= threshold).mean() <= fpr:
            best = max(best, float((pos >= threshold).mean()))
    return best


# ---------------------------------------------------------------------------------------------- face verification
def pair_scores(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of every pair of images (i < j) and whether the two show the same identity."""
    e = F.normalize(embeddings.float(), dim=1)
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    scores = (e[i] * e[j]).sum(dim=1)
    return scores.numpy(), (labels[i] == labels[j]).numpy()


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float = 0.01) -> float:
    """True-accept rate of same-identity pairs at the threshold that accepts at most ``far`` of different-identity
    pairs (pairs with a similarity above the threshold are accepted)."""
    genuine, impostor = np.sort(scores[same]), np.sort(scores[~same])
    if not len(genuine) or not len(impostor):
        raise InputError("TAR at FAR needs same-identity and different-identity pairs")
    allowed = int(np.floor(far * len(impostor)))  # impostor pairs that may lie above the threshold
    threshold = impostor[len(impostor) - allowed - 1]
    return float((genuine > threshold).mean())


def verification_accuracy(scores: np.ndarray, same: np.ndarray, *, folds: int = 10, seed: int = 0) -> float:
    """Accuracy of same/different decisions on balanced pairs, the LFW protocol: all same-identity pairs and as many
    different-identity pairs (seeded draw), split into ``folds``; each fold is decided at the threshold that is best
    on the other folds (midway between neighbouring scores), and the folds' accuracies are averaged."""
    rng = np.random.default_rng(seed)
    genuine, impostor = np.flatnonzero(same), np.flatnonzero(~same)
    if len(genuine) < folds or len(impostor) < len(genuine):
        raise InputError(f"verification accuracy needs at least {folds} same-identity pairs and more different ones")
    chosen = rng.permutation(np.concatenate([genuine, rng.choice(impostor, len(genuine), replace=False)]))
    s, y = scores[chosen], same[chosen]
    accuracies = []
    for fold in np.array_split(np.arange(len(s)), folds):
        rest = np.setdiff1d(np.arange(len(s)), fold)
        accuracies.append(((s[fold] >= _best_threshold(s[rest], y[rest])) == y[fold]).mean())
    return float(np.mean(accuracies))


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The lowest threshold, midway between neighbouring distinct scores, that decides most pairs right (pairs at or
    above it are called the same identity). One sort and two cumulative sums instead of a pass per threshold."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    # Cut k calls the k lowest scores different: right are the different pairs below the cut and the same ones above.
    right = np.concatenate([[0], np.cumsum(~y)]) + (y.sum() - np.concatenate([[0], np.cumsum(y)]))
    cuts = np.concatenate([[0], np.flatnonzero(s[1:] > s[:-1]) + 1, [len(s)]])  # never inside a run of equal scores
    k = int(cuts[np.argmax(right[cuts])])
    if k == 0:
        return float(s[0] - 1e-6)
    if k == len(s):
        return float(s[-1] + 1e-6)
    return float((s[k - 1] + s[k]) / 2)


# ---------------------------------------------------------------------------------------------- calibrated verdicts
@dataclass(frozen=True)
class Verdict:
    """A decision about one suspect, calibrated on the scores of models known to be independent.

    Attributes:
        score: the suspect's matching score.
        p_value: (1 + #{null scores >= score}) / (n_null + 1): the chance that an independent model scores at least
            this high, valid when the suspect, were it independent, is exchangeable with the null models.
        threshold: the smallest score whose p-value is <= ``alpha`` (inf when n_null is too small for ``alpha``).
        alpha: the false-positive rate the threshold controls.
        pirated: p_value <= alpha.
        n_null: number of null (independent) models.
        method: how the figures were obtained, in words.
    """

    score: float
    p_value: float
    threshold: float
    alpha: float
    pirated: bool
    n_null: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def empirical_p_value(score: float, null_scores: Sequence[float]) -> float:
    """(1 + #{null >= score}) / (n + 1): a conservative permutation p-value (never 0)."""
    null = _scores(null_scores, "null scores")
    return float((1 + (null >= score).sum()) / (len(null) + 1))


def calibrated_threshold(null_scores: Sequence[float], alpha: float = 0.05) -> float:
    """The smallest score whose empirical p-value against ``null_scores`` is <= ``alpha`` (inf if none can be)."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), got {alpha}")
    null = np.sort(_scores(null_scores, "null scores"))[::-1]  # descending
    n = len(null)
    # A score above the k highest null scores (k = 0..n) has p = (1 + k) / (n + 1); the largest k allowed by alpha:
    k = int(np.floor(alpha * (n + 1) - 1 + 1e-12))
    if k < 0:
        return float("inf")
    if k >= n:
        return float("-inf")
    # Strictly above the (k+1)-th highest null score: the next representable float above it.
    return float(np.nextafter(null[k], np.inf))


def verdict(score: float, null_scores: Sequence[float], *, alpha: float = 0.05) -> Verdict:
    """Decide whether a suspect is pirated, controlling the false-positive rate at ``alpha`` on the null models."""
    null = _scores(null_scores, "null scores")
    p = empirical_p_value(score, null)
    return Verdict(
        score=float(score),
        p_value=p,
        threshold=calibrated_threshold(null, alpha),
        alpha=alpha,
        pirated=p <= alpha,
        n_null=len(null),
        method=f"empirical permutation p-value against {len(null)} independently trained models: (1 + #null >= score) / (n + 1)",
    )


# ---------------------------------------------------------------------------------------------- binomial null models
def binomial_tail(successes: int, trials: int, p: float) -> float:
    """P[X >= successes] for X ~ Binomial(trials, p): the chance that a model without the owner's mark gets at least
    ``successes`` of ``trials`` independent key answers right when each is right with probability ``p``."""
    from scipy.stats import binom

    if not 0 <= successes <= trials + 1 or not 0 <= p <= 1:
        raise InputError(f"binomial tail: need 0 <= successes <= trials + 1 and p in [0, 1], got {successes}, {trials}, {p}")
    return float(binom.sf(successes - 1, trials, p))


def binomial_threshold(trials: int, p: float, alpha: float) -> int:
    """The fewest right answers k of ``trials`` with :func:`binomial_tail` (k, trials, p) <= ``alpha`` (``trials + 1``
    when no count is that unlikely): a model is declared marked from k right answers (k is DeepSigns' mismatch
    threshold read the other way: at most ``trials - k`` mismatches)."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), got {alpha}")
    return next((k for k in range(trials + 1) if binomial_tail(k, trials, p) <= alpha), trials + 1)
