"""MetaV (Pan, Yan, Zhang, Yang, KDD 2022): an adaptive fingerprint and a meta-verifier learnt together.

N learnable inputs and a small network that reads a suspect's answers on them and says "pirated" or not are
optimised jointly over the owner's *training zoo*: pirated copies of the target (fine-tuned, retrained, pruned,
distilled) and independently trained models, all white-box to the owner, none of them in the zoo the scheme is
evaluated on (:mod:`modelprint.protocol.training_zoo`). Verification needs only the answers: N queries and one
forward pass of the verifier; the score is the verifier's probability of "pirated", and the threshold 0.5 its
decision. Any task whose answers have a fixed size: what the verifier reads per task is in :mod:`.features`.

What the sources leave open and the choices made here (figures in docs/metav.md): the verifier (one hidden layer of
``hidden`` ReLU units), the optimiser (Adam on both, the inputs projected to [0, 1] after each step), balanced
mini-batches of ``models_per_step`` models, and the target itself counted among the positives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...access import BLACK_BOX, SCORES, WHITE_BOX, Access
from ...checks import floats_as_floats, rules, setting_types
from ...data import check_images
from ...errors import InputError, IntegrityError
from ...models import device_of
from ...tasks import Classification, Regression, Task
from .. import checks
from ..nulls import CONSTANT_LOGIT, ConstantNet
from ..base import FingerprintScheme, FingerprintSet, VerificationResult, check_input_shape, helper_hashes, target_identity
from ..shared import check_task_fits, starting_points, suspect_outputs
from .features import feature_count, features, regression_norm
from .verifier import PREFIX, joint_fit, make_verifier, probabilities, verifier_from, verifier_tensors

#: Where the inputs start.
STARTS = ("images", "noise")


def null_negatives(task: Task, first: torch.Tensor, channels: int) -> list[nn.Module]:
    """Networks whose answer depends on no input (:class:`~modelprint.fingerprints.nulls.ConstantNet`), learnt as
    negatives: per task, the constant answer of each class and the uniform one; the target's mean value and two
    spreads either side of it; one fixed unit embedding and the all-equal one.

    Args:
        task: the set's task.
        first: the target's raw outputs on the starting inputs (N x K).
        channels: the images' channels.
    """
    flat = first.detach().reshape(len(first), -1).float().cpu()
    size = flat.shape[1]
    if isinstance(task, Classification):
        outputs = [CONSTANT_LOGIT * F.one_hot(torch.tensor(c), size).float() for c in range(size)] + [torch.zeros(size)]
    elif isinstance(task, Regression):
        mean, spread = flat.mean(), flat.std().clamp_min(1e-6)
        outputs = [(mean + k * spread).view(1) for k in (-2.0, 0.0, 2.0)]
    else:
        outputs = [F.one_hot(torch.tensor(0), size).float(), torch.ones(size) / size ** 0.5]
    return [ConstantNet(o, channels) for o in outputs]


@dataclass(frozen=True, kw_only=True)
class MetaV(FingerprintScheme):
    """MetaV: learnt inputs and a meta-verifier; the score is the verifier's probability that a suspect is pirated.

    Args:
        n: fingerprint inputs N (queries per verification).
        start: ``"images"`` (candidate images in a seeded order) or ``"noise"`` (seeded uniform noise).
        steps: joint optimisation steps.
        models_per_step: training models read per step (half pirated, half independent).
        lr_inputs, lr_verifier: Adam step sizes of the inputs and of the verifier.
        weight_decay: the verifier's L2 penalty.
        hidden: the verifier's hidden units.
        training_models: how many models of the owner's training zoo it learns from (half each kind; the first of
            each kind in the zoo's order, so one zoo serves every smaller size).
        checkpoints: learn also from the checkpoints the training zoo kept of its models.
        null_negatives: learn also that answers which depend on no input are not a copy: the constant answer of
            each class and the uniform one (regression: the target's mean value and two spreads either side;
            similarity: one fixed and the all-equal embedding) join the independent models as negatives. Without
            them the verifier, which never saw such answers, called a constant answer "pirated" (0.83 on the
            CIFAR-10 target, docs/metav.md), and the set is refused by the null-suspect check.
        seed: seeds the starting inputs, the verifier's initialisation and the mini-batches.
    """

    name: ClassVar[str] = "metav"
    modes: ClassVar[tuple[str, ...]] = (WHITE_BOX, BLACK_BOX)
    needs: ClassVar[Mapping[str, str]] = {WHITE_BOX: WHITE_BOX, BLACK_BOX: SCORES}
    partial_scores: ClassVar[bool] = True  # top-5 answers completed score as full ones, within 0.01 (docs/own-model.md)
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "similarity")
    configurations: ClassVar[Mapping[str, Mapping[str, object]]] = {"default": {}, "noise": {"start": "noise"}}

    n: int = 100
    start: str = "images"
    steps: int = 300
    models_per_step: int = 8
    lr_inputs: float = 0.01
    lr_verifier: float = 0.001
    weight_decay: float = 0.0001
    hidden: int = 128
    training_models: int = 20
    checkpoints: bool = False
    null_negatives: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        setting_types(self)
        rules([
            (self.n >= 2, f"n must be >= 2, got {self.n}"),
            (self.start in STARTS, f"start must be one of {', '.join(STARTS)}, got {self.start!r}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.models_per_step >= 2, f"models_per_step must be >= 2, got {self.models_per_step}"),
            (self.lr_inputs >= 0 and self.lr_verifier > 0, f"lr_inputs must be >= 0 and lr_verifier > 0, got {self.lr_inputs}, {self.lr_verifier}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
            (self.training_models >= 2, f"training_models must be >= 2, got {self.training_models}"),
        ])
        floats_as_floats(self)

    def training_zoo(self) -> tuple[int, bool]:
        """The models of the owner's training zoo these settings learn from, and whether its checkpoints too."""
        return self.training_models, self.checkpoints

    def check_helpers(self, references: int = 0, surrogates: int = 0, calibration: int = 0) -> None:
        """At least one independent (``references``) and one pirated (``surrogates``) training model; no
        calibration models.

        Raises:
            InputError: naming the missing or unused models.
        """
        missing = [what for what, count in (("independent", references), ("pirated", surrogates)) if count < 1]
        if missing:
            raise InputError(f"the metav scheme learns from a training zoo and got no {' and no '.join(missing)} models (make one with 'modelprint training-zoo')")
        if calibration:
            raise InputError("the metav scheme reads no calibration models, but calibration models were given")

    def generate(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        task: Task | None = None,
        *,
        pairs: torch.Tensor | None = None,
        references: Sequence[nn.Module] = (),
        surrogates: Sequence[nn.Module] = (),
        calibration: Sequence[nn.Module] = (),
        progress: bool = False,
    ) -> FingerprintSet:
        """Learn N inputs and the verifier from the training zoo.

        Args:
            model: the target, images in [0, 1]; counted among the pirated models.
            images: candidate images (the starts with ``start="images"``; else only their shape is read).
            labels: their labels (unused: the set stores the target's own answer on each input).
            task: the task (None means classification).
            pairs: unused (similarity pairs are the inputs themselves).
            references: the training zoo's independent models.
            surrogates: the training zoo's pirated models (and their checkpoints, when the caller read them).
            calibration: not read; must be empty.
            progress: a progress bar over the steps.

        Returns:
            The set: ``samples`` (the inputs), ``labels`` (the target's top-1 class, or its first output),
            ``norm`` (regression's standardisation) and the verifier's weights; thresholds 0.5; stats with the
            loss and the verifier's probabilities on its training models.
        """
        began = time.perf_counter()
        task, _ = check_task_fits(self.name, self.tasks, model, images, None, task)  # labels unused: stores its own answers
        self.check_helpers(len(references), len(surrogates), len(calibration))
        check_images(images, what="candidate images")
        model = model.eval()
        device = device_of(model)
        check_input_shape(model, images)
        generator = torch.Generator().manual_seed(self.seed)
        starts = starting_points(self.start, self.n, images, generator).to(device)
        with torch.no_grad():
            first = model(starts)
        norm = regression_norm(task, first).to(device)
        read = lambda m, x: features(task, m(x), norm, deployed=False)  # noqa: E731
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            verifier = make_verifier(feature_count(task, self.n, first.reshape(self.n, -1).shape[1]), self.hidden).to(device)
        positives, negatives = [model, *[m.to(device) for m in surrogates]], [m.to(device) for m in references]
        nulls = null_negatives(task, first, int(images.shape[1])) if self.null_negatives else []
        negatives += [m.to(device) for m in nulls]
        inputs, losses = joint_fit(
            starts, positives, negatives, read, verifier, steps=self.steps, models_per_step=self.models_per_step,
            lr_inputs=self.lr_inputs, lr_verifier=self.lr_verifier, weight_decay=self.weight_decay, generator=generator, progress=progress,
        )
        inputs = inputs.cpu()
        with torch.no_grad():
            answers = model(inputs.to(device)).cpu()
        labels_out = answers.argmax(dim=1) if isinstance(task, Classification) else answers.reshape(len(answers), -1)[:, 0].float()
        p_pos, p_neg = (probabilities(verifier, group, inputs.to(device), read) for group in (positives, negatives))
        tail = losses[-max(1, len(losses) // 10):]
        return FingerprintSet(
            scheme=self.name,
            config={**self.settings(), **helper_hashes(references=references, surrogates=surrogates)},
            task=task.to_config(),
            tensors={"samples": inputs, "labels": labels_out, "norm": norm.cpu(), **verifier_tensors(verifier)},
            thresholds={WHITE_BOX.replace("-", "_"): 0.5, BLACK_BOX.replace("-", "_"): 0.5},
            target=target_identity(model),
            stats={
                "loss_first": losses[0],
                "loss_last": sum(tail) / len(tail),
                "training_positives": len(positives),
                "training_negatives": len(negatives),
                "training_null_negatives": len(nulls),
                "training_p_positive_min": float(p_pos.min()),
                "training_p_negative_max": float(p_neg.max()),
                "input_change_l2_mean": float((inputs - starts.cpu()).flatten(1).norm(dim=1).mean()),
                "generation_s": time.perf_counter() - began,
            },
        )

    def verify(self, access: Access, fingerprints: FingerprintSet, *, mode: str | None = None) -> VerificationResult:
        """The verifier's probability that the suspect is pirated, from its answers on the N inputs.

        Args:
            access: :class:`WhiteBox` (both modes) or :class:`BlackBox` with scores (black-box).
            fingerprints: a set made by this scheme.
            mode: ``"white-box"`` or ``"black-box"``; the strongest the access allows when None.

        Returns:
            ``matching_score`` the probability (one value, compared with the threshold 0.5); ``queries`` N in
            black-box mode, 0 white-box.
        """
        self.check_set(fingerprints)  # this scheme's, and content that fits it (in memory too)
        mode = self.require(access, mode)
        began = time.perf_counter()
        task = fingerprints.task_adapter()
        samples = fingerprints.samples
        answers, queries = suspect_outputs(access, mode, samples, task)
        verifier = verifier_from(fingerprints.tensors)
        read = features(task, answers, fingerprints.tensors["norm"].float(), deployed=mode != WHITE_BOX)
        if read.numel() != verifier[0].in_features:
            raise InputError(f"the suspect answers {answers.reshape(len(answers), -1).shape[1]} values per image; the set's verifier reads another number")
        with torch.no_grad():
            p = float(torch.sigmoid(verifier(read.unsqueeze(0))).squeeze())
        threshold = fingerprints.thresholds[mode.replace("-", "_")]
        return VerificationResult(
            scheme=self.name, mode=mode, matching_score=p, n_samples=len(samples), queries=queries, threshold=threshold,
            values=[p], elapsed_s=time.perf_counter() - began,
        )

    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """The generic layout, ``norm`` (2 values) and the verifier: a first layer reading a feature count the task
        gives for N inputs, one output."""
        n = super().check_layout(layout, task)
        checks.require(layout, "norm", kind="float", shape=(2,), why="regression's shift and scale")
        hidden, count = checks.require(layout, f"{PREFIX}0.weight", kind="float", ndim=2, why="the verifier's first layer")
        checks.require(layout, f"{PREFIX}0.bias", kind="float", shape=(hidden,), why="the verifier's first layer")
        checks.require(layout, f"{PREFIX}2.weight", kind="float", shape=(1, hidden), why="the verifier's output layer")
        checks.require(layout, f"{PREFIX}2.bias", kind="float", shape=(1,), why="the verifier's output layer")
        per_input = {"classification": (2, None), "regression": (1, 1)}.get(task)  # the outputs a task's target answers
        if task == "similarity":
            fits = count == n * (n - 1) // 2
        else:
            fits = count % n == 0 and (per_input is None or (count // n >= per_input[0] and per_input[1] in (None, count // n)))
        if not fits:
            raise IntegrityError(f"the verifier reads {count} features, which {n} inputs of a {task} model never give")
        return n

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "MetaV":
        """The generic checks, finite verifier weights and a positive scale in ``norm``."""
        scheme = super().validate(fingerprints)
        for name, tensor in fingerprints.tensors.items():
            if name.startswith(PREFIX):
                checks.check_finite(tensor, name)
        outputs, count = checks.num_classes(fingerprints.target), fingerprints.tensors[f"{PREFIX}0.weight"].shape[1]
        if outputs is not None and fingerprints.task.get("name") != "similarity" and count != len(fingerprints) * outputs:
            raise IntegrityError(f"the verifier reads {count} features; {len(fingerprints)} answers of the set's target ({outputs} values each) give {len(fingerprints) * outputs}")
        norm = fingerprints.tensors["norm"]
        checks.check_finite(norm, "norm")
        if norm[1] <= 0:
            raise IntegrityError(f"tensor 'norm' must hold a positive scale, got {float(norm[1]):.4g}")
        return scheme  # type: ignore[return-value]
