"""Serve a model over the Open Inference Protocol (KServe v2 REST), as a thief's prediction API would.

``create_app`` builds a FastAPI application with the protocol's endpoints (health, server and model metadata,
inference) and the statistics extension (request and image counts, which tests and benches read). Malformed
requests get the protocol's error answer, ``{"error": "..."}`` with status 400 (413 for an oversized body, 404 for
an unknown model); nothing a client sends crashes the server.

Output filters make the server behave like an imperfect or adversarial API: noisy or rounded outputs, top-1 labels
only, or a Feature Squeezing detector that answers random outputs to the inputs it flags. They exist to measure how
a verification holds up against such APIs (``bench/adversarial_servers.py``).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import torch
import torch.nn as nn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .models import ImageModel, device_of
from .tasks import Task, task_from_config

if TYPE_CHECKING:
    from .detectors import FeatureSqueezing

#: The name of the one input tensor, and of the output per task.
INPUT_NAME = "images"
OUTPUT_NAMES = {"classification": "probabilities", "regression": "value", "similarity": "embedding"}
DEFAULT_MAX_BODY_BYTES = 64 * 2**20
DEFAULT_MAX_BATCH = 1024


class OutputFilter(Protocol):
    """What an imperfect or adversarial API does to the model's outputs before answering."""

    labels: bool  # True when the answer is an integer label per image, not scores

    def __call__(self, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor: ...


@dataclass(kw_only=True)
class GaussianNoise:
    """Adds N(0, sigma^2) noise to every output value (seeded, so a rerun answers the same)."""

    sigma: float
    seed: int = 0
    labels: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return outputs + self.sigma * torch.randn(outputs.shape, generator=self._generator)


@dataclass(kw_only=True)
class Rounding:
    """Rounds every output value to ``decimals`` decimal places (APIs that print 2-4 digits)."""

    decimals: int
    labels: bool = field(default=False, init=False, repr=False)

    def __call__(self, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return torch.round(outputs, decimals=self.decimals)


@dataclass(kw_only=True)
class TopLabel:
    """Answers the top-1 class only (an integer per image)."""

    labels: bool = field(default=True, init=False, repr=False)

    def __call__(self, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1)


@dataclass(kw_only=True)
class DetectorGuard:
    """Answers random probabilities to every input a fitted Feature Squeezing detector flags as adversarial.

    Attributes:
        flagged: inputs flagged so far; ``seen`` inputs examined.
    """

    detector: "FeatureSqueezing"
    model: nn.Module = field(repr=False)
    seed: int = 0
    labels: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.detector.threshold is None:
            raise ValueError("fit the detector on clean images before guarding a server with it")
        self._generator = torch.Generator().manual_seed(self.seed)
        self.flagged = 0
        self.seen = 0

    def __call__(self, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        flags = self.detector.flags(self.model, images)
        self.flagged += int(flags.sum())
        self.seen += len(images)
        noise = -torch.log(torch.rand(outputs.shape, generator=self._generator))  # Dirichlet(1): uniform on the simplex
        random_rows = noise / noise.sum(dim=1, keepdim=True)
        return torch.where(flags[:, None], random_rows, outputs)


@dataclass
class ServedModel:
    """A model as the server exposes it.

    Args:
        name: the model's name in the URL.
        model: the network (takes images in [0, 1]).
        task: its task adapter; the answer is ``task.deployed(model(x))`` (probabilities, values, embeddings).
        input_shape: (C, H, W) it accepts.
        filters: output filters applied in order.
    """

    name: str
    model: nn.Module
    task: Task
    input_shape: tuple[int, int, int]
    filters: list[OutputFilter] = field(default_factory=list)
    version: str = "1"
    inference_count: int = 0
    execution_count: int = 0

    def __post_init__(self) -> None:
        self.model.eval()
        self._lock = threading.Lock()  # one forward pass at a time: torch uses every core for one batch anyway
        with torch.no_grad():  # output filters keep the shape, except that a label has none
            probe = self.model(torch.zeros(1, *self.input_shape, device=device_of(self.model)))
        self._output_shape = () if self.labels else tuple(self.task.deployed(probe).shape[1:])

    @classmethod
    def of(cls, model: ImageModel, name: str, *, filters: Sequence[OutputFilter] = ()) -> "ServedModel":
        """A modelprint model (its spec gives the task and the input shape), served under ``name``."""
        spec = model.spec
        return cls(name, model, task_from_config(spec.task), (spec.channels, *spec.input_size), list(filters))

    @property
    def labels(self) -> bool:
        return any(f.labels for f in self.filters)

    @property
    def output_name(self) -> str:
        return "label" if self.labels else OUTPUT_NAMES.get(self.task.name, "output")

    def metadata(self) -> dict[str, Any]:
        """The protocol's model metadata: names, datatypes and shapes (-1 = any batch size)."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "pytorch",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *self.input_shape]}],
            "outputs": [{"name": self.output_name, "datatype": "INT64" if self.labels else "FP32",
                         "shape": [-1, *self._output_shape]}],
            "parameters": {"task": self.task.name},
        }

    @torch.no_grad()
    def answer(self, images: torch.Tensor) -> torch.Tensor:
        with self._lock:
            outputs = self.task.deployed(self.model(images.to(device_of(self.model)))).float().cpu()
            images = images.cpu()
            for output_filter in self.filters:
                outputs = output_filter(images, outputs)
            self.execution_count += 1
            self.inference_count += len(images)
        return outputs


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def create_app(served: ServedModel, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """The Open Inference Protocol v2 REST application serving one model.

    Args:
        served: the model.
        max_body_bytes: larger request bodies are refused with 413 before they are read whole.
        max_batch: the most images in one request.
    """
    app = FastAPI(title="modelprint inference server", version=__version__)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(_BadRequest)
    async def bad_request(request: Request, exc: _BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def model_named(name: str) -> ServedModel:
        if name != served.name:
            raise _BadRequest(f"unknown model {name!r}; this server serves {served.name!r}", status=404)
        return served

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "modelprint", "version": __version__, "extensions": ["statistics"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict:
        return model_named(name).metadata()

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> dict:
        return {"name": model_named(name).name, "ready": True}

    @app.get("/v2/models/{name}/stats")
    async def model_stats(name: str) -> dict:
        model = model_named(name)
        return {"model_stats": [{"name": model.name, "version": model.version,
                                 "inference_count": model.inference_count, "execution_count": model.execution_count}]}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> JSONResponse:
        model = model_named(name)
        body = await _read_bounded(request, max_body_bytes)
        # Decoding and the forward pass run in a worker thread, so health checks stay answered meanwhile.
        request_id, images, wanted = await run_in_threadpool(_parse_infer_request, body, model, max_batch)
        if wanted not in (None, model.output_name):
            raise _BadRequest(f"unknown output {wanted!r}; the model's output is {model.output_name!r}")
        outputs = await run_in_threadpool(model.answer, images)
        answer = {
            "model_name": model.name,
            "model_version": model.version,
            "outputs": [{"name": model.output_name, "shape": list(outputs.shape),
                         "datatype": "INT64" if model.labels else "FP32", "data": outputs.reshape(-1).tolist()}],
        }
        if request_id is not None:
            answer["id"] = request_id
        return JSONResponse(answer)

    return app


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BadRequest(f"request body of {declared} bytes exceeds the limit of {limit} bytes", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BadRequest(f"request body exceeds the limit of {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_infer_request(body: bytes, model: ServedModel, max_batch: int) -> tuple[Any, torch.Tensor, str | None]:
    """(id, images, requested output name) from an inference request, or :class:`_BadRequest` saying what is wrong."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"request body is not JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise _BadRequest(f"expected a JSON object with 'inputs': a list of one tensor named {INPUT_NAME!r}")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict):
        raise _BadRequest("each input must be an object with name, shape, datatype and data")
    if tensor.get("name") != INPUT_NAME:
        raise _BadRequest(f"unexpected input {tensor.get('name')!r}; the model's input is {INPUT_NAME!r}")
    if tensor.get("datatype") != "FP32":
        raise _BadRequest(f"input datatype must be FP32, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    expected = [-1, *model.input_shape]
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) for v in shape) and shape[1:] == expected[1:]):
        raise _BadRequest(f"input shape must be {expected}, got {shape!r}")
    if not 1 <= shape[0] <= max_batch:
        raise _BadRequest(f"batch size must be 1 to {max_batch}, got {shape[0]}")
    try:
        data = np.asarray(tensor.get("data"), dtype=np.float32).reshape(-1)
    except (ValueError, TypeError):
        raise _BadRequest("input data must be a list of numbers (flat or nested)") from None
    if data.size != math.prod(shape):
        raise _BadRequest(f"input data has {data.size} values, shape {shape} needs {math.prod(shape)}")
    if not np.isfinite(data).all():
        raise _BadRequest("input data contains NaN or infinite values")
    outputs = request.get("outputs")
    wanted = None
    if outputs is not None:
        if not (isinstance(outputs, list) and len(outputs) == 1 and isinstance(outputs[0], dict)):
            raise _BadRequest("'outputs' must be a list of one object naming the requested output")
        wanted = outputs[0].get("name")
    return request.get("id"), torch.from_numpy(data.reshape(shape)), wanted


class ServerThread:
    """Runs an application with uvicorn in a background thread (for tests, benches and notebooks).

    Use as a context manager; ``url`` is known once it has started. ``port=0`` picks a free port.
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the inference server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def serve(served: ServedModel, *, host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Serve until interrupted (the ``modelprint serve`` command)."""
    import uvicorn

    uvicorn.run(create_app(served, max_body_bytes=max_body_bytes), host=host, port=port, log_level="info")
