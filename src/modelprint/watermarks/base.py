"""The interface every watermark scheme implements, and its key file.

A watermark changes the owner's model: ``embed(host, data)`` returns the marked model and a secret key;
``verify(access, key, mode=...)`` examines a suspect and returns the same :class:`VerificationResult` as a
fingerprint verification (a score in [0, 1], per-key values, queries, and the scheme's own p-value where it defines
one), so that the metrics, reports, calibrated verdicts and evidence records read watermarks and fingerprints alike.

Three kinds of watermark fit this interface: marks in the weights or activations read white-box (DeepSigns),
answers the marked model gives to a trigger set (DeepSigns' black-box keys, backdoor watermarks: training-time terms
through :func:`modelprint.train.fit`'s ``extra_loss`` hook, the triggers as the key's samples) and a perturbation of
the answers a deployed model returns (USP/CSP: ``embed`` returns the host wrapped in an output post-processor, the
key holds what the detector reads).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch

from ..access import Access
from ..data import ImageDataset
from ..errors import InputError, IntegrityError
from ..fingerprints.base import Scheme, VerificationResult
from ..fingerprints.sets import FingerprintSet
from ..models import ImageModel

#: Every watermark scheme class by its ``name`` (registered when its module is imported).
WATERMARKS: dict[str, type["WatermarkScheme"]] = {}
WATERMARK_META_KEY = "modelprint.watermark_key"


class WatermarkKey(FingerprintSet):
    """A watermark's secret key: key inputs (``samples``) with the answers the marked model gives them
    (``labels``) and the scheme's other tensors (a projection, the signature bits ...), in one safetensors file
    with the content's SHA-256 and, optionally, the owner's signature, exactly as a fingerprint set (never a
    pickle). ``target`` identifies the marked model; ``config`` holds the scheme's settings and the host's SHA-256.

    A fingerprint set is not a key and a key is not a fingerprint set: each kind of file is refused as the other.
    """

    META_KEY: ClassVar[str] = WATERMARK_META_KEY
    WHAT: ClassVar[str] = "watermark key"
    FILE: ClassVar[str] = "watermark key file"

    @staticmethod
    def scheme_class(name: Any) -> type:
        if not isinstance(name, str) or name not in WATERMARKS:
            raise IntegrityError(f"watermark key made by unknown scheme {name!r}")
        return WATERMARKS[name]


class WatermarkScheme(Scheme):
    """Base class of watermark schemes. Subclasses are keyword-only dataclasses of settings (``seed`` draws the key)."""

    registry: ClassVar[dict[str, type]] = WATERMARKS  # type: ignore[assignment]

    @abstractmethod
    def embed(self, host: ImageModel, data: ImageDataset, *, from_scratch: bool = False, epochs: int | None = None,
              progress: bool = False, held_out: ImageDataset | None = None) -> tuple[ImageModel, WatermarkKey]:
        """Mark ``host`` (left untouched) and return the marked copy and the key.

        Args:
            host: the owner's model; with ``from_scratch`` only its architecture is used (a fresh, seeded copy is
                trained with the watermark from the start).
            data: the owner's training data.
            from_scratch: train a fresh model with the watermark instead of fine-tuning the host.
            epochs: epochs of that training (the scheme's embedding epochs when None).
            progress: show progress bars.
            held_out: images the owner keeps apart from training (the test split): a scheme that verifies on
                natural images draws its key images from them (a thief never trained on them); others ignore it.
        """

    @abstractmethod
    def verify(self, access: Access, key: WatermarkKey, *, mode: str | None = None) -> VerificationResult:
        """Examine a suspect through ``access`` with ``key`` (see :meth:`check_key`)."""

    def forge(self, key: WatermarkKey, seed: int) -> WatermarkKey:
        """A key a thief could claim the marked model with: drawn by this scheme's own procedure from ``seed``,
        without the owner's secret, of the same shape as ``key`` (the ambiguity test, :mod:`.ambiguity`)."""
        raise InputError(f"the {self.name} watermark has no forgery procedure for the ambiguity test")

    def attach(self, host: ImageModel, key: WatermarkKey) -> ImageModel:
        """``host`` answering through the key's answer perturbation, for a scheme that marks the answers, not the
        weights (what ``modelprint serve --watermark`` serves).

        Raises:
            InputError: a scheme whose mark is in the weights (serve its marked model instead), or a key of another
                model.
        """
        raise InputError(f"the {self.name} watermark is in the marked model's weights, not in its answers: serve the marked model file itself")

    def check_key(self, key: FingerprintSet) -> None:
        """Refuse a file that is not a key of this scheme for a task it protects, or whose content does not fit it.

        Raises:
            InputError: a fingerprint set, a key of another scheme, or of another task.
            IntegrityError: content the scheme cannot read soundly (:meth:`validate`).
        """
        if not isinstance(key, WatermarkKey):
            raise InputError(f"the {self.name} watermark verifies with a watermark key, not a {getattr(key, 'WHAT', type(key).__name__)}")
        if key.scheme != self.name:
            raise InputError(f"this is a key of the {key.scheme} watermark, not of {self.name}")
        task = key.task.get("name")
        if task not in self.tasks:
            raise InputError(f"the key is for a {task} model; the {self.name} watermark protects {', '.join(self.tasks)} models")
        type(self).validate(key)  # the content fits the scheme, in memory as from a file


def watermark_named(name: str, configuration: str = "default", **settings: Any) -> WatermarkScheme:
    """A registered watermark scheme by name, in one of its named configurations, with settings on top.

    Raises:
        InputError: an unknown scheme or configuration, or settings it refuses.
    """
    if name not in WATERMARKS:
        raise InputError(f"unknown watermark scheme {name!r}; registered: {', '.join(sorted(WATERMARKS)) or 'none'}")
    return WATERMARKS[name].named(configuration, **settings)  # type: ignore[return-value]


def watermark_entry(entry: str) -> tuple[str, str]:
    """``"backdoor:fixll_spl"`` -> ``("backdoor", "fixll_spl")``; ``"deepsigns"`` -> ``("deepsigns", "default")``.

    Raises:
        InputError: an unknown scheme or configuration.
    """
    name, _, configuration = str(entry).partition(":")
    if name not in WATERMARKS:
        raise InputError(f"unknown watermark scheme {name!r}; registered: {', '.join(sorted(WATERMARKS)) or 'none'}")
    configuration = configuration or "default"
    if configuration not in WATERMARKS[name].configurations:
        raise InputError(f"{name} configuration must be one of {', '.join(WATERMARKS[name].configurations)}, got {configuration!r}")
    return name, configuration


def marked_copy(host: ImageModel, from_scratch: bool, seed: int) -> ImageModel:
    """The model an embedding trains: a copy of the host, or a fresh copy of its architecture seeded by ``seed``."""
    from ..models import clone_model, fresh_like

    torch.manual_seed(seed)
    model = fresh_like(host) if from_scratch else clone_model(host)
    model.spec.info = {}
    return model


class penultimate:
    """Context manager that records the input of a model's last layer with parameters (its head) on every forward
    pass: the penultimate features, whatever the architecture. The hook is always released.

    Example::

        with penultimate(model) as grab:
            model(images)
        features = grab.features  # N x D
    """

    def __init__(self, model: torch.nn.Module) -> None:
        from ..zoo.finetune import last_layer

        self.head = last_layer(model)
        self.features: torch.Tensor | None = None
        self._handle: Any = None

    def __enter__(self) -> "penultimate":
        def keep(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.features = inputs[0].flatten(1)

        self._handle = self.head.register_forward_hook(keep)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
