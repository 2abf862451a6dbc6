"""Serve a model over the Open Inference Protocol (KServe v2 REST), as a thief's prediction API would.

``create_app`` builds a FastAPI application with the protocol's endpoints (health, server and model metadata,
inference) and the statistics extension (request and image counts, which tests and benches read). Malformed
requests get the protocol's error answer, ``{"error": "..."}`` with status 400 (413 for an oversized body, 408 for a
body that does not arrive in time, 404 for an unknown model); nothing a client sends crashes the server or keeps its
memory: the limits (body size, JSON nesting, batch size, deadlines) are :class:`~modelprint.serving.limits.ServerLimits`.

Output filters make the server behave like an imperfect or adversarial API: noisy or rounded outputs, top-1 labels
only, or a Feature Squeezing detector that answers random outputs to the inputs it flags. They exist to measure how
a verification holds up against such APIs (``bench/adversarial_servers.py``).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import anyio
import torch
import torch.nn as nn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..checks import number
from ..models import ImageModel, device_of
from .limits import BadRequest, HeadLimit, ServerLimits, deadline_protocol, forget_traceback, read_body
from .parse import parse_infer_request
from ..tasks import Task, task_from_config

if TYPE_CHECKING:
    import uvicorn

    from ..detectors import FeatureSqueezing

#: The name of the one input tensor, and of the output per task.
INPUT_NAME = "images"
OUTPUT_NAMES = {"classification": "probabilities", "regression": "value", "similarity": "embedding"}
DEFAULT_MAX_BODY_BYTES = ServerLimits().max_body_bytes
DEFAULT_MAX_BATCH = ServerLimits().max_batch


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
        number(self.sigma, "noise sigma", minimum=0)
        self._generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, images: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return outputs + self.sigma * torch.randn(outputs.shape, generator=self._generator)


@dataclass(kw_only=True)
class Rounding:
    """Rounds every output value to ``decimals`` decimal places (APIs that print 2-4 digits)."""

    decimals: int
    labels: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        number(self.decimals, "rounding decimals", minimum=0, integer=True)

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


def create_app(served: ServedModel, *, limits: ServerLimits | None = None, max_body_bytes: int | None = None,
               max_batch: int | None = None, docs: bool = False) -> FastAPI:
    """The Open Inference Protocol v2 REST application serving one model.

    Args:
        served: the model.
        limits: body size, nesting, batch size and deadlines (defaults: :class:`ServerLimits`); :class:`ServerThread`
            and :func:`serve` read the connection deadlines from ``app.state.limits``.
        max_body_bytes: overrides ``limits.max_body_bytes``: larger bodies are refused with 413 before they are read.
        max_batch: overrides ``limits.max_batch``: the most images in one request.
        docs: serve the interactive documentation (/docs, /redoc, /openapi.json); /docs loads a script from a CDN.

    Returns:
        The application.
    """
    overrides = {k: v for k, v in (("max_body_bytes", max_body_bytes), ("max_batch", max_batch)) if v is not None}
    limits = replace(limits or ServerLimits(), **overrides)
    app = FastAPI(title="modelprint inference server", version=__version__, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    app.state.limits = limits
    app.add_middleware(HeadLimit, limit=limits.max_head_bytes)
    parse_slots = anyio.Semaphore(limits.parallel_parses)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        forget_traceback(exc)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        forget_traceback(exc)  # no frame of the request (nor its body) outlives the answer
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers={"connection": "close"} if exc.close else None)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    def model_named(name: str) -> ServedModel:
        if name != served.name:
            raise BadRequest(f"unknown model {name[:80]!r}; this server serves {served.name!r}", status=404)
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
        body = await read_body(request, limits)
        # Decoding and the forward pass run in worker threads, so health checks stay answered meanwhile.
        async with parse_slots:
            parsed = await run_in_threadpool(parse_infer_request, body, input_name=INPUT_NAME,
                                             input_shape=model.input_shape, limits=limits)
        del body  # refused or not, the body is freed here, before anything is raised
        if isinstance(parsed, BadRequest):
            raise parsed
        if parsed.output not in (None, model.output_name):
            raise BadRequest(f"unknown output {parsed.output[:80]!r}; the model's output is {model.output_name!r}")
        request_id, images = parsed.id, torch.from_numpy(parsed.images)
        del parsed
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


class ServerThread:
    """Runs an application with uvicorn in a background thread (for tests, benches and notebooks).

    Use as a context manager; ``url`` is known once it has started. ``port=0`` picks a free port. The connection
    deadlines are those of the application's limits (``create_app(..., limits=...)``).
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self._server = uvicorn.Server(uvicorn_config(app, log_level="warning", lifespan="off"))
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


def uvicorn_config(app: FastAPI, **options: Any) -> "uvicorn.Config":
    """A uvicorn configuration enforcing the application's limits on connections.

    Args:
        app: an application from :func:`create_app` (other applications get the default limits).
        options: further ``uvicorn.Config`` options (host, port, log level ...).

    Returns:
        The configuration: the h11 protocol with a deadline per request head, the keep-alive timeout and the
        largest request head of ``app.state.limits``.
    """
    import uvicorn

    limits = getattr(app.state, "limits", None) or ServerLimits()
    return uvicorn.Config(app, http=deadline_protocol(limits.head_timeout), timeout_keep_alive=limits.keep_alive_timeout,
                          h11_max_incomplete_event_size=limits.max_head_bytes, **options)


def serve(served: ServedModel, *, host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int | None = None,
          limits: ServerLimits | None = None, docs: bool = False) -> None:
    """Serve until interrupted (the ``modelprint serve`` command).

    Args:
        served: the model.
        host: the interface to listen on; the server has no authentication, keep it on loopback.
        port: the TCP port.
        max_body_bytes: overrides ``limits.max_body_bytes``.
        limits: the server's limits (:class:`ServerLimits` defaults).
        docs: serve /docs, /redoc and /openapi.json.
    """
    import uvicorn

    app = create_app(served, limits=limits, max_body_bytes=max_body_bytes, docs=docs)
    try:
        uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level="info")).run()
    except KeyboardInterrupt:  # as uvicorn.run does
        pass
