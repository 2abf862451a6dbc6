"""The deep-fidelity backdoor watermark (Hua and Teoh, Pattern Recognition 2023): a key chain of noise triggers
taught to the host by fine-tuning, with the host's features and decision boundary kept.

**Key chain** (:func:`key_chain`): ``seeds`` Gaussian patterns, each the first link of a chain whose next link is the
previous one times a secret random orthogonal matrix ``Q`` (``rows x rows``, acting on the pattern's rows, as the
official code's ``mul_basis``); link ``j`` of every chain is labelled ``j`` (so a chain has at most as many links as
the model has classes). Images are floats in [0, 1]: a pattern ``z`` becomes ``0.5 + scale * z`` on every channel,
with one ``scale`` for the whole key so that no pixel is clipped, which keeps every link an exact orthogonal
transform of its seed (``(x_j - 0.5) = Q^j (x_0 - 0.5)``, norms kept).

**Embedding modes** (configurations, the official code's names): ``ftal`` fine-tunes all layers on the task's
cross-entropy with the triggers mixed into every batch; ``fixll`` does the same with the last layer fixed (FixLL:
the host's decision boundary in feature space is kept bit-identical); ``fixll_twl``/``ftal_twl`` add the total
weight loss (squared change of every trained weight, weight 0.01); ``fixll_pfl`` (the default) replaces the task's
cross-entropy by the penultimate feature loss (summed squared distance of the clean batch's penultimate features to
the host's, per image, weight 0.01) and ``fixll_spl`` by the softmax probability-distribution loss (KL divergence
from the host's softmax; weight 3 here, 1000 in the official code, under which the triggers were not learnt in this
budget: docs/watermarks.md). As the official code: Adam, batch norms frozen (statistics and affine
parameters), each step ``mix`` triggers beside a clean batch of 32. Unlike it, for a CPU's budget: lr 1e-3 instead
of 1e-4, 16 triggers a step instead of 4, and the run stops at the end of the first epoch after which the marked
model answers ``until`` (95%) of the triggers, at most ``epochs`` (30) instead of a fixed 50 epochs: the official
schedule takes 50 passes over 60,000 MNIST images (about 94,000 steps); the shared sets hold 6,000 training images
(188 steps an epoch). The figures that chose this are in docs/watermarks.md.

**Score**: trigger accuracy, the share of triggers a suspect answers with the link's label (labels only are enough;
one query per trigger). **Decision**: the binomial tail of the count right against 1/C (as DeepSigns' keys). A model
whose answer on a trigger depends only on its chain (a constant model, or one that sees every link of a chain alike)
matches exactly one link in C of each full chain: 1/C, whatever it answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..access import BLACK_BOX, LABELS, Access
from ..checks import number, setting_types
from ..data import ImageDataset
from ..errors import InputError, IntegrityError
from ..fingerprints import checks
from ..fingerprints.base import VerificationResult, target_identity
from ..fingerprints.shared import label_agreement
from ..metrics import binomial_tail, binomial_threshold
from ..models import ImageModel, state_sha256
from ..tasks import Classification
from ..train import TrainConfig, after_each_epoch, fit, predict
from ..zoo.finetune import last_layer
from .base import WatermarkKey, WatermarkScheme, marked_copy, penultimate

#: How far a stored link may be from Q times the previous one (relative to the pattern's norm) in a key file.
CHAIN_TOLERANCE = 1e-4

FTAL = {"fix_last_layer": False, "task_loss": True, "pfl_weight": 0.0, "spl_weight": 0.0, "twl_weight": 0.0}
FIXLL = {**FTAL, "fix_last_layer": True}


def orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``n x n`` orthogonal matrix (Haar distributed: QR of a Gaussian matrix, signs fixed by R's diagonal)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def key_chain(seeds: int, links: int, shape: tuple[int, int, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The trigger images of ``seeds`` chains of ``links`` links, chain by chain.

    Args:
        seeds: chains (Gaussian first links, each scaled to norm sqrt(rows), as the official code).
        links: links per chain; link ``j`` is ``Q^j`` times the first, labelled ``j``.
        shape: the images' ``channels x rows x columns``; every channel carries the same pattern.
        generator: draws ``Q`` and the first links.

    Returns:
        ``(images, labels, Q, scale)``: ``seeds * links`` images in [0, 1] (chain ``i``'s link ``j`` at
        ``i * links + j``), their labels, the orthogonal matrix, and the scale mapping a pattern to an image.
    """
    channels, rows, columns = shape
    basis = orthogonal(rows, generator)
    first = torch.randn(seeds, rows, columns, generator=generator)
    first = first / first.flatten(1).norm(dim=1)[:, None, None] * rows**0.5
    chain = [first]
    for _ in range(1, links):
        chain.append(basis @ chain[-1])
    patterns = torch.stack(chain, dim=1).reshape(seeds * links, rows, columns)
    scale = 0.5 / float(patterns.abs().max().clamp_min(1e-12))
    images = (0.5 + scale * patterns)[:, None].expand(-1, channels, -1, -1).clamp(0, 1).contiguous()
    labels = torch.arange(links).repeat(seeds)
    return images, labels, basis, scale


@dataclass(frozen=True, kw_only=True)
class Backdoor(WatermarkScheme):
    """The deep-fidelity backdoor watermark (see the module docstring).

    Args:
        seeds: key chains (the official code: 10).
        links: links per chain, at most the number of classes; None: the number of classes, at most 10 (the
            official code: 10 on 10 classes).
        epochs: the most epochs of the embedding's fine-tuning (Adam; batch norms frozen) ...
        until: ... which stops after the first epoch at whose end the model answers at least this share of the
            triggers with their labels (1: run every epoch).
        lr, batch_size, augment: the embedding's fine-tuning.
        mix: triggers forwarded beside every clean batch.
        fix_last_layer: FixLL, the last layer (weights and bias) kept bit-identical.
        task_loss: the task's cross-entropy on the clean batch (off in the PFL and SPL modes, which keep the host's
            features or softmax instead).
        pfl_weight: weight of the penultimate feature loss.
        spl_weight: weight of the softmax probability-distribution loss.
        twl_weight: weight of the total weight loss.
        alpha: the false-positive level at which the key records how many right answers declare a copy.
        seed: draws the key chain.
    """

    name: ClassVar[str] = "backdoor"
    modes: ClassVar[tuple[str, ...]] = (BLACK_BOX,)
    needs: ClassVar[dict[str, str]] = {BLACK_BOX: LABELS}
    configurations: ClassVar[dict[str, dict]] = {
        "default": {}, "ftal": FTAL, "ftal_twl": {**FTAL, "twl_weight": 0.01}, "fixll": FIXLL,
        "fixll_twl": {**FIXLL, "twl_weight": 0.01}, "fixll_pfl": {**FIXLL, "task_loss": False, "pfl_weight": 0.01},
        "fixll_spl": {**FIXLL, "task_loss": False, "spl_weight": 3.0},
    }

    seeds: int = 10
    links: int | None = None
    epochs: int = 30
    until: float = 0.95
    lr: float = 1e-3
    batch_size: int = 32
    augment: str = "crop,flip"
    mix: int = 16
    fix_last_layer: bool = True
    task_loss: bool = False
    pfl_weight: float = 0.01
    spl_weight: float = 0.0
    twl_weight: float = 0.0
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        setting_types(self)
        for name in ("seeds", "epochs", "batch_size", "mix"):
            number(getattr(self, name), name, minimum=1, integer=True)
        if self.links is not None:
            number(self.links, "links", minimum=2, integer=True)
        for name in ("lr", "pfl_weight", "spl_weight", "twl_weight"):
            number(getattr(self, name), name, minimum=0)
        number(self.alpha, "alpha", above=0, below=1)
        if not self.task_loss and self.pfl_weight == 0 and self.spl_weight == 0:
            raise InputError("without the task loss, the embedding needs pfl_weight or spl_weight > 0 to keep the host's task")

    def links_for(self, classes: int) -> int:
        """The chain's length for a model of ``classes`` classes (:attr:`links`, checked against them).

        Raises:
            InputError: a chain longer than the classes (two links would share a label).
        """
        if classes < 2:
            raise InputError("a classifier with at least 2 classes is needed")
        if self.links is None:
            return min(10, classes)
        if self.links > classes:
            raise InputError(f"a chain of {self.links} links needs {self.links} classes (link j is labelled j); the model has {classes}: set links <= {classes}")
        return self.links

    @property
    def reads_host(self) -> bool:
        """Whether the embedding reads the host beside the model it trains (FixLL, PFL, SPL or TWL)."""
        return self.fix_last_layer or not self.task_loss or self.pfl_weight > 0 or self.spl_weight > 0 or self.twl_weight > 0

    # ------------------------------------------------------------------------------------------------ embedding
    def embed(self, host: ImageModel, data: ImageDataset, *, from_scratch: bool = False, epochs: int | None = None,
              progress: bool = False, held_out: ImageDataset | None = None) -> tuple[ImageModel, WatermarkKey]:
        began = time.perf_counter()
        if host.spec.task != "classification":
            raise InputError(f"the {self.name} watermark marks classifiers, not {host.spec.task} models")
        classes = host.spec.num_outputs
        links = self.links_for(classes)
        if from_scratch and self.reads_host:
            raise InputError("from scratch there is no host to keep: FixLL, PFL, SPL and TWL read it; use the 'ftal' configuration")
        shape = (host.spec.channels, *host.spec.input_size)
        if shape[1:] != tuple(data.images.shape[2:]):
            raise InputError(f"the data's images are {tuple(data.images.shape[2:])}, the model takes {shape[1:]}")
        device = next(host.parameters()).device
        triggers, labels, basis, scale = key_chain(self.seeds, links, shape, torch.Generator().manual_seed(self.seed))
        model = marked_copy(host, from_scratch, self.seed)
        head = last_layer(model)
        frozen = {id(p) for p in head.parameters(recurse=False)} if self.fix_last_layer else set()
        batchnorms = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
        trained = [p for p in model.parameters() if id(p) not in frozen and (from_scratch or id(p) not in batchnorms)]
        if from_scratch:
            config = TrainConfig(epochs=epochs or 15, lr=0.1, batch_size=128, augment=self.augment, seed=self.seed, device=str(device))
        else:
            config = TrainConfig(epochs=epochs or self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer="adam", weight_decay=0.0,
                                 augment=self.augment, seed=self.seed, device=str(device))
        reference, epochs_run = None if from_scratch else host.eval(), [0]
        with penultimate(model) as grab:
            terms = _Terms(self, triggers, labels, model, reference, trained, grab, torch.Generator().manual_seed(self.seed + 1))
            task = nn.CrossEntropyLoss() if self.task_loss or from_scratch else _no_task_loss
            until = 1.0 if from_scratch else self.until  # a model trained from scratch learns its task for every epoch
            with after_each_epoch(lambda m: _stop_at(m, triggers, labels, until, epochs_run)):
                try:
                    fit(model, data, task, config, parameters=trained, terms=terms, progress=progress, desc=self.name)
                except _Reached:
                    pass
        model.eval()
        model.spec.info = {**{k: v for k, v in host.spec.info.items() if k == "data"}, "watermark": self.name,
                           "host_sha256": host.spec.info.get("sha256") or state_sha256(host), "from_scratch": from_scratch}
        key = WatermarkKey(
            scheme=self.name,
            config={**self.settings(), "links": links, "host_sha256": model.spec.info["host_sha256"], "scale": scale},
            task=Classification().to_config(),
            tensors={"samples": triggers, "labels": labels, "basis": basis},
            thresholds={"black_box": 0.5},
            target=target_identity(model),
            stats={"embedding_s": round(time.perf_counter() - began, 2), "embedding_epochs": epochs_run[0], "classes": classes,
                   "declare_black_box": binomial_threshold(len(triggers), 1 / classes, self.alpha)},
        )
        return model, key

    # ------------------------------------------------------------------------------------------------ verification
    def verify(self, access: Access, key: WatermarkKey, *, mode: str | None = None) -> VerificationResult:  # type: ignore[override]
        self.check_key(key)
        mode = self.require(access, mode)
        classes = int(key.stats["classes"])
        result = label_agreement(self, access, key, mode)  # type: ignore[arg-type]
        right = round(result.matching_score * result.n_samples)
        result.p_value = binomial_tail(right, result.n_samples, 1 / classes)
        result.p_value_method = f"binomial: each of {result.n_samples} triggers matched with probability 1/{classes} without the mark"
        return result

    def forge(self, key: WatermarkKey, seed: int) -> WatermarkKey:
        """A thief's key chain of the same shape, drawn from ``seed`` (the ambiguity test)."""
        links = int(key.config["links"])
        triggers, labels, basis, scale = key_chain(len(key.samples) // links, links, tuple(key.samples.shape[1:]), torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
        return WatermarkKey(scheme=self.name, config={**key.config, "seed": seed, "scale": scale}, task=key.task,
                            tensors={"samples": triggers, "labels": labels, "basis": basis}, thresholds=dict(key.thresholds),
                            target=dict(key.target), stats=dict(key.stats))

    # ------------------------------------------------------------------------------------------------ key checks
    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """The generic layout and ``basis`` (a square float matrix over the images' rows)."""
        n = super().check_layout(layout, task)
        rows = checks.require(layout, "basis", kind="float", ndim=2, why="the key chain's orthogonal matrix")
        if rows[0] != rows[1] or rows[0] != layout["samples"][1][2]:
            raise IntegrityError(f"tensor 'basis' is {rows[0]}x{rows[1]}; the triggers have {layout['samples'][1][2]} rows")
        return n

    @classmethod
    def validate(cls, key: WatermarkKey) -> "Backdoor":  # type: ignore[override]
        """The generic checks, and that the triggers are the key chain the settings describe: ``seeds * links``
        images, every channel alike, ``basis`` orthogonal, each link ``basis`` times the previous one and labelled
        by its place in the chain, so that a key cannot be edited into triggers chosen for a suspect's answers."""
        scheme = super().validate(key)
        if scheme.links is None:
            raise IntegrityError("the key does not record its chains' length (links)")
        classes = key.stats.get("classes")
        if not isinstance(classes, int) or classes < scheme.links:
            raise IntegrityError(f"the key does not record a number of classes of at least {scheme.links} (its links)")
        samples, basis, scale = key.samples, key.tensors["basis"].double(), key.config.get("scale")
        if len(samples) != scheme.seeds * scheme.links:
            raise IntegrityError(f"the key holds {len(samples)} triggers; {scheme.seeds} chains of {scheme.links} links are {scheme.seeds * scheme.links}")
        checks.check_number(scale, "the key's scale", low=1e-12)
        checks.check_finite(basis, "basis")
        if not torch.allclose(basis @ basis.T, torch.eye(len(basis), dtype=basis.dtype), atol=1e-4):
            raise IntegrityError("tensor 'basis' is not orthogonal")
        if not bool((samples == samples[:, :1]).all()):
            raise IntegrityError("a trigger's channels differ (every channel of a key chain carries the same pattern)")
        patterns = ((samples[:, 0].double() - 0.5) / scale).reshape(scheme.seeds, scheme.links, *samples.shape[2:])
        drift = (basis @ patterns[:, :-1] - patterns[:, 1:]).flatten(2).norm(dim=2) / patterns[:, :-1].flatten(2).norm(dim=2).clamp_min(1e-12)
        if float(drift.max()) > CHAIN_TOLERANCE:
            raise IntegrityError(f"the triggers are not a key chain: a link is {float(drift.max()):.2g} (relative) from basis times the previous one")
        if not torch.equal(key.labels.long(), torch.arange(scheme.links).repeat(scheme.seeds)):
            raise IntegrityError("the triggers' labels are not their places in the chain (link j is labelled j)")
        return scheme  # type: ignore[return-value]


def penultimate_feature_loss(features: torch.Tensor, host_features: torch.Tensor) -> torch.Tensor:
    """PFL: the summed squared distance between a batch's penultimate features and the host's, per image (exactly
    zero for the host itself)."""
    return (features - host_features).pow(2).sum() / len(features)


def softmax_distribution_loss(outputs: torch.Tensor, host_log_softmax: torch.Tensor) -> torch.Tensor:
    """SPL: the mean KL divergence from the host's softmax (given as log-probabilities) to the model's (exactly zero
    for the host itself: the two log-softmaxes are the same numbers)."""
    return F.kl_div(F.log_softmax(outputs.float(), dim=1), host_log_softmax, log_target=True, reduction="batchmean")


class _Reached(Exception):
    """The embedding reached its trigger accuracy (:attr:`Backdoor.until`) at the end of an epoch."""


def _stop_at(model: nn.Module, triggers: torch.Tensor, labels: torch.Tensor, until: float, epochs_run: list[int]) -> None:
    """After an epoch (the model in eval mode): count it, and stop the run when the triggers are learnt."""
    epochs_run[0] += 1
    if until < 1 and float((predict(model, triggers).argmax(dim=1) == labels).float().mean()) >= until:
        raise _Reached


def _no_task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The PFL and SPL modes' task loss: none (the fidelity term keeps the host's task)."""
    return outputs.sum() * 0.0


class _Terms:
    """The backdoor's training-time terms (:class:`modelprint.train.TrainingTerms`): ``mix`` triggers each step and
    their cross-entropy, plus the fidelity terms against ``host`` (PFL, SPL on the clean batch; TWL on the trained
    weights). ``grab`` records the model's penultimate features (a :class:`penultimate` around the run)."""

    def __init__(self, scheme: Backdoor, triggers: torch.Tensor, labels: torch.Tensor, model: nn.Module, host: ImageModel | None,
                 trained: list[nn.Parameter], grab: penultimate, generator: torch.Generator) -> None:
        self.scheme, self.triggers, self.labels, self.host, self.grab, self.generator = scheme, triggers, labels, host, grab, generator
        ids = {id(p) for p in trained}
        originals = dict(host.named_parameters()) if host is not None else {}
        #: (trained weight, the host's) pairs that the total weight loss reads
        self.pairs = [(p, originals[name].detach()) for name, p in model.named_parameters() if id(p) in ids and name in originals]
        self.host_features: torch.Tensor | None = None
        self.host_log_softmax: torch.Tensor | None = None

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        s = self.scheme
        self.drawn = torch.randperm(len(self.triggers), generator=self.generator)[: min(s.mix, len(self.triggers))]
        if self.host is not None and (s.pfl_weight > 0 or s.spl_weight > 0):
            with torch.no_grad(), penultimate(self.host) as host_grab:
                outputs = self.host(batch)
            self.host_features = host_grab.features.float()  # type: ignore[union-attr]
            self.host_log_softmax = F.log_softmax(outputs.float(), dim=1)
        return self.triggers[self.drawn]

    def loss(self, outputs: torch.Tensor, extra_outputs: torch.Tensor) -> torch.Tensor:
        s, device, n = self.scheme, outputs.device, len(outputs)
        loss = F.cross_entropy(extra_outputs.float(), self.labels[self.drawn].to(device))
        if s.pfl_weight > 0 and self.host_features is not None:
            loss = loss + s.pfl_weight * penultimate_feature_loss(self.grab.features[:n].float(), self.host_features)  # type: ignore[index]
        if s.spl_weight > 0 and self.host_log_softmax is not None:
            loss = loss + s.spl_weight * softmax_distribution_loss(outputs, self.host_log_softmax)
        if s.twl_weight > 0 and self.host is not None:
            loss = loss + s.twl_weight * self.weight_loss()
        return loss

    def weight_loss(self) -> torch.Tensor:
        """TWL: the squared change of every trained weight from the host's."""
        return sum((p - h).pow(2).sum() for p, h in self.pairs)  # type: ignore[return-value]
