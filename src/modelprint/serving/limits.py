"""Limits that keep the inference server's memory and time bounded, whatever a client sends.

:class:`ServerLimits` holds them. A request body is read with a size cap and a deadline (:func:`read_body`), then
scanned and parsed by :mod:`modelprint.serving.parse`; every refusal is a :class:`BadRequest`, and the handlers drop its
traceback (:func:`forget_traceback`) so that no frame holding a body outlives the answer. :func:`deadline_protocol`
cuts connections whose request head does not arrive in time. Nothing here imports torch, so the command line can
check limits before it loads a model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import InputError

if TYPE_CHECKING:
    from starlette.requests import Request

MIB = 2**20
#: Requests whose body reached this size give the heap's free pages back once the body is dropped.
TRIM_AFTER_BYTES = 4 * MIB


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """What one client may cost the server.

    Args:
        max_body_bytes: larger request bodies are refused with 413 before they are read whole.
        max_batch: the most images in one request.
        max_depth: the deepest JSON nesting accepted (a request needs 4, 8 with nested data).
        body_timeout: seconds to receive a request's whole body; a slower client gets 408 and its connection closed.
        head_timeout: seconds to receive a request's head (line and headers) on a new or reused connection, and to
            finish sending a body the server has already refused; then the connection is closed.
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        max_head_bytes: the largest request head (request line and headers): a larger one gets 431, or 400 when it
            arrives in more than one read (uvicorn's ``h11_max_incomplete_event_size``).
        parallel_parses: request bodies parsed at once (each costs several times its size while it is parsed, and
            holds the interpreter's lock while :func:`json.loads` runs, so more than one does not parse faster).
    """

    max_body_bytes: int = 64 * MIB
    max_batch: int = 1024
    max_depth: int = 32
    body_timeout: float = 30.0
    head_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_head_bytes: int = 16 * 1024
    parallel_parses: int = 1

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_depth", "max_head_bytes", "parallel_parses"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"server limit {name} must be a whole number >= 1, got {value!r}")
        for name in ("body_timeout", "head_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise InputError(f"server limit {name} must be a finite positive number of seconds, got {value!r}")

    @classmethod
    def with_body_mib(cls, max_body_mb: float, **limits: Any) -> "ServerLimits":
        """Limits with a body cap given in MiB (``modelprint serve --max-body-mb``).

        Args:
            max_body_mb: the cap in MiB; must be finite and positive.
            limits: other fields.

        Returns:
            The limits.
        """
        number = isinstance(max_body_mb, (int, float)) and not isinstance(max_body_mb, bool)
        if not (number and math.isfinite(max_body_mb) and max_body_mb > 0):
            raise InputError(f"--max-body-mb must be a finite positive number of MiB, got {max_body_mb!r}")
        return cls(max_body_bytes=max(1, int(max_body_mb * MIB)), **limits)


class BadRequest(Exception):
    """A request the server refuses: the protocol's ``{"error": ...}`` answer with ``status``.

    Args:
        message: what was wrong.
        status: the HTTP status (400, 404, 408, 413).
        close: close the connection after answering (the client stalled).
    """

    def __init__(self, message: str, status: int = 400, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


def forget_traceback(exc: BaseException) -> None:
    """Drop the frames an exception (and those it was raised from) still holds, so their locals can be freed."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        following = exc.__context__ or exc.__cause__
        exc.__traceback__ = None
        exc.__context__ = exc.__cause__ = None
        exc = following


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback interface (``localhost``, 127.0.0.0/8, ::1)."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HeadLimit:
    """ASGI middleware answering 431 to a request whose head (line and headers) is larger than ``limit`` bytes.

    Args:
        app: the application it guards.
        limit: the largest head in bytes.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.limit:
                from starlette.responses import JSONResponse

                answer = JSONResponse({"error": f"request head of {size} bytes exceeds the limit of {self.limit} bytes"},
                                      status_code=431, headers={"connection": "close"})
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_body(request: "Request", limits: ServerLimits) -> bytearray:
    """The request's body, read within ``limits.body_timeout`` seconds and at most ``limits.max_body_bytes`` long.

    Args:
        request: the request whose body is read.
        limits: the size cap and the deadline.

    Returns:
        The body.

    Raises:
        BadRequest: 413 when the body is (or is declared) larger than the cap, 408 when it does not arrive in time,
            400 when the client goes away.
    """
    cap = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise BadRequest(f"request body of {declared} bytes exceeds the limit of {cap} bytes", status=413)
    outcome: bytearray | str = "timeout"
    with anyio.move_on_after(limits.body_timeout):
        outcome = await _collect(request, cap)
    if isinstance(outcome, bytearray):
        return outcome
    if outcome == "too large" and cap >= TRIM_AFTER_BYTES:
        release_memory()  # the partial body is gone; so are the heap pages it grew
    if outcome == "timeout":
        raise BadRequest(f"request body not received within {limits.body_timeout:g} s", status=408, close=True)
    if outcome == "too large":
        raise BadRequest(f"request body exceeds the limit of {cap} bytes", status=413)
    raise BadRequest("the client closed the connection before sending the whole body")


async def _collect(request: "Request", cap: int) -> bytearray | str:
    """The body, or why there is none ("too large", "disconnected"); never raises with the partial body in a frame."""
    from starlette.requests import ClientDisconnect

    body = bytearray()
    try:
        async for chunk in request.stream():
            if len(body) + len(chunk) > cap:
                return "too large"
            body += chunk
    except ClientDisconnect:
        return "disconnected"
    return body


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them after a large request is freed)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@lru_cache(maxsize=8)
def deadline_protocol(head_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline on each request head.

    A connection is closed when a request's line and headers have not all arrived ``head_timeout`` seconds after the
    connection opened or the previous answer was sent, however slowly bytes keep trickling in (uvicorn's own
    keep-alive timer restarts on every byte). While the application handles a request the deadline does not apply;
    the body deadline of :func:`read_body` does.

    Args:
        head_timeout: seconds.

    Returns:
        A protocol class for ``uvicorn.Config(http=...)``.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        _head_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_timeout, self._head_overdue)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_overdue(self) -> None:
            self._head_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # the application is handling a request; on_response_complete arms the next deadline
            if not self.transport.is_closing():
                self.transport.close()

    return DeadlineH11Protocol
