"""What several schemes share beyond the interface: the checks of a scheme that protects classifiers, the candidates
a target gets right, a suspect's outputs in either mode, and the read-out of schemes whose samples carry the
target's top-1 label."""

from __future__ import annotations

import time

import torch

from ..access import WHITE_BOX, Access, BlackBox, WhiteBox
from ..errors import InputError, IntegrityError
from ..tasks import Task
from .base import FingerprintScheme, FingerprintSet, VerificationResult, check_input_shape, top1_labels


def check_task_fits(name: str, tasks: tuple[str, ...], model: torch.nn.Module, images: torch.Tensor,
                    labels: torch.Tensor | None, task: Task | None) -> tuple[Task, torch.Tensor]:
    """What every scheme's ``generate`` checks before any work: the task is one the scheme protects and fits the
    target (a modelprint model's own task; outputs the task reads: two or more class scores, one value for
    regression, a vector for similarity), and labels the set would store are of the task's kind, so that no set of
    one task is ever made for a model of another (a regression set of a classifier, say).

    Args:
        name: the scheme's name; ``tasks`` the tasks it protects.
        model: the target.
        images: candidate images, N x C x H x W in [0, 1].
        labels: the labels the set stores, or None when it stores the target's own answers.
        task: the task given (None means classification).

    Returns:
        The task and the target's outputs on the first image.

    Raises:
        InputError: in one line, naming what does not fit.
    """
    from ..data import check_images
    from ..models import ImageModel, device_of
    from ..tasks import Classification, Regression

    task = task or Classification()
    if task.name not in tasks:
        raise InputError(f"the {name} scheme protects {' and '.join(tasks)} models, not the {task.name} task")
    if isinstance(model, ImageModel) and model.spec.task != task.name:
        raise InputError(f"the task is {task.name}, but the target is a {model.spec.task} model")
    check_images(images, what="candidate images")
    check_input_shape(model, images)
    with torch.no_grad():
        probe = model.eval()(images[:1].to(device_of(model)))
    values = probe.reshape(len(probe), -1).shape[1]
    if isinstance(task, Classification) and (probe.ndim != 2 or values < 2):
        raise InputError(f"classification needs a target answering 2 or more class scores; it answers shape {list(probe.shape[1:])}")
    if isinstance(task, Regression) and values != 1:
        raise InputError(f"regression needs a target answering one value per image; it answers {values} (a classifier's scores?)")
    if labels is not None and isinstance(task, Regression) and not labels.is_floating_point():
        raise InputError("regression needs float values as labels, got integer labels")
    if labels is not None and isinstance(task, Classification):
        task.check_labels(labels, values)
    return task, probe


def check_classifier(name: str, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     task: Task | None) -> tuple[Task, int]:
    """The checks of a scheme that protects classifiers, before any work: the task, the candidate images and their
    labels, and a target (put in eval mode) that answers two or more class scores for them.

    Args:
        name: the scheme's name (for messages).
        model: the target.
        images: candidate images, N x C x H x W in [0, 1].
        labels: their classes.
        task: the task given (None means classification).

    Returns:
        The task and the target's number of classes.

    Raises:
        InputError: another task, bad images or labels, or a target that does not classify.
    """
    from ..data import check_images
    from ..tasks import Classification

    task = task or Classification()
    if not isinstance(task, Classification):
        raise InputError(f"the {name} scheme protects classifiers, not the {task.name} task")
    check_images(images, what="candidate images")
    if len(labels) != len(images):
        raise InputError(f"{len(images)} candidate images but {len(labels)} labels")
    task, probe = check_task_fits(name, ("classification",), model, images, labels, task)
    return task, probe.shape[1]



def starting_points(start: str, n: int, images: torch.Tensor, generator: torch.Generator, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Where a scheme's n samples start: candidate images in a seeded order (``start="images"``) or seeded uniform
    noise of their shape (``"noise"``), in ``dtype`` (noise is drawn in it, so the draws depend on it).

    Raises:
        InputError: fewer than n candidate images for ``start="images"``.
    """
    if start == "images":
        if len(images) < n:
            raise InputError(f"start='images' needs {n} candidate images, got {len(images)}")
        return images[torch.randperm(len(images), generator=generator)[:n]].to(dtype)
    return torch.rand((n, *images.shape[1:]), generator=generator, dtype=dtype)


def suspect_outputs(access: Access, mode: str, images: torch.Tensor, task: Task) -> tuple[torch.Tensor, int]:
    """What a suspect answers for ``images``: a white-box model's raw outputs (0 queries) or a black-box API's
    answers (its scores, as deployed), on the CPU, with the queries that took.

    Raises:
        InputError: images of another shape than a modelprint model expects, or an answer per image missing.
    """
    if mode == WHITE_BOX:
        assert isinstance(access, WhiteBox)
        check_input_shape(access.model, images)
        with torch.no_grad():
            answers, queries = access.model(images.to(access.device)).cpu(), 0
    else:
        box = access if isinstance(access, BlackBox) else access.black_box(task)  # type: ignore[attr-defined]
        before = box.queries
        answers = box.predict(images)
        queries = box.queries - before
    if len(answers) != len(images):
        raise InputError(f"the suspect answered {len(answers)} outputs for {len(images)} images")
    return answers, queries


def right_candidates(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, *,
                     classify: bool = True, limit: int | None = None) -> list[int]:
    """Candidate indices, in ``order``, whose label the target predicts (every one with ``classify=False``): the
    candidates a scheme may turn into fingerprints.

    Args:
        model: the target, on its device.
        images: candidate images.
        labels: their labels (classes when ``classify``).
        order: the order to take them in.
        classify: compare the top-1 class with the label; False for tasks whose outputs are values.
        limit: stop after this many.

    Raises:
        InputError: the target's outputs are NaN or infinite, or (``classify``) are not class scores for the labels.
    """
    from ..models import device_of

    device, kept = device_of(model), []
    with torch.no_grad():
        for begin in range(0, len(order), 256):
            idx = order[begin : begin + 256]
            outputs = model(images[idx].to(device))
            if not bool(torch.isfinite(outputs).all()):
                raise InputError("the target's outputs on the candidate images are NaN or infinite: its weights are broken, no fingerprint can be made")
            if not classify:
                kept += idx.tolist()
            elif outputs.ndim != 2 or int(labels[idx].max()) >= outputs.shape[1] or int(labels[idx].min()) < 0:
                raise InputError(f"labels must be classes 0..{outputs.shape[-1] - 1} of the target's class scores")
            else:
                kept += idx[outputs.argmax(dim=1).cpu() == labels[idx].long()].tolist()
            if limit is not None and len(kept) >= limit:
                return kept[:limit]
    return kept



def label_agreement(scheme: FingerprintScheme, access: Access, fingerprints: FingerprintSet, mode: str) -> VerificationResult:
    """The read-out of schemes whose samples carry the target's label: the share of samples on which the suspect's
    top-1 label is the stored one (values 1.0 or 0.0, each against the threshold 0.5). White-box mode reads the
    labels from the weights (0 queries), black-box mode through any access, labels-only included (N queries).

    Args:
        scheme: the verifying scheme (its name goes into the result).
        access: the suspect; ``mode`` already checked against it (:meth:`FingerprintScheme.require`).
        fingerprints: a set with ``samples`` and ``labels``.
        mode: ``"white-box"`` or ``"black-box"``.
    """
    from ..access import WHITE_BOX, BlackBox, WhiteBox

    began = time.perf_counter()
    samples = fingerprints.samples
    if mode == WHITE_BOX:
        assert isinstance(access, WhiteBox)
        check_input_shape(access.model, samples)
        answers, queries = top1_labels(access, samples), 0
    else:
        box = access if isinstance(access, BlackBox) else access.black_box(fingerprints.task_adapter())  # type: ignore[attr-defined]
        before = box.queries
        answers = top1_labels(box, samples)
        queries = box.queries - before
    if answers.numel() != len(samples):
        raise InputError(f"the suspect answered {answers.numel()} labels for {len(samples)} fingerprint samples")
    values = (answers.view(-1) == fingerprints.labels.long().cpu()).float()
    threshold = float(fingerprints.thresholds[mode.replace("-", "_")])
    return VerificationResult(
        scheme=scheme.name, mode=mode, matching_score=float((values >= threshold).float().mean()), n_samples=len(values),
        queries=queries, threshold=threshold, values=values.tolist(), elapsed_s=time.perf_counter() - began,
    )


def check_match_thresholds(fingerprints: FingerprintSet) -> None:
    """Thresholds in (0, 1] for a set read by :func:`label_agreement` (its per-sample values are 0 or 1).

    Raises:
        IntegrityError: naming the threshold out of range.
    """
    for key, value in fingerprints.thresholds.items():
        if not 0 < value <= 1:
            raise IntegrityError(f"the {key} threshold must lie in (0, 1] (per-sample values are 0 or 1), got {value!r}")
