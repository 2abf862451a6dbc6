"""A client of the Open Inference Protocol (KServe v2 REST), the protocol Triton, KServe and MLServer speak.

:class:`OipClient` is a prediction function for :class:`~modelprint.access.BlackBox`: it sends a batch of images as
one FP32 tensor and returns the model's output. It reads the model's metadata first (input name and shape, output
kind). Retries, the rate limit, the deadline per request and the cap on an answer's size are the transport's
(:class:`~modelprint.serving.http.HttpPredictor`); every failure is one clear :class:`~modelprint.errors.RemoteError`.
Odd metadata, outputs that are not numbers, NaN, infinity or values beyond
the float32 range, and outputs of another shape than the metadata declares are refused. The URL is shown and
stored without its credentials (:func:`~modelprint.serving.urls.redact_url`); requests still use them.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import httpx
import numpy as np
import torch

from ..errors import RemoteError
from .http import DEFAULT_MAX_ANSWER_BYTES, HttpPredictor

#: Open Inference Protocol datatypes the client reads back, and the torch dtype they become.
_DATATYPES = {
    "FP16": torch.float32, "FP32": torch.float32, "FP64": torch.float64,
    "INT8": torch.int64, "INT16": torch.int64, "INT32": torch.int64, "INT64": torch.int64,
    "UINT8": torch.int64, "UINT16": torch.int64, "UINT32": torch.int64, "UINT64": torch.int64, "BOOL": torch.int64,
}
#: Largest finite float32: answers are read as float32, so a larger magnitude would become infinity.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class OipClient(HttpPredictor):
    """Speaks the Open Inference Protocol v2 REST to one model on one server.

    Args:
        url: the server's base URL (``http://host:port``).
        model_name: the model's name on the server.
        output: name of the output to request (e.g. ``"predict_proba"`` on MLServer's scikit-learn runtime);
            the first output of the answer when None.
        timeout, deadline, max_answer_bytes, retries, backoff, rate_limit, headers, transport: the transport's
            (:class:`~modelprint.serving.http.HttpPredictor`).

    Attributes:
        metadata: the model's metadata as the server declared it.
        image_shape: (C, H, W) when the server declares 4-d image inputs, else None.
        labels_only: the server's output is an integer label, not scores.
        requests, attempts, url, on_send: the transport's (:class:`~modelprint.serving.http.HttpPredictor`).
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        timeout: float = 30.0,
        deadline: float | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        retries: int = 3,
        backoff: float = 0.5,
        rate_limit: float | None = None,
        output: str | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, timeout=timeout, deadline=deadline, max_answer_bytes=max_answer_bytes, retries=retries,
                         backoff=backoff, rate_limit=rate_limit, headers=headers, transport=transport)
        self.model_name = model_name
        self.output = output
        self.metadata: dict[str, Any] = self._object(self._call("GET", f"/v2/models/{model_name}"))
        _check_metadata(self.metadata, self._where())
        self._input = self._declared_input()
        self.labels_only = self._declares_labels()

    # --------------------------------------------------------------------------------------------- what is served
    def _declared_input(self) -> dict[str, Any]:
        inputs = self.metadata.get("inputs")
        if len(inputs) != 1:
            raise RemoteError(f"{self._where()}: the model declares {len(inputs)} inputs; image models take one")
        return inputs[0]

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) the server accepts, when it declares image-shaped inputs."""
        shape = self._input.get("shape") or []
        return tuple(int(v) for v in shape[1:]) if len(shape) == 4 and all(v > 0 for v in shape[1:]) else None

    def _flat_width(self) -> int | None:
        """D when the server declares flat inputs [-1, D] (images are then sent flattened)."""
        shape = self._input.get("shape") or []
        return int(shape[1]) if len(shape) == 2 and shape[1] > 0 else None

    def _declares_labels(self) -> bool:
        declared = self._chosen(self.metadata.get("outputs"))
        return declared is not None and declared.get("datatype", "FP32") not in ("FP16", "FP32", "FP64")

    def _chosen(self, outputs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        """The requested output (by name), or the first one when none was requested."""
        return next((o for o in outputs or [] if self.output is None or o.get("name") == self.output), None)

    def _where(self) -> str:
        return f"the server at {self.url} (model {self.model_name!r})"

    def identity(self) -> dict[str, Any]:
        """What the suspect is, for records and journals: the URL (without credentials), the model and its metadata."""
        return {"kind": "http", "url": self.url, "model_name": self.model_name, "metadata": self.metadata}

    # ------------------------------------------------------------------------------------------------- inference
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The model's outputs on ``images`` (N x C x H x W in [0, 1]), one request."""
        x = images.detach().float().cpu()
        width = self._flat_width()
        if width is not None:
            if x[0].numel() != width:
                raise RemoteError(f"{self._where()} takes {width} values per input, the images have {x[0].numel()}")
            x = x.reshape(len(x), width)
        body: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "inputs": [{"name": self._input.get("name", "input"), "shape": list(x.shape), "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}],
        }
        if self.output is not None:
            body["outputs"] = [{"name": self.output}]
        answer = self._object(self._call("POST", f"/v2/models/{self.model_name}/infer", images=len(x), json=body))
        return self._read_output(answer, len(x))

    def _read_output(self, answer: dict[str, Any], n: int) -> torch.Tensor:
        outputs = answer.get("outputs")
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise RemoteError(f"{self._where()} answered 'outputs' that are not a list of tensors")
        out = self._chosen(outputs)
        if out is None:
            raise RemoteError(f"{self._where()} answered no output {self.output or ''}".rstrip())
        dtype = _DATATYPES.get(out.get("datatype", "")) if isinstance(out.get("datatype"), str) else None
        if dtype is None:
            raise RemoteError(f"{self._where()} answered datatype {out.get('datatype')!r}; numeric outputs are needed")
        shape, data = out.get("shape"), out.get("data")
        if not _is_shape(shape) or not shape or not isinstance(data, list):
            raise RemoteError(f"{self._where()} answered a malformed output (shape {str(shape)[:60]}, data of type {type(data).__name__})")
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, RecursionError):
            raise RemoteError(f"{self._where()} answered output data that is not an array of numbers") from None
        if array.dtype.kind not in "biuf":
            raise RemoteError(f"{self._where()} answered output data that is not all numbers")
        array = array.astype(np.float64).reshape(-1)
        if array.size != math.prod(shape):
            raise RemoteError(f"{self._where()} answered {array.size} values for an output of shape {shape}")
        bad = int((~np.isfinite(array)).sum())
        if bad:
            raise RemoteError(f"{self._where()} answered {bad} NaN or infinite values; a suspect's answers must be finite numbers")
        if array.size and float(np.abs(array).max()) > _FLOAT32_MAX:
            raise RemoteError(f"{self._where()} answered values beyond the float32 range (largest magnitude "
                              f"{float(np.abs(array).max()):.3g}); a suspect's answers must be float32 numbers")
        values = torch.as_tensor(array).to(dtype).reshape(shape)
        if len(values) != n:
            raise RemoteError(f"{self._where()} answered {len(values)} outputs for {n} images")
        declared = self._chosen(self.metadata.get("outputs"))
        declared_shape = declared.get("shape") if declared is not None else None
        if declared_shape and all(v > 0 for v in declared_shape[1:]) and list(values.shape[1:]) != list(declared_shape[1:]):
            raise RemoteError(f"{self._where()} answered outputs of shape {list(values.shape[1:])} per image; its metadata "
                              f"declares {list(declared_shape[1:])}")
        return values

def _is_shape(value: Any) -> bool:
    """A tensor shape as the protocol writes it: a list of at most 8 integers, each >= -1."""
    return isinstance(value, list) and len(value) <= 8 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= -1 for v in value)


def _check_metadata(metadata: dict[str, Any], where: str) -> None:
    """Raise :class:`RemoteError` unless the model metadata has the form the client reads.

    Args:
        metadata: the decoded answer to ``GET /v2/models/NAME``.
        where: the server and model, for messages.
    """
    for part in ("inputs", "outputs"):
        tensors = metadata.get(part, [] if part == "outputs" else None)
        if tensors is None and part == "outputs":
            continue
        if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
            raise RemoteError(f"{where}: its metadata declares {part} that are not a list of tensors ({str(tensors)[:80]})")
        for tensor in tensors:
            if "shape" in tensor and not _is_shape(tensor["shape"]):
                raise RemoteError(f"{where}: its metadata declares the {part[:-1]} shape {str(tensor['shape'])[:80]}; "
                                  "a shape is a list of integers")
            for key in ("name", "datatype"):
                if key in tensor and not isinstance(tensor[key], str):
                    raise RemoteError(f"{where}: its metadata declares the {part[:-1]} {key} {tensor[key]!r}; a string is needed")
