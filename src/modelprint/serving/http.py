"""What every HTTP prediction client shares: retries with backoff, a rate limit, a deadline per request and a cap
on the answer's size, both enforced while the answer streams in, and one clear :class:`~modelprint.errors.RemoteError`
for every failure. The URL is shown and stored without its credentials (:func:`~modelprint.serving.urls.redact_url`);
requests still use them. Subclasses: :class:`~modelprint.serving.client.OipClient` (Open Inference Protocol) and
:class:`~modelprint.serving.json_api.JsonApiClient` (any JSON-over-HTTP API).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Callable

import httpx

from ..errors import RemoteError
from .urls import redact_text, redact_url

_RETRIED = (httpx.TransportError,)  # connection refused or reset, timeouts, a server that died mid-answer
#: Default cap on one answer's size: far above what a batch of 1024 images with 1000 scores each needs (about 20 MB).
DEFAULT_MAX_ANSWER_BYTES = 64 * 2**20


class _Overdue(Exception):
    """An answer that was not complete within the request's deadline (retried like a timeout)."""


class HttpPredictor:
    """The transport of a prediction client: one server, requests with retries, bounded answers.

    Args:
        url: the server's base URL (``http://host:port``).
        timeout: seconds to wait for a connection and for each read of an answer.
        deadline: most seconds one request may take in all, answer included [default: 4 x ``timeout``]; a request
            over it is given up (and retried like a timeout).
        max_answer_bytes: most bytes an answer may have; a larger one is refused (not retried).
        retries: attempts after the first on connection errors, timeouts and 5xx answers (4xx are not retried:
            the request itself is wrong).
        backoff: seconds before the first retry; doubled for every further one.
        rate_limit: most requests per second (None: no limit).
        headers: extra HTTP headers (an API key, ...).
        transport: an httpx transport (tests use it to run against an app in-process).

    Attributes:
        url: the server's URL without credentials (what messages and records show).
        requests: requests answered so far; ``attempts`` counts retries too.
        on_send: called with the number of images before every attempt of an inference request, retries included
            (:class:`~modelprint.access.BlackBox` sets it to count and bound the images sent); it may raise to stop.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        deadline: float | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        retries: int = 3,
        backoff: float = 0.5,
        rate_limit: float | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0 or not backoff >= 0 or not timeout > 0:
            raise RemoteError(f"need retries >= 0, backoff >= 0 and timeout > 0, got {retries}, {backoff}, {timeout}")
        if rate_limit is not None and rate_limit <= 0:
            raise RemoteError(f"rate limit must be > 0 requests per second, got {rate_limit}")
        if (deadline is not None and not deadline > 0) or max_answer_bytes < 1:
            raise RemoteError(f"need deadline > 0 and max_answer_bytes >= 1, got {deadline}, {max_answer_bytes}")
        self.url = redact_url(url).rstrip("/")
        self.deadline = 4 * timeout if deadline is None else deadline
        self.max_answer_bytes = max_answer_bytes
        self.on_send: Callable[[int], None] | None = None
        self.retries = retries
        self.backoff = backoff
        self.min_interval = 0.0 if rate_limit is None else 1.0 / rate_limit
        self.requests = 0
        self.attempts = 0
        self._last_request = -math.inf
        headers = {"accept-encoding": "identity", **(headers or {})}  # the size cap counts the bytes that arrive
        try:
            self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers, transport=transport)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise RemoteError(f"{self.url}: not a usable server URL ({redact_text(str(exc))})") from None

    def _where(self) -> str:
        return f"the server at {self.url}"

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, images: int = 0, **kwargs: Any) -> Any:
        """One request with retries; the decoded JSON answer.

        Args:
            method, path: the request.
            images: images the request carries; :attr:`on_send` is told before every attempt.
            **kwargs: for httpx (``json=...``, ``files=...``).
        """
        failure = ""
        for attempt in range(self.retries + 1):
            if images and self.on_send is not None:
                self.on_send(images)  # may refuse the attempt (a query budget): nothing more is sent then
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self._wait_for_rate_limit()
            self.attempts += 1
            try:
                status, body = self._exchange(method, path, **kwargs)
            except _RETRIED as exc:
                failure = redact_text(f"{type(exc).__name__}: {exc}")
            except _Overdue as exc:
                failure = str(exc)
            else:
                if status < 400:
                    self.requests += 1
                    return self._json(body)
                failure = f"HTTP {status}: {self._error_text(body)}"
                if status < 500:
                    raise RemoteError(f"{self._where()} refused {method} {path}: {failure}")
        raise RemoteError(f"{self._where()} did not answer {method} {path} after {self.retries + 1} attempts ({failure})")

    def _exchange(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """Send one request and read its answer as it streams in, within the deadline and the size cap.

        Returns:
            (HTTP status, answer body).

        Raises:
            _Overdue: the answer was not complete by the deadline.
            RemoteError: the answer is larger than ``max_answer_bytes``.
        """
        deadline = time.monotonic() + self.deadline
        with self._http.stream(method, path, **kwargs) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_answer_bytes:
                raise self._too_large(method, path)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.max_answer_bytes:
                    raise self._too_large(method, path)
                if time.monotonic() > deadline:
                    break
            if time.monotonic() > deadline:
                raise _Overdue(f"the answer was not complete within the {self.deadline:g} s deadline per request")
            return response.status_code, bytes(body)

    def _too_large(self, method: str, path: str) -> RemoteError:
        return RemoteError(f"{self._where()} answered {method} {path} with more than {self.max_answer_bytes} bytes "
                           "(max_answer_bytes); refused")

    def _wait_for_rate_limit(self) -> None:
        pause = self._last_request + self.min_interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last_request = time.monotonic()

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise RemoteError(f"{self._where()} answered something that is not JSON") from None

    def _object(self, data: Any) -> dict[str, Any]:
        """``data`` when it is a JSON object, else one clear line."""
        if not isinstance(data, dict):
            raise RemoteError(f"{self._where()} answered JSON that is not an object")
        return data

    @staticmethod
    def _error_text(body: bytes) -> str:
        try:
            data = json.loads(body)
            text = str(data.get("error", data)) if isinstance(data, dict) else str(data)
        except (ValueError, RecursionError):
            text = body.decode("utf-8", "replace")
        return redact_text(" ".join(text.split()))[:300]
