"""SHA-256 digests of tensors and files: the identities of models, fingerprint sets and suspect files.

Digests are computed streaming: tensor by tensor (each tensor's bytes are hashed in place, without a copy) and a
file in fixed-size chunks, so hashing never holds more than one tensor or one chunk beyond what the caller keeps.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Mapping

import torch

#: Bytes read at a time when hashing a file.
CHUNK_BYTES = 1 << 20


class TensorDigest:
    """SHA-256 over a prefix and tensors fed one at a time, in name order: each tensor's name, dtype, shape, bytes.

    Args:
        prefix: bytes hashed first (a set's metadata JSON, say).
    """

    def __init__(self, prefix: bytes = b"") -> None:
        self._digest = hashlib.sha256(prefix)

    def update(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Hash one tensor (feed them in sorted name order); returns it, so that a reader can hash as it loads."""
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        self._digest.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            flat = t.contiguous().reshape(-1).view(torch.uint8)
            self._digest.update(memoryview(flat.numpy()))  # the tensor's own bytes, not a copy
        return tensor

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor], *, prefix: bytes = b"") -> str:
    """SHA-256 over ``prefix`` and every tensor's name, dtype, shape and bytes, in name order."""
    digest = TensorDigest(prefix)
    for name in sorted(tensors):
        digest.update(name, tensors[name])
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks of :data:`CHUNK_BYTES`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """Sorted, compact, strict JSON (no NaN or infinity; non-ASCII escaped): the text a digest or signature is taken over.

    Args:
        value: plain JSON data.
        default: how to write what JSON cannot represent (``str`` for paths, say); such values raise without it.

    Raises:
        ValueError: NaN or infinity in ``value``.
        TypeError: a value JSON cannot represent, without ``default``.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=default)
