"""DeepSigns (Rouhani, Chen, Koushanfar; ASPLOS 2019), both halves, embedded together by one fine-tuning of the host.

White-box: an N-bit signature in the penultimate features of one class (the *signature class*, drawn by the seed).
Two training-time terms: the class's features are pulled to their centre (the Gaussian-mixture term: spread around
the class mean, relative to the mean's size) and ``sigmoid(centre @ A) > 0.5`` is made equal to the bits (binary
cross-entropy), ``A`` a secret Gaussian projection. Read-out: the mean penultimate feature of the key's images of
that class, projected by ``A``; each bit is right when its projection has the bit's sign (``values`` are the signed
margins, threshold 0); score = 1 - bit error rate.

The layer: the input of the model's head (the last layer with parameters), for any architecture. It is the layer the
public PyTorch port uses (ResNet-18 penultimate), it keeps its width under the zoo's filter pruning (pruning zeroes
channels, it does not remove them, so the projection still applies), and re-initialising the head (retraining)
does not touch it. Filter pruning does zero some of its inputs' channels in the last block's residual branch; what
that costs the signature is measured in docs/watermarks.md.

Black-box: key inputs from rarely visited regions (uniform noise images) get labels the host does not give them
(drawn uniformly among the other classes) by fine-tuning on them beside the task. A suspect answers the keys' top-1
labels (labels only are enough; one query per key); score = the share answered with the key's label.

Decisions: without the owner's mark, each bit is right with probability 1/2 (a secret Gaussian projection of any
fixed feature vector has a symmetric sign, independently per column) and each key's label is matched with
probability 1/C at most (its label was drawn among the classes the host does not give it); the p-value is the
binomial tail of the count right (:func:`modelprint.metrics.binomial_tail`), and the key records the fewest right
answers that declare a copy at ``alpha`` (the paper's mismatch threshold, read the other way).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..checks import number, setting_types
from ..access import BLACK_BOX, LABELS, WHITE_BOX, Access, WhiteBox
from ..data import ImageDataset
from ..errors import InputError, IntegrityError
from ..fingerprints import checks
from ..fingerprints.base import VerificationResult, check_input_shape, target_identity
from ..fingerprints.shared import label_agreement
from ..losses import supervised_loss
from ..metrics import binomial_tail, binomial_threshold
from ..models import ImageModel, state_sha256
from ..tasks import Classification
from ..train import TrainConfig, fit, predict
from .base import WatermarkKey, WatermarkScheme, marked_copy, penultimate


@dataclass(frozen=True, kw_only=True)
class DeepSigns(WatermarkScheme):
    """DeepSigns' white-box signature and black-box keys (see the module docstring).

    Args:
        bits: length of the white-box signature.
        key_images: images of the signature class kept in the key for the white-box read-out (ones the marked model
            classifies right, when it gets at least two right).
        keys: black-box key inputs (one query each).
        epochs, lr, batch_size, augment: the embedding's fine-tuning of the host.
        center_weight: weight of the Gaussian-mixture (centre) term.
        projection_weight: weight of the signature term.
        key_weight: weight of the black-box keys' cross-entropy.
        class_batch, key_batch: signature-class images and key inputs each step's terms read.
        key_grid: the lattice of the keys' smooth random fields (:func:`key_inputs`).
        alpha: the false-positive level at which the key records how many right answers declare a copy.
        seed: draws the signature class, the projection, the bits, the keys and their labels.
    """

    name: ClassVar[str] = "deepsigns"
    modes: ClassVar[tuple[str, ...]] = (WHITE_BOX, BLACK_BOX)
    needs: ClassVar[dict[str, str]] = {WHITE_BOX: WHITE_BOX, BLACK_BOX: LABELS}

    bits: int = 32
    key_images: int = 64
    keys: int = 100
    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 128
    augment: str = "crop,flip"
    center_weight: float = 0.01
    projection_weight: float = 0.1
    key_weight: float = 1.0
    class_batch: int = 32
    key_batch: int = 16
    key_grid: int = 4
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        setting_types(self)
        for name in ("bits", "key_images", "keys", "epochs", "batch_size", "class_batch", "key_batch", "key_grid"):
            number(getattr(self, name), name, minimum=1, integer=True)
        for name in ("lr", "center_weight", "projection_weight", "key_weight"):
            number(getattr(self, name), name, minimum=0)
        number(self.alpha, "alpha", above=0, below=1)

    # ------------------------------------------------------------------------------------------------ embedding
    def embed(self, host: ImageModel, data: ImageDataset, *, from_scratch: bool = False, epochs: int | None = None,
              progress: bool = False, held_out: ImageDataset | None = None) -> tuple[ImageModel, WatermarkKey]:
        began = time.perf_counter()
        if host.spec.task != "classification":
            raise InputError(f"the {self.name} watermark marks classifiers, not {host.spec.task} models")
        device = next(host.parameters()).device
        classes = host.spec.num_outputs
        if classes < 2:
            raise InputError("a classifier with at least 2 classes is needed")
        g = torch.Generator().manual_seed(self.seed)
        signature_class = int(torch.randint(classes, (1,), generator=g))
        pool = data.images[data.labels.long() == signature_class]
        if len(pool) < 2:
            raise InputError(f"the training data has {len(pool)} image(s) of class {signature_class}, the signature class; at least 2 are needed")
        model = marked_copy(host, from_scratch, self.seed)
        with torch.no_grad(), penultimate(model.eval()) as grab:
            model(pool[:2].to(device))
        width = grab.features.shape[1]  # type: ignore[union-attr]
        projection = torch.randn(width, self.bits, generator=g)
        signature = (torch.rand(self.bits, generator=g) < 0.5).float()
        keys = key_inputs(self.keys, data.images, self.key_grid, g)
        key_labels = (predict(host, keys).argmax(dim=1) + torch.randint(1, classes, (self.keys,), generator=g)) % classes

        config = TrainConfig(epochs=epochs or self.epochs, lr=0.1 if from_scratch else self.lr, batch_size=self.batch_size,
                             augment=self.augment, seed=self.seed, device=str(device))
        with penultimate(model) as grab:
            terms = _Terms(self, pool, projection, signature, keys, key_labels, torch.Generator().manual_seed(self.seed + 1), grab)
            fit(model, data, supervised_loss("classification"), config, terms=terms, progress=progress, desc=self.name)
        model.eval()

        order = torch.randperm(len(pool), generator=g)
        right = order[predict(model, pool[order]).argmax(dim=1) == signature_class]
        chosen = right if len(right) >= min(self.key_images, 2) else order  # a model that gets (almost) none right reads them all
        key_images = pool[chosen[: self.key_images]]
        model.spec.info = {**{k: v for k, v in host.spec.info.items() if k == "data"}, "watermark": self.name,
                           "host_sha256": host.spec.info.get("sha256") or state_sha256(host), "from_scratch": from_scratch}
        key = WatermarkKey(
            scheme=self.name,
            config={**self.settings(), "host_sha256": model.spec.info["host_sha256"], "signature_class": signature_class},
            task=Classification().to_config(),
            tensors={"samples": keys, "labels": key_labels, "key_images": key_images, "projection": projection, "signature": signature},
            thresholds={"white_box": 0.0, "black_box": 0.5},
            target=target_identity(model),
            stats={"embedding_s": round(time.perf_counter() - began, 2), "classes": classes, "key_images_right": int(min(len(right), self.key_images)),
                   "declare_white_box": binomial_threshold(self.bits, 0.5, self.alpha),
                   "declare_black_box": binomial_threshold(self.keys, 1 / classes, self.alpha)},
        )
        return model, key

    # ------------------------------------------------------------------------------------------------ verification
    def verify(self, access: Access, key: WatermarkKey, *, mode: str | None = None) -> VerificationResult:  # type: ignore[override]
        self.check_key(key)
        mode = self.require(access, mode)
        classes = int(key.stats["classes"])  # checked when the key was loaded or made
        if mode == BLACK_BOX:
            result = label_agreement(self, access, key, mode)  # type: ignore[arg-type]
            right, trials, chance = round(result.matching_score * result.n_samples), result.n_samples, 1 / classes
            what = f"binomial: each of {trials} keys matched with probability 1/{classes} without the mark"
        else:
            result = self._white_box(access, key)  # type: ignore[arg-type]
            right, trials, chance = round(result.matching_score * result.n_samples), result.n_samples, 0.5
            what = f"binomial: each of {trials} signature bits right with probability 1/2 without the mark"
        result.p_value, result.p_value_method = binomial_tail(right, trials, chance), what
        return result

    def forge(self, key: WatermarkKey, seed: int) -> WatermarkKey:
        """A thief's key of the same shape, drawn from ``seed``: another secret projection and signature over the
        key's own signature-class images, and other key inputs (smooth fields with the keys' moments) with labels
        drawn uniformly (the thief does not know which labels the host gives them)."""
        g, classes = torch.Generator().manual_seed(seed), int(key.stats["classes"])
        projection, bits = key.tensors["projection"], key.tensors["signature"]
        tensors = {**key.tensors, "projection": torch.randn(projection.shape, generator=g), "signature": (torch.rand(bits.shape, generator=g) < 0.5).float(),
                   "samples": key_inputs(len(key.samples), key.samples, self.key_grid, g), "labels": torch.randint(classes, (len(key.samples),), generator=g)}
        return WatermarkKey(scheme=self.name, config={**key.config, "seed": seed}, task=key.task, tensors=tensors,
                            thresholds=dict(key.thresholds), target=dict(key.target), stats=dict(key.stats))

    def _white_box(self, access: WhiteBox, key: WatermarkKey) -> VerificationResult:
        began = time.perf_counter()
        images, projection, signature = key.tensors["key_images"], key.tensors["projection"], key.tensors["signature"]
        model = access.model
        check_input_shape(model, images)
        sums = []
        with torch.no_grad(), penultimate(model) as grab:
            for start in range(0, len(images), 256):
                model(images[start : start + 256].to(access.device))
                sums.append(grab.features.float().sum(dim=0).cpu())  # type: ignore[union-attr]
        centre = torch.stack(sums).sum(dim=0) / len(images)
        if centre.numel() != projection.shape[0]:
            raise InputError(f"the suspect's penultimate layer has {centre.numel()} features; the key's projection reads {projection.shape[0]}")
        values = (2 * signature - 1) * (centre @ projection)
        return VerificationResult(
            scheme=self.name, mode=WHITE_BOX, matching_score=float((values > 0).float().mean()), n_samples=len(values), queries=0,
            threshold=0.0, values=values.tolist(), elapsed_s=time.perf_counter() - began,
        )

    # ------------------------------------------------------------------------------------------------ key checks
    @classmethod
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """The generic layout, ``key_images`` (float images), ``projection`` (features x bits) and ``signature``
        (one float 0/1 per bit)."""
        n = super().check_layout(layout, task)
        checks.require(layout, "key_images", kind="float", ndim=4, why="the signature class's images")
        bits = checks.require(layout, "signature", kind="float", ndim=1, why="the white-box signature")[0]
        rows = checks.require(layout, "projection", kind="float", ndim=2, why="the secret projection")
        if rows[1] != bits:
            raise IntegrityError(f"tensor 'projection' has {rows[1]} columns for {bits} signature bits")
        return n

    @classmethod
    def validate(cls, key: WatermarkKey) -> "DeepSigns":  # type: ignore[override]
        """The generic checks, key images in [0, 1], signature bits 0 or 1 and as many as the settings say."""
        scheme = super().validate(key)
        checks.check_images(key.tensors["key_images"], "key_images")
        signature = key.tensors["signature"]
        if not bool(((signature == 0) | (signature == 1)).all()) or len(signature) != key.config.get("bits"):
            raise IntegrityError(f"tensor 'signature' must hold {key.config.get('bits')} bits of 0 or 1")
        checks.check_finite(key.tensors["projection"], "projection")
        if not isinstance(key.stats.get("classes"), int) or key.stats["classes"] < 2:
            raise IntegrityError("the key does not record the marked model's number of classes (at least 2)")
        return scheme  # type: ignore[return-value]


def key_inputs(count: int, images: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Black-box key inputs: smooth random fields (Gaussian noise on a ``grid`` x ``grid`` lattice, bilinearly
    enlarged to the images' size) with the data's per-channel mean and standard deviation, clipped to [0, 1].

    Pixel-wise noise was tried first: to a CNN every such image looks alike, so labels drawn at random for them
    cannot be learnt (key accuracy 0.17 on digits after 6 epochs) and pushing them apart wrecked the task (test
    accuracy 0.98 -> 0.54). Fields on a coarse lattice differ from each other at the scale convolutions see and
    from every natural image; matching the data's moments keeps the batch norms' statistics what the task's are.
    """
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))
    coarse = torch.randn(count, images.shape[1], grid, grid, generator=generator)
    fields = F.interpolate(coarse, size=tuple(images.shape[2:]), mode="bilinear", align_corners=False)
    fields = fields / fields.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None, None]
    return (mean[:, None, None] + std[:, None, None] * fields).clamp(0, 1)


class _Terms:
    """DeepSigns' training-time terms (:class:`modelprint.train.TrainingTerms`): each step a draw of the signature
    class's images and of the keys is forwarded with the batch; the loss is the spread of the class's penultimate
    features around their centre, the signature's cross-entropy on the centre's projection, and the keys'
    cross-entropy. ``grab`` records the penultimate features of every forward pass (a :class:`penultimate` around
    the run)."""

    def __init__(self, scheme: DeepSigns, pool: torch.Tensor, projection: torch.Tensor, signature: torch.Tensor,
                 keys: torch.Tensor, key_labels: torch.Tensor, generator: torch.Generator, grab: penultimate) -> None:
        self.scheme, self.pool, self.projection, self.signature = scheme, pool, projection, signature
        self.keys, self.key_labels, self.generator, self.grab = keys, key_labels, generator, grab
        self.drawn = torch.zeros(0, dtype=torch.long)

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        s = self.scheme
        self.picked = torch.randint(len(self.pool), (min(s.class_batch, len(self.pool)),), generator=self.generator)
        self.drawn = torch.randint(len(self.keys), (min(s.key_batch, len(self.keys)),), generator=self.generator)
        return torch.cat([self.pool[self.picked], self.keys[self.drawn]])

    def loss(self, outputs: torch.Tensor, extra_outputs: torch.Tensor) -> torch.Tensor:
        s, device, n = self.scheme, outputs.device, len(self.picked)
        features = self.grab.features[len(outputs) : len(outputs) + n].float()  # type: ignore[index]
        centre = features.mean(dim=0)
        spread = (features - centre).pow(2).sum(dim=1).mean() / centre.pow(2).sum().clamp_min(1e-8)
        signature = F.binary_cross_entropy_with_logits(centre @ self.projection.to(device), self.signature.to(device))
        keyed = F.cross_entropy(extra_outputs[n:].float(), self.key_labels[self.drawn].to(device))
        return s.center_weight * spread + s.projection_weight * signature + s.key_weight * keyed
