"""An ONNX file run by ONNX Runtime: a suspect that can only be asked (black-box), for graphs torch cannot rebuild.

The whole ONNX file is the model's one tensor (``graph``, bytes as uint8), so a model file of this architecture is
a safetensors file like any other: hashed, loaded without unpickling, its layout checked before anything is read.
The network has no parameters and gives no gradients: schemes verify it in black-box mode only.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError
from .signature import keyword_signature

ONNX_RUNTIME = "onnxruntime"


def runtime_session(data: bytes, where: str):
    """An ONNX Runtime session (CPU, one thread) of an ONNX file's bytes, or one clear line."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise InputError(f"{where}: ONNX files need onnxruntime ({exc}); install it with: pip install 'modelprint[ecosystem]'") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for any unreadable graph
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{where}: ONNX Runtime cannot run this file ({type(exc).__name__}: {first[:200]})") from None


class RuntimeNet(nn.Module):
    """Runs an ONNX file held in the ``graph`` buffer (its bytes as uint8) with ONNX Runtime; no gradients."""

    inference_only = True

    def __init__(self, size_bytes: int) -> None:
        super().__init__()
        self.register_buffer("graph", torch.zeros(int(size_bytes), dtype=torch.uint8))
        self._session = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._session = None  # new bytes, new session

    def session(self):
        if self._session is None:
            self._session = runtime_session(self.graph.cpu().numpy().tobytes(), "the ONNX file")
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session()
        name = session.get_inputs()[0].name
        out = session.run(None, {name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


class RuntimeArchitecture:
    """The builder of :class:`RuntimeNet` (its ``graph`` buffer of ``size_bytes`` zeros until the file's bytes are loaded)."""

    min_input_size = 1

    def __repr__(self) -> str:
        return "RuntimeArchitecture()"

    __signature__ = keyword_signature("num_outputs", "in_channels", "size_bytes")

    def __call__(self, *, num_outputs: int, in_channels: int, size_bytes: int) -> nn.Module:
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 1:
            raise InputError(f"an ONNX Runtime model needs size_bytes >= 1, got {size_bytes!r}")
        return RuntimeNet(size_bytes)


def inference_only(model: nn.Module) -> bool:
    """Whether ``model`` can only be asked for predictions (no weights to read, no gradients)."""
    return any(getattr(m, "inference_only", False) for m in model.modules())
