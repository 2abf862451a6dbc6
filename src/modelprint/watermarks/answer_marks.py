"""What the watermarks in a deployed classifier's answers share (CSP, :mod:`.csp`; USP, :mod:`.usp`): the host is
not changed, an answer post-processor (:mod:`modelprint.answers`) is attached to it, the key holds the post-processor's
tensors, the host's answers on the key images (drawn from the owner's held-out images) and the scheme's secret; a
suspect is verified black-box, soft labels or labels only, from its answers' residuals against the host's.

A subclass draws the key's tensors (:meth:`AnswerWatermark.draw`), builds the post-processor from them
(:meth:`AnswerWatermark.perturbation`) and turns the residuals into a score and an exact p-value
(:meth:`AnswerWatermark.decide`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from ..access import BLACK_BOX, LABELS, Access
from ..answers import AnswerPerturbation
from ..checks import number, setting_types
from ..data import ImageDataset
from ..errors import InputError, IntegrityError
from ..fingerprints import checks
from ..fingerprints.base import VerificationResult, target_identity
from ..fingerprints.shared import suspect_outputs
from ..models import ImageModel, state_sha256, with_answers, without_answers
from ..tasks import Classification
from ..train import predict
from .base import WatermarkKey, WatermarkScheme


@dataclass(frozen=True, kw_only=True)
class AnswerWatermark(WatermarkScheme):
    """A watermark in the answers (see the module docstring).

    Args:
        amplitude: the largest probability the perturbation gives a class.
        margin: in (0, 1): a raised class stays below ``margin`` times its gap to the top-1 (every top-1 kept).
        grid: the lattice of the image features the perturbation reads.
        inputs: key images (verification queries), drawn from the owner's held-out images.
        clip: residuals are clipped to this size (one wild answer cannot dominate a sum).
        alpha: the false-positive level of the verdict the key records.
        seed: draws the key.
    """

    modes: ClassVar[tuple[str, ...]] = (BLACK_BOX,)
    needs: ClassVar[dict[str, str]] = {BLACK_BOX: LABELS}
    #: The post-processor's kind (:data:`modelprint.answers.ANSWERS`) and its tensors in the key.
    kind: ClassVar[str] = ""
    tensor_names: ClassVar[tuple[str, ...]] = ()

    amplitude: float = 0.1
    margin: float = 0.5
    grid: int = 4
    inputs: int = 1000
    clip: float = 1.0
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        setting_types(self)
        number(self.amplitude, "amplitude", above=0)
        number(self.margin, "margin", above=0, below=1)
        for name in ("grid", "inputs"):
            number(getattr(self, name), name, minimum=1, integer=True)
        number(self.clip, "clip", above=0)
        number(self.alpha, "alpha", above=0, below=1)

    # ------------------------------------------------------------------------------------------------ a subclass's
    def draw(self, classes: int, images: torch.Tensor, answers: Callable[[torch.Tensor], torch.Tensor],
             generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The key's secret tensors for ``classes`` classes, from the owner's ``images`` and the host's
        log-probabilities on any of them (``answers(images)``)."""
        raise NotImplementedError

    def perturbation(self, key: WatermarkKey) -> AnswerPerturbation:
        """The post-processor the key defines, its tensors loaded."""
        raise NotImplementedError

    def answer_settings(self) -> dict:
        """The post-processor's entry in a marked model's spec (``ModelSpec.answers``)."""
        return {"kind": self.kind, "amplitude": self.amplitude, "margin": self.margin}

    def decide(self, residual: torch.Tensor, top: torch.Tensor, key: WatermarkKey) -> tuple[float, list[float], float, str]:
        """From the residuals (N x classes) and the host's top-1 on the key images: the score (0.5 by chance, 1 for
        a perfect copy of the perturbation), per-class values, the exact p-value and how it was computed."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ the answers
    def attach(self, host: ImageModel, key: WatermarkKey) -> ImageModel:
        """``host`` answering through the key's perturbation (what ``modelprint serve --watermark`` serves).

        Raises:
            InputError: the key marks another model.
        """
        self.check_key(key)
        plain = without_answers(host)
        sha = plain.spec.info.get("sha256") or state_sha256(plain)
        if sha != key.config.get("host_sha256"):
            raise InputError(f"this key perturbs the answers of model {str(key.config.get('host_sha256'))[:12]}..., not of this one ({sha[:12]}...)")
        marked = with_answers(plain, self.perturbation(key), self.answer_settings())
        marked.spec.info = {**{k: v for k, v in plain.spec.info.items() if k == "data"}, "watermark": self.name, "host_sha256": sha}
        return marked

    def embed(self, host: ImageModel, data: ImageDataset, *, from_scratch: bool = False, epochs: int | None = None,
              progress: bool = False, held_out: ImageDataset | None = None) -> tuple[ImageModel, WatermarkKey]:
        began = time.perf_counter()
        if from_scratch or epochs:
            raise InputError(f"the {self.name} watermark perturbs the answers of the host as it is: its weights are not trained (no --from-scratch or --epochs)")
        if host.spec.task != "classification" or host.spec.num_outputs < 2:
            raise InputError(f"the {self.name} watermark marks classifiers of 2 or more classes, not a {host.spec.task} model of {host.spec.num_outputs} outputs")
        plain = without_answers(host)
        sha = plain.spec.info.get("sha256") or state_sha256(plain)
        g = torch.Generator().manual_seed(self.seed)
        answers = lambda images: F.log_softmax(predict(plain, images).float(), dim=1)  # noqa: E731
        drawn = self.draw(plain.spec.num_outputs, data.images, answers, g)
        pool = (held_out if held_out is not None else data).images
        samples = pool[torch.randperm(len(pool), generator=g)[: self.inputs]]
        host_log_p = answers(samples)
        key = WatermarkKey(
            scheme=self.name,
            config={**self.settings(), "host_sha256": sha},
            task=Classification().to_config(),
            tensors={"samples": samples, "labels": host_log_p.argmax(dim=1), "host_log_p": host_log_p, **drawn},
            thresholds={"black_box": 0.5},
            target=target_identity(plain),  # the marked model's, once it exists
            stats={"classes": plain.spec.num_outputs},
        )
        marked = self.attach(plain, key)
        key.target = target_identity(marked)
        key.stats["embedding_s"] = round(time.perf_counter() - began, 2)
        return marked, key

    # ------------------------------------------------------------------------------------------------ verification
    def verify(self, access: Access, key: WatermarkKey, *, mode: str | None = None) -> VerificationResult:  # type: ignore[override]
        """The suspect's answers on the key images against the host's: per class j, the residual ``e_ij`` is the
        change of ``p_j / p_top`` from the host's (soft labels: the API's normalisation cancels), or whether the
        suspect answers j (labels only); the subclass's :meth:`decide` reads them."""
        self.check_key(key)
        mode = self.require(access, mode)
        began = time.perf_counter()
        samples, host_log_p = key.samples, key.tensors["host_log_p"].float()
        answers, queries = suspect_outputs(access, mode, samples, Classification())
        top = key.labels.long()
        soft = LABELS not in access.capabilities  # an access answers labels only, or scores (top-k completed, or all)
        if soft:
            if answers.ndim != 2 or answers.shape[1] != host_log_p.shape[1]:
                raise InputError(f"the suspect answered outputs of shape {list(answers.shape[1:])}; the key's host answers {host_log_p.shape[1]} class scores")
            relative = lambda p: p / p.gather(1, top[:, None]).clamp_min(1e-12)  # noqa: E731  (the normalisation cancels)
            residual = (relative(answers.float()) - relative(host_log_p.exp())).clamp(-self.clip, self.clip)
        else:
            labels = answers.long().view(-1)
            residual = F.one_hot(labels.clamp(0, host_log_p.shape[1] - 1), host_log_p.shape[1]).float()
        score, values, p_value, method = self.decide(residual, top, key)
        result = VerificationResult(scheme=self.name, mode=mode, matching_score=score, n_samples=len(samples), queries=queries,
                                    threshold=0.5, values=values, elapsed_s=time.perf_counter() - began)
        result.p_value = p_value
        result.p_value_method = f"{method} ({'soft labels' if soft else 'labels only'})"
        return result

    def forge(self, key: WatermarkKey, seed: int) -> WatermarkKey:
        """A thief's key of the same shape drawn from ``seed`` by the scheme's own procedure, from the key's images
        and the host's answers on them (a thief claiming the model reads those from its API; it does not have the
        owner's training images)."""
        log_p = key.tensors["host_log_p"].float()
        rows = {image.numpy().tobytes(): i for i, image in enumerate(key.samples.float())}

        def lookup(images: torch.Tensor) -> torch.Tensor:
            index = [rows.get(image.numpy().tobytes()) for image in images.float()]
            if None in index:
                raise InputError(f"the {self.name} forgery reads the host's answers on the key's images only")
            return log_p[index]

        drawn = self.draw(int(key.stats["classes"]), key.samples, lookup, torch.Generator().manual_seed(seed))
        return WatermarkKey(scheme=self.name, config={**key.config, "seed": seed}, task=key.task, tensors={**key.tensors, **drawn},
                            thresholds=dict(key.thresholds), target=dict(key.target), stats=dict(key.stats))

    # ------------------------------------------------------------------------------------------------ key checks
    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """The generic layout, the host's log-probabilities (N x classes) and the scheme's tensors
        (:meth:`check_tensors`)."""
        n = super().check_layout(layout, task)
        rows = checks.require(layout, "host_log_p", kind="float", ndim=2, rows=n, why="the host's answers on the key images")
        cls.check_tensors(layout, rows[1])
        return n

    @classmethod
    def check_tensors(cls, layout: checks.Layout, classes: int) -> None:
        """Check the layout of the scheme's own tensors for a host of ``classes`` classes."""

    @classmethod
    def validate(cls, key: WatermarkKey) -> "AnswerWatermark":  # type: ignore[override]
        """The generic checks; finite tensors, host log-probabilities that are a distribution whose top-1 is the
        stored label, and the number of classes the key records."""
        scheme = super().validate(key)
        for name in ("host_log_p", *cls.tensor_names):
            checks.check_finite(key.tensors[name], name)
        log_p = key.tensors["host_log_p"].double()
        if bool((log_p > 1e-6).any()) or not torch.allclose(log_p.exp().sum(dim=1), torch.ones(len(log_p), dtype=torch.float64), atol=1e-3):
            raise IntegrityError("tensor 'host_log_p' must hold log-probabilities (each row a distribution)")
        if not torch.equal(log_p.argmax(dim=1), key.labels.long()):
            raise IntegrityError("the key's labels are not the host's top-1 answers stored beside them")
        if key.stats.get("classes") != log_p.shape[1]:
            raise IntegrityError("the key does not record the number of classes its host answers")
        return scheme  # type: ignore[return-value]


def centred_residuals(residual: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``residual`` with column j centred over the images whose host top-1 is not j, and zero where it is (a class
    is never perturbed where it is the answer)."""
    mask = torch.ones_like(residual).scatter(1, top[:, None], 0.0)
    count = mask.sum(dim=0).clamp_min(1)
    return (residual - (residual * mask).sum(dim=0) / count) * mask
