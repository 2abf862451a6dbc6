"""How a scheme reaches a suspect: a white-box model or a black-box prediction function.

Schemes state the capability they need; they receive an access object at call time and fail early with a clear
message when it cannot do what they need. A black-box access counts every image it sends, retries included, and
never sends more than its query budget allows; with a query journal it logs every batch and answers images it was
already asked from the journal, so an interrupted verification resumes without asking the suspect again. The
journal is bound to the fingerprint set and the suspect (a journal of another one is refused) and locked while the
access lives; a suspect that is not identified by its content (a server, a function) is probed once before an
earlier run's answers are used: one journalled image is asked again and must be answered the same.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from .errors import CapabilityError, InputError, IntegrityError, ModelprintError, QueryBudgetExceeded, RemoteError
from .journal import QueryJournal, image_key
from .tasks import Task
from .urls import redact_url

if TYPE_CHECKING:
    from .serving.client import OipClient

WHITE_BOX = "white-box"
BLACK_BOX = "black-box"
#: The suspect's outputs are scores (probabilities, values or embeddings), not only the top-1 label.
SCORES = "scores"
#: The suspect answers its top-1 label only.
LABELS = "labels"

_MEANING = {
    WHITE_BOX: "white-box access (weights, activations, gradients)",
    BLACK_BOX: "black-box access (predictions)",
    SCORES: "output scores (probabilities, values or embeddings)",
    LABELS: "top-1 labels",
}
#: Default largest difference between a journalled answer and the probe's fresh one (output units, e.g. probability):
#: far above the float32 rounding by which one model's answers to an image in batches of different sizes differ, and
#: far below what the black-box statistic measures (thresholds of about 0.01 to 0.1).
PROBE_TOLERANCE = 1e-4


class Access:
    """Base class: what a scheme may do with a suspect."""

    capabilities: frozenset[str] = frozenset()

    def require(self, capability: str, *, who: str) -> None:
        """Raise :class:`CapabilityError` unless this access offers ``capability``."""
        if capability not in self.capabilities:
            offered = ", ".join(_MEANING.get(c, c) for c in sorted(self.capabilities)) or "nothing"
            raise CapabilityError(f"{who} needs {_MEANING.get(capability, capability)} from the suspect; {self.describe()} offers {offered}")

    def describe(self) -> str:
        """The suspect, in a few words (for messages)."""
        return type(self).__name__


class WhiteBox(Access):
    """Full access to a model: weights, activations and gradients.

    Args:
        model: the suspect network (any ``nn.Module`` taking images in [0, 1]); it is put in eval mode.
        layer: the Grad-CAM layer to read, overriding the scheme's choice (useful for foreign architectures).
    """

    capabilities = frozenset({WHITE_BOX, BLACK_BOX, SCORES})

    def __init__(self, model: nn.Module, *, layer: str | None = None) -> None:
        self.model = model.eval()
        self.layer = layer

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def black_box(self, task: Task, *, budget: int | None = None, batch_size: int = 256, **kwargs: Any) -> "BlackBox":
        """A black-box view of this model: it answers what a deployed model of ``task`` would return.

        ``kwargs`` go to :class:`BlackBox` (``journal``, ``identity``, ...)."""
        return BlackBox.from_model(self.model, task, budget=budget, batch_size=batch_size, **kwargs)


class BlackBox(Access):
    """Prediction-only access, with query counters, an optional budget and an optional query journal.

    Args:
        predict_fn: maps a batch of images in [0, 1] (N x C x H x W) to the API's outputs (N x ...). One with an
            ``on_send`` attribute (:class:`~modelprint.serving.client.OipClient`) is made to report every attempt it sends,
            retries included; any other is counted once per call.
        budget: the most images this verification may use: answers taken from the journal plus images sent on the
            wire by this object (every attempt, retries and the probe included). A call that would exceed it raises
            :class:`QueryBudgetExceeded` before sending anything; a retry that would exceed it is not made.
        batch_size: the most images sent in one call of ``predict_fn``.
        input_shape: (C, H, W) the API accepts, when known; other images are refused before sending.
        labels_only: the API answers the top-1 label only (schemes that need scores refuse it early).
        journal: a :class:`~modelprint.journal.QueryJournal` (or its path) that logs every batch; images it already
            holds are answered from it and not sent again (an interrupted verification resumes). It is bound to
            ``fingerprints_sha256`` and ``identity`` (a journal of another set or suspect is refused) and locked
            until :meth:`close`.
        identity: what the suspect is, for verification records and the journal's binding (file hash, or URL and
            model metadata).
        fingerprints_sha256: the fingerprint set this access answers for (binds the journal to it).
        new_journal: set an existing journal aside (renamed ``NAME.<UTC>.set-aside.jsonl``) and start a new one.
        probe_tolerance: largest difference allowed between an earlier run's answer and the probe's fresh answer
            (see :data:`PROBE_TOLERANCE`); a suspect identified by a file's SHA-256 is not probed.

    Attributes:
        queries: images answered for this verification so far (one query per image), from the suspect or the
            journal; what the scheme read.
        sent: images this object put on the wire: every attempt of every request (a retried batch of k counts k
            each time) and the probe.
        from_journal: answers taken from the journal instead of asking the suspect.
        probe: the probe's outcome once made (``image_sha256``, ``max_difference``, ``tolerance``), else None.
    """

    def __init__(
        self,
        predict_fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        budget: int | None = None,
        batch_size: int = 256,
        input_shape: tuple[int, int, int] | None = None,
        labels_only: bool = False,
        journal: QueryJournal | str | os.PathLike | None = None,
        identity: dict[str, Any] | None = None,
        fingerprints_sha256: str | None = None,
        new_journal: bool = False,
        probe_tolerance: float = PROBE_TOLERANCE,
    ) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise InputError(f"query budget must be a whole number >= 0, got {budget}")
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        if not probe_tolerance >= 0:
            raise InputError(f"probe tolerance must be a number >= 0, got {probe_tolerance}")
        self.predict_fn = predict_fn
        self.budget = budget
        self.batch_size = batch_size
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.capabilities = frozenset({BLACK_BOX, LABELS if labels_only else SCORES})
        self.identity = dict(identity or {"kind": "function"})
        if isinstance(self.identity.get("url"), str):
            self.identity["url"] = redact_url(self.identity["url"])
        self.queries = 0
        self.sent = 0
        self.from_journal = 0
        self.probe: dict[str, Any] | None = None
        self.probe_tolerance = float(probe_tolerance)
        self._reports_sends = hasattr(predict_fn, "on_send")
        if self._reports_sends:
            predict_fn.on_send = self._spend  # type: ignore[attr-defined]
        self.journal: QueryJournal | None = None
        if journal is not None:
            journal = journal if isinstance(journal, QueryJournal) else QueryJournal(journal, read=False)
            self.journal = journal.bind(fingerprints_sha256=fingerprints_sha256, suspect=self.identity, set_aside=new_journal)
        self._answer_shape = None if self.journal is None else self.journal.output_shape
        resumed = self.journal is not None and len(self.journal) > 0
        self._probe_due = resumed and self.identity.get("kind") != "file"

    def describe(self) -> str:
        where = self.identity.get("url") or self.identity.get("path")
        return f"the black-box suspect {where}" if where else "this black-box suspect"

    def close(self) -> None:
        """Release the journal's lock, when the verification is done (:func:`~modelprint.evidence.verification.verify_suspect`
        does it; so does leaving a ``with`` block): another run may then take the journal."""
        if self.journal is not None:
            self.journal.close()

    def __enter__(self) -> "BlackBox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @classmethod
    def from_model(
        cls, model: nn.Module, task: Task, *, budget: int | None = None, batch_size: int = 256, **kwargs: Any
    ) -> "BlackBox":
        """Serve a local model as a prediction API for ``task`` (probabilities, values or embeddings).

        ``kwargs`` go to the constructor (``journal``, ``identity``, ...)."""
        model = model.eval()
        device = next(model.parameters()).device

        @torch.no_grad()
        def predict(x: torch.Tensor) -> torch.Tensor:
            return task.deployed(model(x.to(device))).cpu()

        spec = getattr(model, "spec", None)
        shape = (spec.channels, *spec.input_size) if spec is not None else None
        return cls(predict, budget=budget, batch_size=batch_size, input_shape=shape, **kwargs)

    @classmethod
    def http(
        cls,
        url: str,
        model_name: str,
        *,
        budget: int | None = None,
        batch_size: int = 64,
        journal: QueryJournal | str | os.PathLike | None = None,
        client: "OipClient | None" = None,
        fingerprints_sha256: str | None = None,
        new_journal: bool = False,
        probe_tolerance: float = PROBE_TOLERANCE,
        **client_options: Any,
    ) -> "BlackBox":
        """A suspect served over the Open Inference Protocol (KServe v2 REST: Triton, KServe, MLServer, ``modelprint serve``).

        The model's metadata is read first: the input shape it declares is checked before anything is sent (a
        server declaring flat inputs, e.g. ``[-1, 3072]``, gets the images flattened), and a server whose output
        is an integer label is marked labels-only.

        Args:
            url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
            model_name: the model's name on the server.
            budget: most images that may ever be answered for this verification.
            batch_size: images per request.
            journal: query log and resume journal (a path or :class:`~modelprint.journal.QueryJournal`).
            client: a ready :class:`~modelprint.serving.client.OipClient` (``client_options`` are ignored then).
            fingerprints_sha256, new_journal, probe_tolerance: see the constructor.
            **client_options: timeout, deadline, max_answer_bytes, retries, backoff, rate_limit, output, headers: see
                :class:`~modelprint.serving.client.OipClient`.

        Returns:
            The black-box access; ``identity`` holds the URL (without credentials), model name and the server's metadata.
        """
        from .serving.client import OipClient

        client = client or OipClient(url, model_name, **client_options)
        return cls(
            client,
            budget=budget,
            batch_size=batch_size,
            input_shape=client.image_shape,
            labels_only=client.labels_only,
            journal=journal,
            identity=http_identity(client),
            fingerprints_sha256=fingerprints_sha256,
            new_journal=new_journal,
            probe_tolerance=probe_tolerance,
        )

    @property
    def used(self) -> int:
        """What the budget bounds: answers taken from the journal plus images sent on the wire."""
        return self.from_journal + self.sent

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.used

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Ask for the outputs on ``images`` (sent in batches), counting one query per image.

        Images the journal already holds are answered from it, not sent; before the first answer of an earlier run
        is used, the suspect is probed (unless it is a file known by its SHA-256). Nothing is sent when the whole
        call (with the probe) would exceed the budget.

        Raises:
            QueryBudgetExceeded: the call, or a retry, would exceed the budget.
            IntegrityError: the probe's answer differs from the journalled one.
        """
        n = len(images)
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            shape = "x".join(map(str, self.input_shape))
            raise InputError(f"images are {'x'.join(map(str, images.shape[1:]))} but the suspect expects {shape}")
        keys = [image_key(x) for x in images] if self.journal is not None else [None] * n
        answers = [self.journal.lookup(k) if self.journal is not None else None for k in keys]  # type: ignore[arg-type]
        unanswered = [i for i, a in enumerate(answers) if a is None]
        probe = self._probe_index(keys, answers)
        if self.budget is not None and self.used + n + (probe is not None) > self.budget:
            extra = " and one probe of the journal's suspect" if probe is not None else ""
            raise QueryBudgetExceeded(
                f"asking for {n} images{extra} would exceed the query budget ({self.used} of {self.budget} used); nothing was sent"
            )
        if probe is not None:
            self._probe(images[probe], keys[probe], answers[probe])  # type: ignore[arg-type]
        self.from_journal += n - len(unanswered)
        self.queries += n - len(unanswered)
        for start in range(0, len(unanswered), self.batch_size):
            rows = unanswered[start : start + self.batch_size]
            for i, answer in zip(rows, self._ask(images[rows], [keys[i] for i in rows])):
                answers[i] = answer
        return torch.stack(answers).float() if n else torch.empty(0)  # type: ignore[arg-type]

    def _probe_index(self, keys: list, answers: list) -> int | None:
        """The image to probe with: the first one answered by an earlier run, while the probe is due."""
        if not self._probe_due or self.journal is None:
            return None
        return next((i for i, (k, a) in enumerate(zip(keys, answers)) if a is not None and self.journal.resumed(k)), None)

    def _probe(self, image: torch.Tensor, key: str, journalled: torch.Tensor) -> None:
        """Ask one journalled image again; refuse the journal unless the suspect answers it as it did."""
        began = time.perf_counter()
        fresh = self._send(image[None])[0]
        same_shape = tuple(fresh.shape) == tuple(journalled.shape)
        difference = float((fresh.double() - journalled.double()).abs().max()) if same_shape and fresh.numel() else 0.0
        if not same_shape or not difference <= self.probe_tolerance:
            assert self.journal is not None
            found = f"differs by {difference:.3g} (tolerance {self.probe_tolerance:g})" if same_shape else f"has shape {list(fresh.shape)}"
            raise IntegrityError(
                f"{self.describe()} no longer answers as the journal {self.journal.path} recorded: its answer to journalled "
                f"image {key[:12]}... {found}; the journal belongs to another model, or the server is noisy (a noisy "
                "server's answers cannot be resumed): start a new journal with --new-journal / new_journal=True (the "
                "old one is set aside), or allow a larger difference with --probe-tolerance / probe_tolerance"
            )
        self._probe_due = False
        self.probe = {"image_sha256": key, "max_difference": difference, "tolerance": self.probe_tolerance}
        self.journal.record([key], image[None], fresh[None], seconds=time.perf_counter() - began, probe=True)  # type: ignore[union-attr]

    def _spend(self, images: int) -> None:
        """Count ``images`` about to go on the wire; refuse when they would exceed the budget."""
        if self.budget is not None and self.used + images > self.budget:
            raise QueryBudgetExceeded(
                f"sending {images} more images would exceed the query budget ({self.used} of {self.budget} used, "
                "retries included); nothing more was sent"
            )
        self.sent += images

    def _send(self, chunk: torch.Tensor) -> torch.Tensor:
        """Send one batch (counting what goes on the wire) and check the answer: its length, finiteness and shape."""
        if not self._reports_sends:
            self._spend(len(chunk))
        try:
            answer = torch.as_tensor(self.predict_fn(chunk))
        except ModelprintError as exc:
            if self.journal is None:
                raise
            again = "raise the budget and run the same verification again" if isinstance(exc, QueryBudgetExceeded) else "run the same verification again"
            raise type(exc)(
                f"{exc}; the {len(self.journal)} answers received so far are kept in {self.journal.path}: {again} to resume"
            ) from None
        refuse = RemoteError if self.identity.get("kind") == "http" else InputError
        if answer.dim() < 1 or len(answer) != len(chunk):
            raise refuse(f"{self.describe()} answered {len(answer) if answer.dim() else 'a scalar'} outputs for {len(chunk)} images")
        if answer.is_floating_point() and not bool(torch.isfinite(answer.float()).all()):
            bad = int((~torch.isfinite(answer.float())).sum())
            raise refuse(f"{self.describe()} answered {bad} NaN or infinite values (or values beyond the float32 range); "
                         "a suspect's answers must be finite numbers")
        shape = tuple(answer.shape[1:])
        if self._answer_shape is not None and shape != self._answer_shape:
            raise refuse(f"{self.describe()} answered outputs of shape {list(shape)} per image; its earlier answers "
                         f"(this run's or the journal's) have shape {list(self._answer_shape)}")
        self._answer_shape = shape
        return answer

    def _ask(self, chunk: torch.Tensor, keys: list) -> torch.Tensor:
        """Send one batch, count its answers and journal them."""
        began = time.perf_counter()
        answer = self._send(chunk)
        self.queries += len(chunk)
        if self.journal is not None:
            self.journal.record(keys, chunk, answer, seconds=time.perf_counter() - began)
        return answer


def http_identity(client: "OipClient") -> dict[str, Any]:
    """A served suspect's identity: the server's URL (without credentials), the model name and its metadata."""
    return {"kind": "http", "url": redact_url(client.url), "model_name": client.model_name, "metadata": client.metadata}
