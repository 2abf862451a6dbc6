"""The one training loop: data held as tensors, seeded, with tensor-side augmentation and an optional bf16 autocast.

Used to train targets, independent (negative) models and every zoo transform that trains (fine-tuning, retraining,
distillation), so that all of them are trained the same way.
"""

from __future__ import annotations

import contextlib
import math
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checks
from .checks import setting_types
from .data import DataSplits, ImageDataset
from .errors import InputError
from .metrics import pair_scores, verification_accuracy
from .losses import supervised_loss
from .models import ImageModel, build_model


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of one training run (recorded beside the model).

    Args:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: peak learning rate (linear warm-up over the first 15% of steps, then linear decay to zero).
        optimizer: ``"sgd"`` (with Nesterov momentum) or ``"adam"`` (AdamW: Adam with decoupled weight decay).
        momentum, weight_decay: SGD settings.
        label_smoothing: for classification.
        augment: comma-separated ``crop`` (random 4-pixel translation with reflection padding) and ``flip``
            (horizontal mirror); empty for none.
        bf16: run forward and backward under bfloat16 autocast. Off by default: on this project's reference CPU
            (2-core AMD EPYC without bf16 instructions) it measured 10x slower, not faster.
        channels_last: keep activations in NHWC memory order (measured 1.3-1.4x faster training on that CPU).
        seed: seeds the batch order and the augmentation (initialise the model with ``torch.manual_seed`` before).
        device: where to train.
    """

    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: str = "crop,flip"
    bf16: bool = False
    channels_last: bool = True
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        setting_types(self)
        checks.number(self.epochs, "epochs", minimum=0, integer=True)
        checks.number(self.batch_size, "batch_size", minimum=1, integer=True)
        checks.number(self.lr, "lr", above=0)
        checks.number(self.momentum, "momentum", minimum=0, below=1)
        checks.number(self.weight_decay, "weight_decay", minimum=0)
        checks.number(self.label_smoothing, "label_smoothing", minimum=0, below=1)
        unknown = {a.strip() for a in self.augment.split(",") if a.strip()} - {"crop", "flip"}
        if unknown:
            raise InputError(f"unknown augmentation {sorted(unknown)}; use 'crop', 'flip' or both")
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")

    def to_dict(self) -> dict:
        """The settings as recorded in recipes; ``optimizer`` only when not SGD, so that the recipes of models trained
        before it existed stay what they were (and those models are reused)."""
        settings = asdict(self)
        if settings["optimizer"] == "sgd":
            del settings["optimizer"]
        return settings


@dataclass
class TrainResult:
    """What a training run did: per-epoch loss, the test metric, seconds."""

    losses: list[float]
    test_metric: float | None
    metric_name: str
    seconds: float


#: The reflection padding of the 'crop' augmentation (a random translation of up to this many pixels).
CROP_PAD = 4


def augment_batch(x: torch.Tensor, augment: str, generator: torch.Generator, pad: int = CROP_PAD) -> torch.Tensor:
    """Random translation (reflect-padded crop) and/or horizontal flip, vectorised over the batch."""
    kinds = {a.strip() for a in augment.split(",") if a.strip()}
    unknown = kinds - {"crop", "flip"}
    if unknown:
        raise InputError(f"unknown augmentation {sorted(unknown)}; use 'crop', 'flip' or both")
    n, _, h, w = x.shape
    if "crop" in kinds:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if "flip" in kinds:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class TrainingTerms(Protocol):
    """Terms a training run adds to the task's loss, every step (a watermark's embedding): images of their own,
    forwarded together with the batch, and a loss over the outputs.

    The images go through the same forward pass as the batch so that batch norms normalise them with the batch's
    statistics, as they will be at test time with running statistics of such batches: a separate forward pass of
    out-of-distribution inputs (noise keys) either moves the running statistics or, in eval mode, yields
    activations the task never saw (one such run collapsed to a single class on digits).
    """

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """Images (in [0, 1]) to forward with this step's (augmented) batch; may be empty."""

    def loss(self, outputs: torch.Tensor, extra_outputs: torch.Tensor) -> torch.Tensor:
        """The terms' loss, from the model's outputs on the batch and on :meth:`inputs`'s images (a term that
        reads activations records them with a forward hook around the run)."""


#: Called with the model after every epoch of every :func:`fit` run inside :func:`after_each_epoch` (innermost last).
_EPOCH_HOOKS: ContextVar[tuple[Callable[[nn.Module], None], ...]] = ContextVar("epoch_hooks", default=())


@contextlib.contextmanager
def after_each_epoch(hook: Callable[[nn.Module], None]) -> Iterator[None]:
    """Call ``hook(model)`` after every epoch of every :func:`fit` run inside the block (the model in eval mode).

    A hook on the one training loop for code that does not call :func:`fit` itself: the zoo keeps checkpoints of
    the models its transforms train this way, whichever transform trains them and however many runs it makes.
    """
    token = _EPOCH_HOOKS.set((*_EPOCH_HOOKS.get(), hook))
    try:
        yield
    finally:
        _EPOCH_HOOKS.reset(token)


def _autocast(config: TrainConfig):
    if not config.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(config.device).type, dtype=torch.bfloat16)


def _schedule(step: int, total: int, warmup_fraction: float = 0.15) -> float:
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def fit(
    model: nn.Module,
    data: ImageDataset,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: TrainConfig,
    *,
    targets: torch.Tensor | None = None,
    parameters: list[nn.Parameter] | None = None,
    teacher: nn.Module | None = None,
    after_step: Callable[[], None] | None = None,
    terms: "TrainingTerms | None" = None,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Train ``model`` in place on ``data`` and return the mean loss of each epoch.

    Args:
        model: any network taking images in [0, 1].
        data: training images and labels.
        loss_fn: ``loss_fn(outputs, targets_of_batch)``; when it is an ``nn.Module`` (ArcFace), its parameters are
            trained too.
        config: the run's settings.
        targets: what ``loss_fn`` compares with, row-aligned with ``data`` (its labels when None; a teacher's
            outputs for distillation).
        parameters: the parameters to update (all when None; the last layer for last-layer fine-tuning).
        teacher: when given, the targets of a batch are the teacher's outputs on that (augmented) batch
            (distillation); ``targets`` is then ignored.
        after_step: called after every optimiser step (to hold a pruning mask, for instance).
        terms: training-time terms (a watermark's embedding, :class:`TrainingTerms`): each step, the images they
            add are forwarded with the batch (so batch norms see one batch) and their loss is added to the task's;
            the epoch losses returned include it.
        progress: show a progress bar.
        desc: the progress bar's label.
    """
    if config.epochs < 0 or config.batch_size < 1:
        raise InputError("epochs must be >= 0 and batch_size >= 1")
    device = torch.device(config.device)
    model.to(device)
    images = data.images.to(device)
    if config.channels_last and _channels_last_safe(model):
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    targets = (data.labels if targets is None else targets).to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval()
    if "crop" in config.augment and images.ndim == 4 and min(images.shape[-2:]) <= CROP_PAD:
        raise InputError(f"images of {images.shape[-2]}x{images.shape[-1]} are too small for the 'crop' augmentation "
                         f"({CROP_PAD}-pixel reflection padding needs sides > {CROP_PAD}); use larger images or --augment ''")
    generator = torch.Generator().manual_seed(config.seed)
    params = parameters if parameters is not None else [p for p in model.parameters() if p.requires_grad]
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
        params = [*params, *loss_fn.parameters()]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adam":  # decoupled weight decay (AdamW), the usual pairing with a one-cycle schedule
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=config.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total = steps_per_epoch * config.epochs
    losses: list[float] = []
    step = 0
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    model.train()
    if parameters is not None:
        _freeze_other_batchnorms(model, params)
    try:
        for _ in range(config.epochs):
            order = torch.randperm(len(images), generator=generator).to(device)
            running, count = 0.0, 0
            for start in range(0, len(images), config.batch_size):
                idx = order[start : start + config.batch_size]
                if len(idx) < 2 and len(images) > 1:
                    continue  # batch norm cannot train on a single image
                x = augment_batch(images[idx], config.augment, generator) if config.augment else images[idx]
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * _schedule(step, total)
                if teacher is not None:
                    with torch.no_grad():
                        batch_targets = teacher(x).float()
                else:
                    batch_targets = targets[idx]
                with _autocast(config):
                    if terms is None:
                        loss = loss_fn(model(x), batch_targets)
                    else:
                        extra = terms.inputs(x).to(device)
                        outputs = model(torch.cat([x, extra]) if len(extra) else x)
                        loss = loss_fn(outputs[: len(x)], batch_targets) + terms.loss(outputs[: len(x)], outputs[len(x) :])
                optimizer.zero_grad(set_to_none=True)
                loss.float().backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
                running += float(loss.detach()) * len(idx)
                count += len(idx)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running / max(count, 1):.3f}")
            losses.append(running / max(count, 1))
            for hook in _EPOCH_HOOKS.get():
                model.eval()
                hook(model)
                model.train()
                if parameters is not None:
                    _freeze_other_batchnorms(model, params)
    finally:
        bar.close()
        model.eval()
    return losses


def _channels_last_safe(model: nn.Module) -> bool:
    """Whether NHWC memory order is safe: torch 2.13's CPU kernels corrupted the heap (crashing the process) when
    training with two threads networks whose conv layers have fewer than 16 output channels in channels_last (fewer
    than 8 on one machine, fewer than 16 on an AVX-512 AMD EPYC); those train NCHW."""
    return all(m.out_channels >= 16 for m in model.modules() if isinstance(m, nn.Conv2d))


def _freeze_other_batchnorms(model: nn.Module, params: list[nn.Parameter]) -> None:
    """Keep batch-norm statistics frozen where the layer's parameters are not trained (last-layer fine-tuning)."""
    trained = {id(p) for p in params}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(id(p) in trained for p in module.parameters()):
            module.eval()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The model's outputs on ``images``, in batches, on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)])


def evaluate(model: nn.Module, data: ImageDataset, task_name: str, *, batch_size: int = 512) -> float:
    """The task metric of ``model`` on ``data`` (:func:`metric_name`): accuracy (classification), mean absolute
    error (regression) or verification accuracy on pairs of ``data``'s images (similarity, LFW protocol on cosine
    similarity, :func:`modelprint.metrics.verification_accuracy`)."""
    return metric_of(predict(model, data.images, batch_size=batch_size), data, task_name)


def metric_of(outputs: torch.Tensor, data: ImageDataset, task_name: str) -> float:
    """The task metric of :func:`evaluate` from a model's ``outputs`` on ``data``'s images (row-aligned)."""
    if task_name == "classification":
        return float((outputs.argmax(dim=1) == data.labels).float().mean())
    if task_name == "regression":
        return float((outputs.reshape(len(outputs), -1)[:, 0] - data.labels).abs().mean())
    if task_name == "similarity":
        return verification_accuracy(*pair_scores(outputs, data.labels))
    raise InputError(f"no test metric for task {task_name!r}")


def metric_name(task_name: str) -> str:
    return {"classification": "accuracy", "regression": "mae", "similarity": "verification_accuracy"}.get(task_name, "metric")


def train_supervised(
    model: nn.Module,
    train: ImageDataset,
    config: TrainConfig,
    *,
    task_name: str = "classification",
    test: ImageDataset | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train on labels with the task's loss and measure the test metric."""
    start = time.perf_counter()
    loss = supervised_loss(task_name, config.label_smoothing, model=model, data=train)
    losses = fit(model, train, loss, config, progress=progress, desc=desc)
    metric = evaluate(model, test, task_name) if test is not None else None
    return TrainResult(losses, metric, metric_name(task_name), time.perf_counter() - start)


def train_new_model(
    data: DataSplits,
    *,
    arch: str = "resnet18",
    width: int | None = 16,
    config: TrainConfig = TrainConfig(),
    task_name: str = "classification",
    embedding_dim: int = 128,
    progress: bool = True,
    desc: str = "train",
) -> tuple[ImageModel, TrainResult]:
    """Initialise a model for ``data`` with ``torch.manual_seed(config.seed)``, train it, and record how.

    ``task_name`` sets the head: one output per class (classification), one value (regression, with the output
    map of :class:`ModelSpec` set to the training labels' mean and standard deviation) or an ``embedding_dim``
    embedding (similarity, trained with :class:`ArcFace`). The returned model's ``spec.info`` holds the data set, the training settings and the test metric.
    """
    if task_name in ("classification", "similarity") and data.num_classes is None:
        raise InputError(f"{data.name}: the {task_name} task needs integer class (identity) labels")
    if task_name == "regression" and not data.train.is_regression:
        raise InputError(f"{data.name}: regression needs float values as labels, got integer labels")
    num_outputs = {"classification": data.num_classes, "regression": 1, "similarity": embedding_dim}.get(task_name)
    if num_outputs is None:
        raise InputError(f"unknown task {task_name!r}; choose classification, regression or similarity")
    # A regressor learns standardised values and answers in the labels' units (its spec holds the map).
    values = data.train.labels.float()
    affine = {"output_shift": float(values.mean()), "output_scale": float(values.std().clamp_min(1e-6))} if task_name == "regression" else {}
    torch.manual_seed(config.seed)
    model = build_model(
        arch,
        num_outputs=num_outputs,
        channels=data.train.channels,
        input_size=data.train.image_size,
        width=width,
        task=task_name,
        **affine,
    )
    result = train_supervised(model, data.train, config, task_name=task_name, test=data.test, progress=progress, desc=desc)
    model.spec.info.update(
        data=data.name,
        train=config.to_dict(),
        test_metric=result.test_metric,
        metric_name=result.metric_name,
        train_seconds=round(result.seconds, 2),
    )
    return model.to("cpu").eval(), result
