"""Fingerprint-set files: samples, per-sample tensors and metadata in one safetensors file, with the content's SHA-256
and, optionally, the owner's signature; loading checks header, authenticity, digest and content, in that order.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from ..integrity import signing
from ..checks import path_argument
from ..errors import IntegrityError, InputError
from ..integrity.hashing import TensorDigest, tensors_sha256
from ..tasks import Task, task_from_config
from . import checks
from .registry import scheme_class

FINGERPRINT_META_KEY = "modelprint.fingerprints"
DIGEST_KEY = "sha256"
#: The owner's signature over the content digest (JSON, see :mod:`modelprint.integrity.signing`); outside the digest.
SIGNATURE_KEY = "modelprint.signature"


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

    #: The metadata key that holds the content's description: a file of another kind (a watermark key) is refused.
    META_KEY: ClassVar[str] = FINGERPRINT_META_KEY
    #: What the file is, in messages.
    WHAT: ClassVar[str] = "fingerprint set"
    FILE: ClassVar[str] = "fingerprint file"

    @staticmethod
    def scheme_class(name: Any) -> type:
        """The registered scheme class that made a file of this kind (raises IntegrityError for an unknown one)."""
        return scheme_class(name)

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
        self, *, trusted_key: signing.PublicKeySource | None = None, expect_sha256: str | None = None, what: str | None = None
    ) -> None:
        """Refuse the set if a signature it carries does not cover its content, or unless it is signed by
        ``trusted_key`` and/or its digest is ``expect_sha256``.

        Raises:
            IntegrityError: changed after signing, unsigned or signed by another key (with a trusted key), or another
                digest.
        """
        _check_authentic(self.signature, self.sha256(), trusted_key, expect_sha256, what or f"the {self.WHAT}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set as a safetensors file, its metadata as JSON, the content's SHA-256 and the signature (if
        any, and only while it still matches the content)."""
        path = path_argument(path, self.FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta_json = json.dumps(self._metadata(), sort_keys=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        digest = _content_digest(meta_json, tensors)
        metadata = {self.META_KEY: meta_json, DIGEST_KEY: digest}
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
        2. a signature it carries covers the digest it declares (against the key the signature names, always); with
           ``trusted_key``/``expect_sha256``: that digest is signed by that key / is that digest;
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
        path = path_argument(path, cls.FILE)
        if not path.is_file():
            raise InputError(f"{path}: no such {cls.FILE}")
        trusted_key = signing.load_public_key(trusted_key) if trusted_key is not None else None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if cls.META_KEY not in metadata or DIGEST_KEY not in metadata:
                    raise IntegrityError(f"{path}: a safetensors file, but not a modelprint {cls.WHAT}")
                meta_json, declared = metadata[cls.META_KEY], metadata[DIGEST_KEY]
                signature = _parse_signature(metadata.get(SIGNATURE_KEY), path)
                _check_authentic(signature, declared, trusted_key, expect_sha256, str(path))
                meta = _parse_meta(meta_json, path)
                try:
                    cls.scheme_class(meta["scheme"]).check_layout(checks.header_layout(handle), str(meta["task"].get("name")))
                except IntegrityError as exc:
                    raise IntegrityError(f"{path}: {exc}") from None
                # Over the canonical JSON of the metadata (as :meth:`save` writes it), so that sha256() of the set
                # loaded is the digest checked here and signed by the owner.
                digest, tensors = TensorDigest(json.dumps(meta, sort_keys=True).encode()), {}
                for name in sorted(handle.keys()):  # each tensor hashed in place as it is read
                    tensors[name] = digest.update(name, handle.get_tensor(name))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise IntegrityError(f"{path}: not a {cls.FILE}, or a truncated one ({exc})") from None
        if digest.hexdigest() != declared:
            raise IntegrityError(f"{path}: the {cls.WHAT} was modified after it was written (SHA-256 mismatch)")
        fingerprints = cls(tensors=tensors, signature=signature, **meta)
        try:
            cls.scheme_class(fingerprints.scheme).validate(fingerprints)
            # every writer records the target's SHA-256: a file without one names no target at all
            checks.check_target(fingerprints.target, tuple(fingerprints.samples.shape), str(fingerprints.task.get("name")), required=True)
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
    """The authenticity checks: a signature the set carries holds against its own key (always); the digest is the
    expected one and/or a signature by the trusted key covers it (when pinned)."""
    if expect_sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", expect_sha256.strip().lower()) is None:
        raise InputError(f"--expect-sha256 {expect_sha256!r}: a SHA-256 digest is 64 hex digits")
    if expect_sha256 is not None and digest != expect_sha256.strip().lower():
        raise IntegrityError(f"{what}: its SHA-256 is {digest[:16]}..., not the expected {expect_sha256.strip()[:16]}...")
    if signature is not None:  # a signature that is there must hold, pinned key or not
        signing.check_own_key(signature, signing.set_message(digest), what=what)
    if trusted_key is not None:
        signing.check_message(signature, signing.set_message(digest), trusted_key, what=what)


def _content_digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    return tensors_sha256(tensors, prefix=meta_json.encode())


