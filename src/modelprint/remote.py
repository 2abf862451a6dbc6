"""A client of the Open Inference Protocol (KServe v2 REST), the protocol Triton, KServe and MLServer speak.

:class:`OipClient` is a prediction function for :class:`~modelprint.access.BlackBox`: it sends a batch of images as
one FP32 tensor and returns the model's output. It reads the model's metadata first (input name and shape, output
kind), retries with exponential backoff on connection errors, timeouts and 5xx answers, spaces requests to an
optional rate limit, and turns every failure into one clear :class:`~modelprint.errors.RemoteError`.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import httpx
import numpy as np
import torch

from .errors import RemoteError

#: Open Inference Protocol datatypes the client reads back, and the torch dtype they become.
_DATATYPES = {
    "FP16": torch.float32, "FP32": torch.float32, "FP64": torch.float64,
    "INT8": torch.int64, "INT16": torch.int64, "INT32": torch.int64, "INT64": torch.int64,
    "UINT8": torch.int64, "UINT16": torch.int64, "UINT32": torch.int64, "UINT64": torch.int64, "BOOL": torch.int64,
}
_RETRIED = (httpx.TransportError,)  # connection refused or reset, timeouts, a server that died mid-answer


class OipClient:
    """Speaks the Open Inference Protocol v2 REST to one model on one server.

    Args:
        url: the server's base URL (``http://host:port``).
        model_name: the model's name on the server.
        timeout: seconds to wait for a connection and for each answer.
        retries: attempts after the first on connection errors, timeouts and 5xx answers (4xx are not retried:
            the request itself is wrong).
        backoff: seconds before the first retry; doubled for every further one.
        rate_limit: most requests per second (None: no limit).
        output: name of the output to request (e.g. ``"predict_proba"`` on MLServer's scikit-learn runtime);
            the first output of the answer when None.
        headers: extra HTTP headers (an API key, ...).
        transport: an httpx transport (tests use it to run against an app in-process).

    Attributes:
        metadata: the model's metadata as the server declared it.
        image_shape: (C, H, W) when the server declares 4-d image inputs, else None.
        labels_only: the server's output is an integer label, not scores.
        requests: requests answered so far; ``attempts`` counts retries too.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        rate_limit: float | None = None,
        output: str | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise RemoteError(f"need retries >= 0, backoff >= 0 and timeout > 0, got {retries}, {backoff}, {timeout}")
        if rate_limit is not None and rate_limit <= 0:
            raise RemoteError(f"rate limit must be > 0 requests per second, got {rate_limit}")
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.retries = retries
        self.backoff = backoff
        self.min_interval = 0.0 if rate_limit is None else 1.0 / rate_limit
        self.output = output
        self.requests = 0
        self.attempts = 0
        self._last_request = -math.inf
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers, transport=transport)
        self.metadata: dict[str, Any] = self._call("GET", f"/v2/models/{model_name}")
        self._input = self._declared_input()
        self.labels_only = self._declares_labels()

    # --------------------------------------------------------------------------------------------- what is served
    def _declared_input(self) -> dict[str, Any]:
        inputs = self.metadata.get("inputs") or []
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
        answer = self._call("POST", f"/v2/models/{self.model_name}/infer", json=body)
        return self._read_output(answer, len(x))

    def _read_output(self, answer: dict[str, Any], n: int) -> torch.Tensor:
        out = self._chosen(answer.get("outputs"))
        if out is None:
            raise RemoteError(f"{self._where()} answered no output {self.output or ''}".rstrip())
        dtype = _DATATYPES.get(out.get("datatype", ""))
        if dtype is None:
            raise RemoteError(f"{self._where()} answered datatype {out.get('datatype')!r}; numeric outputs are needed")
        try:
            values = torch.as_tensor(np.asarray(out["data"], dtype=np.float64)).to(dtype).reshape(out["shape"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise RemoteError(f"{self._where()} answered a malformed output ({exc})") from None
        if len(values) != n:
            raise RemoteError(f"{self._where()} answered {len(values)} outputs for {n} images")
        return values

    # ------------------------------------------------------------------------------------------------- transport
    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request with retries; the decoded JSON answer."""
        for attempt in range(self.retries + 1):
            self._wait_for_rate_limit()
            self.attempts += 1
            try:
                response = self._http.request(method, path, **kwargs)
            except _RETRIED as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    self.requests += 1
                    return self._json(response)
                failure = f"HTTP {response.status_code}: {self._error_text(response)}"
                if response.status_code < 500:
                    raise RemoteError(f"{self._where()} refused {method} {path}: {failure}")
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise RemoteError(f"{self._where()} did not answer {method} {path} after {self.retries + 1} attempts ({failure})")

    def _wait_for_rate_limit(self) -> None:
        pause = self._last_request + self.min_interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last_request = time.monotonic()

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise RemoteError(f"{self._where()} answered something that is not JSON") from None
        if not isinstance(data, dict):
            raise RemoteError(f"{self._where()} answered JSON that is not an object")
        return data

    @staticmethod
    def _error_text(response: httpx.Response) -> str:
        try:
            return str(response.json().get("error", response.text))[:300]
        except (ValueError, AttributeError):
            return response.text[:300]

    def _where(self) -> str:
        return f"the server at {self.url} (model {self.model_name!r})"

    def close(self) -> None:
        self._http.close()
