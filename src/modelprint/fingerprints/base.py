"""The interface every fingerprint scheme implements, its verification result, and fingerprint-set files.

A scheme object holds only its settings (keyword-only, shown by ``repr``). ``generate(model, images, labels, task)``
reads the target and returns a :class:`FingerprintSet`; ``verify(access, fingerprint_set)`` examines a suspect
through an access object and returns a :class:`VerificationResult`.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from ..access import Access
from ..errors import IntegrityError, InputError
from ..hashing import tensors_sha256
from ..tasks import Task, task_from_config

FINGERPRINT_META_KEY = "modelprint.fingerprints"
DIGEST_KEY = "sha256"


@dataclass
class VerificationResult:
    """What one verification of one suspect found.

    Attributes:
        scheme: the scheme's name.
        mode: ``"white-box"`` or ``"black-box"``.
        matching_score: fraction of fingerprint samples that matched (eq. 5 or 6), in [0, 1].
        n_samples: number of fingerprint samples examined.
        queries: images sent to a black-box suspect (0 in white-box mode).
        threshold: the per-sample threshold used (t_wb or t_bb).
        values: the per-sample statistic compared with the threshold.
        elapsed_s: wall-clock seconds.
    """

    scheme: str
    mode: str
    matching_score: float
    n_samples: int
    queries: int
    threshold: float
    values: list[float] = field(repr=False)
    elapsed_s: float

    def summary(self) -> dict[str, Any]:
        """The headline figures (everything but the per-sample values)."""
        return {k: v for k, v in asdict(self).items() if k != "values"}


@dataclass
class FingerprintSet:
    """Fingerprint samples and everything needed to verify a suspect with them.

    Attributes:
        scheme: name of the scheme that made the set.
        config: the scheme's settings.
        task: the task adapter's config.
        tensors: named tensors; at least ``samples`` (N x C x H x W in [0, 1]) and ``labels``.
        thresholds: per-mode thresholds derived from the target (``white_box``, ``black_box``).
        target: identity of the target model (architecture, weights SHA-256, ...).
        stats: how generation went (timings, replaced samples, PSNR, ...).
    """

    scheme: str
    config: dict[str, Any]
    task: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    thresholds: dict[str, float] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> torch.Tensor:
        return self.tensors["samples"]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors["labels"]

    def __len__(self) -> int:
        return len(self.samples)

    def task_adapter(self) -> Task:
        return task_from_config(self.task)

    def _metadata(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("scheme", "config", "task", "thresholds", "target", "stats")}

    def sha256(self) -> str:
        """SHA-256 over the metadata (canonical JSON) and every tensor's name, dtype, shape and bytes."""
        return _content_digest(json.dumps(self._metadata(), sort_keys=True), self.tensors)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set as a safetensors file, its metadata as JSON, and the content's SHA-256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_json = json.dumps(self._metadata(), sort_keys=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        metadata = {FINGERPRINT_META_KEY: meta_json, DIGEST_KEY: _content_digest(meta_json, tensors)}
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FingerprintSet":
        """Read a set written by :meth:`save`; a file that was changed, truncated or is of another kind is refused.

        Raises:
            InputError: the file does not exist.
            IntegrityError: it is not an intact modelprint fingerprint set.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such fingerprint file")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise IntegrityError(f"{path}: not a fingerprint file, or a truncated one ({exc})") from None
        if FINGERPRINT_META_KEY not in metadata or DIGEST_KEY not in metadata:
            raise IntegrityError(f"{path}: a safetensors file, but not a modelprint fingerprint set")
        meta_json = metadata[FINGERPRINT_META_KEY]
        if _content_digest(meta_json, tensors) != metadata[DIGEST_KEY]:
            raise IntegrityError(f"{path}: the fingerprint set was modified after it was written (SHA-256 mismatch)")
        meta = json.loads(meta_json)
        return cls(tensors=tensors, **meta)


def _content_digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    return tensors_sha256(tensors, prefix=meta_json.encode())


SCHEMES: dict[str, type["FingerprintScheme"]] = {}


class FingerprintScheme(ABC):
    """Base class of fingerprint schemes. Subclasses are keyword-only dataclasses of settings.

    Class attributes:
        name: the scheme's registry name, stored in every set it makes.
        modes: the verification modes it supports.
    """

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            SCHEMES[cls.name] = cls

    @abstractmethod
    def generate(
        self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, task: Task | None = None
    ) -> FingerprintSet:
        """Make fingerprints of ``model`` from candidate ``images`` (in [0, 1]) and their ``labels``."""

    @abstractmethod
    def verify(self, access: Access, fingerprints: FingerprintSet, *, mode: str | None = None) -> VerificationResult:
        """Examine a suspect through ``access`` with ``fingerprints``."""

    def settings(self) -> dict[str, Any]:
        """The scheme's settings as plain JSON data (stored in every fingerprint set)."""
        return json.loads(json.dumps({f.name: getattr(self, f.name) for f in fields(self)}))  # type: ignore[arg-type]

    @classmethod
    def parse_settings(cls, assignments: list[str]) -> dict[str, Any]:
        """``["beta=1", "layer=net.layer3", "pattern=[[0,0],[0,1]]"]`` -> settings typed for this scheme.

        A value is read as JSON when it parses (numbers, booleans, lists, null), else as a string.

        Raises:
            InputError: for a malformed assignment or an unknown setting.
        """
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        settings: dict[str, Any] = {}
        for text in assignments:
            key, sep, value = text.partition("=")
            if not sep or key.strip() not in known:
                raise InputError(f"{text!r}: expected SETTING=VALUE with SETTING one of {', '.join(sorted(known))}")
            try:
                settings[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                settings[key.strip()] = value
        return settings


def scheme_for(fingerprints: FingerprintSet) -> FingerprintScheme:
    """Rebuild the scheme that made ``fingerprints``, with the settings it was made with."""
    if fingerprints.scheme not in SCHEMES:
        raise IntegrityError(f"fingerprint set made by unknown scheme {fingerprints.scheme!r}")
    cls = SCHEMES[fingerprints.scheme]
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _tuples(v) for k, v in fingerprints.config.items() if k in known})


def _tuples(value: Any) -> Any:
    """JSON turns tuples into lists; settings are tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
