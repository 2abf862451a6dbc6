"""Model extraction through a prediction API: the thief has no weights, only a query budget and images of their own.

The thief sends images to the stolen model's API — its answer post-processor included (a watermark in the answers
reaches the thief), counted and bounded by the same :class:`~modelprint.access.BlackBox` that verifications use —
keeps the answers (probabilities, or top-1 labels only) and trains a fresh student on them. Each image is asked
once: the student's augmented views of an image learn that image's one answer (a thief cannot afford a query per
view).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..access import LABELS, BlackBox
from ..checks import number
from ..data import ImageDataset, load_data
from ..errors import InputError
from ..models import ImageModel, fresh_like
from ..tasks import Classification
from ..train import TrainConfig, fit
from .base import Transform
from .distill import label_loss, same_architecture, student_of


def api_of(model: ImageModel, *, budget: int | None, labels_only: bool, batch_size: int = 256) -> BlackBox:
    """``model`` behind a prediction API as it is deployed: its probabilities (after its answer post-processor), or
    its top-1 labels only, counted against ``budget``."""
    return BlackBox.from_model(model, Classification(), budget=budget, batch_size=batch_size, labels_only=labels_only,
                               identity={"kind": "function", "what": "the stolen model's API"})


def extraction_targets(api: BlackBox, images: torch.Tensor) -> torch.Tensor:
    """Ask ``api`` once for every image (``len(images)`` queries) and return what a student learns from: the
    answers' log-probabilities (N x classes, floor 1e-12), or the labels (N) of an API that answers labels only.

    Raises:
        QueryBudgetExceeded: more images than the API's budget allows (nothing is sent then).
    """
    answers = api.predict(images)
    if LABELS in api.capabilities:
        return answers.long().view(-1)
    return answers.float().clamp_min(1e-12).log()


@dataclass(frozen=True, kw_only=True)
class Extract(Transform):
    """A student trained on the stolen model's API answers to the thief's own images (see the module docstring).

    Args:
        budget: the most images the thief asks (one query each; every image they have when they have fewer);
            None asks every image.
        labels: what the API gives: ``"soft"`` (probabilities; the student learns them by Hinton's KL at
            ``temperature`` on their logarithms) or ``"hard"`` (top-1 labels only: cross-entropy).
        temperature: of the soft answers.
        epochs, lr, optimizer, augment: the student's training (the thief's own images, augmented).
        arch, width: the student's architecture (the stolen model's when None) and width.
        transfer: a data spec whose training split holds the thief's images instead of their own split of the
            owner's data (loaded at the stolen model's channels and size; its labels are never read).
        batch_size: images per request to the API.
    """

    kind: ClassVar[str] = "extract"
    queries_api: ClassVar[bool] = True
    budget: int | None = None
    labels: str = "soft"
    temperature: float = 4.0
    epochs: int = 15
    lr: float = 0.1
    optimizer: str = "sgd"
    augment: str = "crop,flip"
    arch: str | None = None
    width: int | None = None
    transfer: str | None = None
    batch_size: int = 256

    def supports(self, task: str) -> bool:
        return task == "classification"  # a classifier's API: probabilities or labels

    def __post_init__(self) -> None:
        if self.budget is not None:
            number(self.budget, "budget", minimum=1, integer=True)
        if self.labels not in ("soft", "hard"):
            raise InputError(f"labels must be 'soft' or 'hard', got {self.labels!r}")
        number(self.temperature, "temperature", above=0)
        number(self.epochs, "epochs", minimum=0, integer=True)
        number(self.batch_size, "batch_size", minimum=1, integer=True)
        if self.optimizer not in ("sgd", "adam"):
            raise InputError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")

    def _transform(self, model: ImageModel, data: ImageDataset, seed: int, progress: bool) -> ImageModel:
        spec = model.spec
        if self.transfer is not None:
            data = load_data(self.transfer, channels=spec.channels, size=spec.input_size[0]).train
        count = len(data) if self.budget is None else min(self.budget, len(data))  # a thief asks each image once
        images = data.images[torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]]
        api = api_of(model, budget=count, labels_only=self.labels == "hard", batch_size=self.batch_size)
        return self.steal(api, images, model, seed=seed, progress=progress)

    def steal(self, api: BlackBox, images: torch.Tensor, like: ImageModel, *, seed: int, progress: bool = False) -> ImageModel:
        """Ask ``api`` for every image once and train a fresh student on the answers.

        Args:
            api: the stolen model's API (in process, or a server's: :meth:`BlackBox.http`), with its budget.
            images: the thief's images (one query each).
            like: a model that reads and answers as the API's does (its architecture is the student's unless
                ``arch`` says otherwise; its weights are not read).
            seed: seeds the student's initialisation and training.

        Returns:
            The student; ``spec.info["queries"]`` holds the images the API was sent.
        """
        spec = like.spec
        if not self.supports(spec.task):
            raise InputError(f"extraction through a classifier's API needs a classifier, not a {spec.task} model")
        targets = extraction_targets(api, images)
        if targets.ndim == 1:  # labels only: the student's loss reads the label as the argmax of a one-hot row
            targets = torch.nn.functional.one_hot(targets.clamp(0, spec.num_outputs - 1), spec.num_outputs).float()
        torch.manual_seed(seed)
        same = same_architecture(spec, self.arch, self.width)
        student = fresh_like(like) if same else student_of(spec, self.arch or spec.arch, self.width)
        config = TrainConfig(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, augment=self.augment, seed=seed, device=str(like.mean.device))
        thief = ImageDataset(images, torch.zeros(len(images), dtype=torch.long), name="the thief's queries")
        fit(student, thief, label_loss(self.labels, self.temperature, 1), config, targets=targets, progress=progress, desc=self.kind)
        student.spec.info = {"queries": api.sent}
        return student
