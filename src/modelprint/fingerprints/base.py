"""The interface every fingerprint scheme implements, its verification result, and fingerprint-set files.

A scheme object holds only its settings (keyword-only, shown by ``repr``). ``generate(model, images, labels, task)``
reads the target and returns a :class:`FingerprintSet`; ``verify(access, fingerprint_set)`` examines a suspect
through an access object and returns a :class:`VerificationResult`.
"""

from __future__ import annotations

import json
import re
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from .. import signing
from ..access import Access
from ..errors import IntegrityError, InputError
from ..hashing import TensorDigest, tensors_sha256
from ..tasks import Task, task_from_config
from . import checks

FINGERPRINT_META_KEY = "modelprint.fingerprints"
DIGEST_KEY = "sha256"
#: The owner's signature over the content digest (JSON, see :mod:`modelprint.signing`); outside the digest.
SIGNATURE_KEY = "modelprint.signature"


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
        signature: the owner's Ed25519 signature over :meth:`sha256` (:meth:`sign`), or None; not part of the digest.
    """

    scheme: str
    config: dict[str, Any]
    task: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    thresholds: dict[str, float] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, str] | None = field(default=None, repr=False, compare=False)

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

    def sign(self, key: signing.PrivateKeySource) -> "FingerprintSet":
        """Sign the set's content digest with the owner's Ed25519 private key (a key object or a PEM file).

        The signature covers :meth:`sha256` (metadata and every tensor) and is stored by :meth:`save`; a set changed
        afterwards no longer matches it.

        Returns:
            The set itself.
        """
        self.signature = signing.sign_message(key, signing.set_message(self.sha256()))
        return self

    def check_authenticity(
        self, *, trusted_key: signing.PublicKeySource | None = None, expect_sha256: str | None = None, what: str = "the fingerprint set"
    ) -> None:
        """Refuse the set unless it is signed by ``trusted_key`` and/or its digest is ``expect_sha256``.

        Raises:
            IntegrityError: unsigned, signed by another key, changed after signing, or another digest.
        """
        _check_authentic(self.signature, self.sha256(), trusted_key, expect_sha256, what)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set as a safetensors file, its metadata as JSON, the content's SHA-256 and the signature (if
        any, and only while it still matches the content)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_json = json.dumps(self._metadata(), sort_keys=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        digest = _content_digest(meta_json, tensors)
        metadata = {FINGERPRINT_META_KEY: meta_json, DIGEST_KEY: digest}
        if self.signature is not None:
            try:
                signing.check_message(self.signature, signing.set_message(digest), self.signature.get("public_key", ""), what="the set")
                metadata[SIGNATURE_KEY] = json.dumps(self.signature, sort_keys=True)
            except (IntegrityError, InputError):
                self.signature = None  # the content changed since it was signed: a stale signature is not written
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        trusted_key: signing.PublicKeySource | None = None,
        expect_sha256: str | None = None,
    ) -> "FingerprintSet":
        """Read a set written by :meth:`save`, checking it in this order, each failure in one line naming the file:

        1. a safetensors file holding a modelprint set (header and metadata only);
        2. with ``trusted_key``/``expect_sha256``: the digest it declares is signed by that key / is that digest;
        3. its layout (tensor names, dtypes, shapes in the header) is what its scheme reads, before any tensor is read;
        4. the SHA-256 of its content, computed tensor by tensor, is the declared one;
        5. its content fits its scheme (:meth:`FingerprintScheme.validate`).

        Without a trusted key or digest, step 4 only detects damage: anyone who edits a set can store a new digest.

        Args:
            path: the fingerprint file.
            trusted_key: the owner's Ed25519 public key (PEM file, hex, or key object) the set must be signed with.
            expect_sha256: the content digest the set must have (published by the owner beforehand).

        Raises:
            InputError: the file does not exist.
            IntegrityError: it is not an intact, valid modelprint fingerprint set, or not the trusted one.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such fingerprint file")
        trusted_key = signing.load_public_key(trusted_key) if trusted_key is not None else None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if FINGERPRINT_META_KEY not in metadata or DIGEST_KEY not in metadata:
                    raise IntegrityError(f"{path}: a safetensors file, but not a modelprint fingerprint set")
                meta_json, declared = metadata[FINGERPRINT_META_KEY], metadata[DIGEST_KEY]
                signature = _parse_signature(metadata.get(SIGNATURE_KEY), path)
                _check_authentic(signature, declared, trusted_key, expect_sha256, str(path))
                meta = _parse_meta(meta_json, path)
                try:
                    scheme_class(meta["scheme"]).check_layout(checks.header_layout(handle), str(meta["task"].get("name")))
                except IntegrityError as exc:
                    raise IntegrityError(f"{path}: {exc}") from None
                # Over the canonical JSON of the metadata (as :meth:`save` writes it), so that sha256() of the set
                # loaded is the digest checked here and signed by the owner.
                digest, tensors = TensorDigest(json.dumps(meta, sort_keys=True).encode()), {}
                for name in sorted(handle.keys()):  # each tensor hashed in place as it is read
                    tensors[name] = digest.update(name, handle.get_tensor(name))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise IntegrityError(f"{path}: not a fingerprint file, or a truncated one ({exc})") from None
        if digest.hexdigest() != declared:
            raise IntegrityError(f"{path}: the fingerprint set was modified after it was written (SHA-256 mismatch)")
        fingerprints = cls(tensors=tensors, signature=signature, **meta)
        try:
            scheme_class(fingerprints.scheme).validate(fingerprints)
        except IntegrityError as exc:
            raise IntegrityError(f"{path}: {exc}") from None
        return fingerprints


def _parse_signature(text: str | None, path: Path) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        block = json.loads(text)
    except json.JSONDecodeError:
        block = None
    if not isinstance(block, dict):
        raise IntegrityError(f"{path}: unreadable signature in the metadata")
    return block


def _parse_meta(text: str, path: Path) -> dict[str, Any]:
    try:
        return checks.check_meta(json.loads(text))
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{path}: the set's metadata is not JSON ({exc})") from None
    except IntegrityError as exc:
        raise IntegrityError(f"{path}: {exc}") from None


def _check_authentic(
    signature: dict[str, str] | None, digest: str, trusted_key: signing.PublicKeySource | None, expect_sha256: str | None, what: str
) -> None:
    """The pinned checks: the digest is the expected one, and/or a signature by the trusted key covers it."""
    if expect_sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", expect_sha256.strip().lower()) is None:
        raise InputError(f"--expect-sha256 {expect_sha256!r}: a SHA-256 digest is 64 hex digits")
    if expect_sha256 is not None and digest != expect_sha256.strip().lower():
        raise IntegrityError(f"{what}: its SHA-256 is {digest[:16]}..., not the expected {expect_sha256.strip()[:16]}...")
    if trusted_key is not None:
        signing.check_message(signature, signing.set_message(digest), trusted_key, what=what)


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
    def check_layout(cls, layout: checks.Layout, task: str) -> int:
        """Check the tensors' names, dtypes and shapes (read from a file's header before any tensor is read).

        Every scheme reads ``samples`` (float, N x C x H x W) and N ``labels`` (integers for classification);
        a scheme extends this with the tensors its verification reads.

        Args:
            layout: tensor name -> (dtype, shape).
            task: the set's task name.

        Returns:
            N, the number of samples.

        Raises:
            IntegrityError: naming the tensor and what is wrong with it.
        """
        return checks.check_common_layout(layout, task)

    @classmethod
    def validate(cls, fingerprints: FingerprintSet) -> "FingerprintScheme":
        """Check a set's content against what this scheme reads, so that a set edited (and re-hashed) into odd
        contents is refused in one line instead of failing or scoring silently.

        Generic checks: a known task with valid settings, the layout (:meth:`check_layout`), samples finite and in
        [0, 1], finite labels (classification: classes of the target), a finite threshold per mode, settings of
        the types their fields declare and the scheme's own checks of them. A scheme extends it with its own.

        Returns:
            The scheme rebuilt from the set's settings (:func:`scheme_for`).

        Raises:
            IntegrityError: saying what is wrong (the caller names the file).
        """
        task = checks.check_task(fingerprints.task)
        cls.check_layout(checks.layout_of(fingerprints.tensors), task.name)
        checks.check_images(fingerprints.samples, "samples")
        checks.check_labels(fingerprints, task)
        for mode in cls.modes:
            key = mode.replace("-", "_")
            if key not in fingerprints.thresholds:
                raise IntegrityError(f"the set has no {key} threshold")
        for key, value in fingerprints.thresholds.items():
            checks.check_number(value, f"the {key} threshold")
        checks.check_settings(cls, fingerprints.config)
        return scheme_for(fingerprints)

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


def scheme_class(name: Any) -> type[FingerprintScheme]:
    """The scheme registered under ``name``.

    Raises:
        IntegrityError: no scheme has that name.
    """
    if not isinstance(name, str) or name not in SCHEMES:
        raise IntegrityError(f"fingerprint set made by unknown scheme {name!r}")
    return SCHEMES[name]


def scheme_for(fingerprints: FingerprintSet) -> FingerprintScheme:
    """Rebuild the scheme that made ``fingerprints``, with the settings it was made with.

    Raises:
        IntegrityError: an unknown scheme, or settings it refuses (in one line).
    """
    cls = scheme_class(fingerprints.scheme)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: _tuples(v) for k, v in fingerprints.config.items() if k in known})
    except (TypeError, ValueError) as exc:  # InputError is a ValueError
        raise IntegrityError(f"the set's settings are invalid: {' '.join(str(exc).split())}") from None


def _tuples(value: Any) -> Any:
    """JSON turns tuples into lists; settings are tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
