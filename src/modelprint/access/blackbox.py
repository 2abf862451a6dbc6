"""Prediction-only access to a suspect: query counting, budget, query journal and resume. See :mod:`modelprint.access`."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from ..errors import InputError, ModelprintError, QueryBudgetExceeded, RemoteError
from ..journal import QueryJournal, image_key
from ..journal.lines import MAX_PROBE_TOLERANCE
from ..tasks import Task
from ..serving.urls import redact_url
from .capabilities import BLACK_BOX, LABELS, PROBE_TOLERANCE, SCORES, TOP_K, Access
from .resume import ResumeChecks

if TYPE_CHECKING:
    from ..serving.client import OipClient


class BlackBox(ResumeChecks, Access):
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
        partial_scores: the API answers the scores of its top-k classes only, completed by ``predict_fn`` (schemes
            that need scores refuse it early unless they take completed scores: their ``partial_scores``).
        journal: a :class:`~modelprint.journal.QueryJournal` (or its path) that logs every batch; images it already
            holds are answered from it and not sent again (an interrupted verification resumes). It is bound to
            ``fingerprints_sha256`` and ``identity`` (a journal of another set or suspect is refused) and locked
            until :meth:`close`.
        identity: what the suspect is, for verification records and the journal's binding (file hash, or URL and
            model metadata).
        fingerprints_sha256: the fingerprint set this access answers for (binds the journal to it).
        new_journal: set an existing journal aside (renamed ``NAME.<UTC>.set-aside.jsonl``) and start a new one.
        probe_tolerance: largest difference allowed between an earlier run's answer and the probe's fresh answer
            (see :data:`PROBE_TOLERANCE`; at most :data:`~modelprint.journal.lines.MAX_PROBE_TOLERANCE`); a suspect
            identified by a file's SHA-256 is not probed: its answers are all computed again.
        probe_size: how many journalled images the first probe asks again (at random); default
            :func:`probe_count` for a splice of :data:`PROBE_FRACTION` of them.
        probe_seed: seeds the probe's draw (a replay a third party can repeat); default: unpredictable.

    Attributes:
        queries: images answered for this verification so far (one query per image), from the suspect or the
            journal; what the scheme read.
        sent: images this object put on the wire: every attempt of every request (a retried batch of k counts k
            each time) and the probe.
        from_journal: answers taken from the journal instead of asking the suspect.
        rechecked: journalled answers of a file suspect computed again and found equal.
        probe: the probe's outcome once made (``images`` asked again, ``journalled``, ``spliced`` (the splice size
            it is sized for), ``catch_probability``, ``max_difference``, ``tolerance``), else None.
        levels: how many distinct values this run's answers took (counted up to 1000): 2 or fewer from a server
            that should answer scores means its answers carry no more than a label.
    """

    def __init__(
        self,
        predict_fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        budget: int | None = None,
        batch_size: int = 256,
        input_shape: tuple[int, int, int] | None = None,
        labels_only: bool = False,
        partial_scores: bool = False,
        journal: QueryJournal | str | os.PathLike | None = None,
        identity: dict[str, Any] | None = None,
        fingerprints_sha256: str | None = None,
        new_journal: bool = False,
        probe_tolerance: float = PROBE_TOLERANCE,
        probe_size: int | None = None,
        probe_seed: int | None = None,
    ) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise InputError(f"query budget must be a whole number >= 0, got {budget}")
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= probe_tolerance <= MAX_PROBE_TOLERANCE:
            raise InputError(f"probe tolerance must be a number in [0, {MAX_PROBE_TOLERANCE:g}], got {probe_tolerance}: a larger "
                             "difference would let the answers of another model pass for the journalled ones")
        if probe_size is not None and (isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 1):
            raise InputError(f"probe size must be a whole number >= 1, got {probe_size}")
        self.predict_fn = predict_fn
        self.budget = budget
        self.batch_size = batch_size
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.capabilities = frozenset({BLACK_BOX, LABELS if labels_only else TOP_K if partial_scores else SCORES})
        self.identity = dict(identity or {"kind": "function"})
        if isinstance(self.identity.get("url"), str):
            self.identity["url"] = redact_url(self.identity["url"])
        self.queries = 0
        self.sent = 0
        self.from_journal = 0
        self.rechecked = 0
        self.probe: dict[str, Any] | None = None
        self.probe_tolerance = float(probe_tolerance)
        self.probe_size = probe_size
        self._levels: set[float] = set()
        self._reports_sends = hasattr(predict_fn, "on_send")
        if self._reports_sends:
            predict_fn.on_send = self._spend  # type: ignore[attr-defined]
        self.journal: QueryJournal | None = None
        if journal is not None:
            journal = journal if isinstance(journal, QueryJournal) else QueryJournal(journal, read=False)
            self.journal = journal.bind(fingerprints_sha256=fingerprints_sha256, suspect=self.identity, set_aside=new_journal)
        self._answer_shape = None if self.journal is None else self.journal.output_shape
        self._recompute = self.identity.get("kind") == "file"  # a file's answers are computed again, never trusted
        self._probe_due = self.journal is not None and len(self.journal) > 0 and not self._recompute
        self._resumed: dict[str, torch.Tensor] = {}  # journalled answers used this run: key -> image
        self._probed: set[str] = set()
        # which images are probed must not be predictable from the journal, unless a replay asks for a seeded draw
        self._random = random.SystemRandom() if probe_seed is None else random.Random(probe_seed)

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
        """Serve a local model as a prediction API for ``task`` (probabilities, values or embeddings; the top-1 label
        with ``labels_only=True``).

        ``kwargs`` go to the constructor (``journal``, ``identity``, ``labels_only``, ...)."""
        model = model.eval()
        device = next(model.parameters()).device
        labels_only = kwargs.get("labels_only", False)

        @torch.no_grad()
        def predict(x: torch.Tensor) -> torch.Tensor:
            answers = task.deployed(model(x.to(device))).cpu()
            return answers.argmax(dim=1) if labels_only else answers

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
        probe_size: int | None = None,
        probe_seed: int | None = None,
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
            fingerprints_sha256, new_journal, probe_tolerance, probe_size, probe_seed: see the constructor.
            **client_options: timeout, deadline, max_answer_bytes, retries, backoff, rate_limit, output, headers: see
                :class:`~modelprint.serving.client.OipClient`.

        Returns:
            The black-box access; ``identity`` holds the URL (without credentials), model name and the server's metadata.
        """
        from ..serving.client import OipClient

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
            probe_size=probe_size,
            probe_seed=probe_seed,
        )

    @property
    def used(self) -> int:
        """What the budget bounds: answers taken from the journal plus images sent on the wire."""
        return self.from_journal + self.sent

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.used

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Ask for the outputs on ``images`` (sent in batches, each distinct image once), counting one query per image.

        Images the journal already holds are answered from it, not sent; before the first answer of an earlier run
        is used, the suspect is probed (see the module's description). A file suspect's journalled answers are
        computed again and compared instead. Nothing is sent when the whole call (with the probe) would exceed the
        budget.

        Raises:
            QueryBudgetExceeded: the call, or a retry, would exceed the budget.
            IntegrityError: the probe's answers differ from the journalled ones, a file suspect's answers differ
                from its journal, or a server's answers are too coarse to be checked.
        """
        n = len(images)
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            shape = "x".join(map(str, self.input_shape))
            raise InputError(f"images are {'x'.join(map(str, images.shape[1:]))} but the suspect expects {shape}")
        keys = [image_key(x) for x in images] if self.journal is not None else [None] * n
        journalled = [self.journal.lookup(k) if self.journal is not None else None for k in keys]  # type: ignore[arg-type]
        answers = [None if self._recompute else a for a in journalled]
        first: dict[Any, int] = {}  # each distinct image is sent once
        unanswered = [i for i, a in enumerate(answers) if a is None and (keys[i] is None or first.setdefault(keys[i], i) == i)]
        probe = self._probe_rows(keys, [i for i, a in enumerate(answers) if a is not None]) if self._probe_due else []
        if self.budget is not None and self.used + len(unanswered) + len(probe) > self.budget:
            extra = f" and {len(probe)} probe images of the journal's suspect" if probe else ""
            raise QueryBudgetExceeded(
                f"asking for {len(unanswered)} images{extra} would exceed the query budget ({self.used} of {self.budget} used); nothing was sent"
            )
        if probe:
            self._probe(images[probe], [keys[i] for i in probe], torch.stack([answers[i] for i in probe]))  # type: ignore[misc]
            self._probe_due = False
        for i, answer in enumerate(answers):
            if answer is not None and keys[i] not in self._resumed:
                self._resumed[keys[i]] = images[i]  # type: ignore[index]
        taken = sum(a is not None for a in answers)
        self.from_journal += taken
        self.queries += taken
        for start in range(0, len(unanswered), self.batch_size):
            rows = unanswered[start : start + self.batch_size]
            for i, answer in zip(rows, self._ask(images[rows], [keys[i] for i in rows], [journalled[i] for i in rows])):
                answers[i] = answer
        for i in range(n):  # a repeated image takes the answer of its first occurrence
            if answers[i] is None:
                answers[i] = answers[first[keys[i]]]
                self.queries += 1
        return torch.stack(answers).float() if n else torch.empty(0)  # type: ignore[arg-type]

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
            kept = (f"the {len(self.journal)} answers received so far are kept in {self.journal.path}" if self.journal.path.exists()
                    else "no answer was received yet")
            raise type(exc)(f"{exc}; {kept}: {again} to resume") from None
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
        if answer.is_floating_point() and len(self._levels) < 1000:
            self._levels.update(torch.unique(answer.float()).tolist()[: 1000 - len(self._levels)])
        return answer

    @classmethod
    def json_api(cls, client: Any, **options: Any) -> "BlackBox":
        """A suspect behind a JSON-over-HTTP API (:class:`~modelprint.serving.json_api.JsonApiClient`): labels only,
        top-k scores or full scores, as its mapping declares. ``options`` go to the constructor (budget, journal, ...)."""
        return cls(client, labels_only=client.labels_only, partial_scores=client.partial, identity=http_identity(client), **options)


def http_identity(client: Any) -> dict[str, Any]:
    """A served suspect's identity, as its client states it (``kind`` "http", the URL without credentials, and what
    names the model: an Open Inference Protocol model's name and metadata, or a JSON API's mapping)."""
    identity = dict(client.identity())
    identity.update(kind="http", url=redact_url(str(identity.get("url", client.url))))
    return identity
