"""SHA-256 digests of tensors: the identities of models and fingerprint sets."""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch


def tensors_sha256(tensors: Mapping[str, torch.Tensor], *, prefix: bytes = b"") -> str:
    """SHA-256 over ``prefix`` and every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(prefix)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
