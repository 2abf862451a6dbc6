"""How a scheme reaches a suspect: a white-box model or a black-box prediction function.

Schemes state the capability they need; they receive an access object at call time and fail early with a clear
message when it cannot do what they need. A black-box access counts every image it sends and never exceeds its
query budget; with a query journal it logs every batch and answers images it was already asked from the journal,
so an interrupted verification resumes without asking the suspect again.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from .errors import CapabilityError, InputError, ModelprintError, QueryBudgetExceeded
from .journal import QueryJournal, image_key
from .tasks import Task

if TYPE_CHECKING:
    from .remote import OipClient

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
    """Prediction-only access, with a query counter and an optional budget.

    Args:
        predict_fn: maps a batch of images in [0, 1] (N x C x H x W) to the API's outputs (N x ...).
        budget: the most images that may ever be sent; a call that would exceed it raises
            :class:`QueryBudgetExceeded` before sending anything.
        batch_size: the most images sent in one call of ``predict_fn``.
        input_shape: (C, H, W) the API accepts, when known; other images are refused before sending.
        labels_only: the API answers the top-1 label only (schemes that need scores refuse it early).
        journal: a :class:`~modelprint.journal.QueryJournal` (or its path) that logs every batch; images it already
            holds are answered from it and not sent again (an interrupted verification resumes).
        identity: what the suspect is, for verification records (file hash, or URL and model metadata).

    Attributes:
        queries: images answered for this verification so far (one query per image), including answers an
            earlier, interrupted run received and the journal kept; the budget bounds this number.
        sent: images this object sent to the API (``queries`` minus the journal's answers).
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
    ) -> None:
        if budget is not None and budget < 0:
            raise InputError(f"query budget must be >= 0, got {budget}")
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.predict_fn = predict_fn
        self.budget = budget
        self.batch_size = batch_size
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.capabilities = frozenset({BLACK_BOX, LABELS if labels_only else SCORES})
        self.journal = journal if journal is None or isinstance(journal, QueryJournal) else QueryJournal(journal)
        self.identity = identity or {"kind": "function"}
        self.queries = 0
        self.sent = 0

    def describe(self) -> str:
        where = self.identity.get("url") or self.identity.get("path")
        return f"the black-box suspect {where}" if where else "this black-box suspect"

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
            client: a ready :class:`~modelprint.remote.OipClient` (``client_options`` are ignored then).
            **client_options: timeout, retries, backoff, rate_limit, output, headers: see :class:`~modelprint.remote.OipClient`.

        Returns:
            The black-box access; ``identity`` holds the URL, model name and the server's metadata.
        """
        from .remote import OipClient

        client = client or OipClient(url, model_name, **client_options)
        return cls(
            client,
            budget=budget,
            batch_size=batch_size,
            input_shape=client.image_shape,
            labels_only=client.labels_only,
            journal=journal,
            identity={"kind": "http", "url": client.url, "model_name": model_name, "metadata": client.metadata},
        )

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Ask for the outputs on ``images`` (sent in batches), counting one query per image.

        Images the journal already holds are answered from it, not sent. Nothing is sent when the whole call would
        exceed the budget.
        """
        n = len(images)
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            shape = "x".join(map(str, self.input_shape))
            raise InputError(f"images are {'x'.join(map(str, images.shape[1:]))} but the suspect expects {shape}")
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"asking for {n} images would exceed the query budget ({self.queries} of {self.budget} used)"
            )
        keys = [image_key(x) for x in images] if self.journal is not None else [None] * n
        answers = [self.journal.lookup(k) if self.journal is not None else None for k in keys]  # type: ignore[arg-type]
        unanswered = [i for i, a in enumerate(answers) if a is None]
        self.queries += n - len(unanswered)  # answered by an earlier run, kept in the journal
        for start in range(0, len(unanswered), self.batch_size):
            rows = unanswered[start : start + self.batch_size]
            for i, answer in zip(rows, self._ask(images[rows], [keys[i] for i in rows])):
                answers[i] = answer
        return torch.stack(answers).float() if n else torch.empty(0)  # type: ignore[arg-type]

    def _ask(self, chunk: torch.Tensor, keys: list) -> torch.Tensor:
        """Send one batch, check the answer's length, count it and journal it."""
        began = time.perf_counter()
        try:
            answer = torch.as_tensor(self.predict_fn(chunk))
        except ModelprintError as exc:
            if self.journal is None:
                raise
            raise type(exc)(
                f"{exc}; the {len(self.journal)} answers received so far are kept in {self.journal.path}: "
                "run the same verification again to resume"
            ) from None
        if len(answer) != len(chunk):
            raise InputError(f"the prediction API answered {len(answer)} outputs for {len(chunk)} images")
        self.queries += len(chunk)
        self.sent += len(chunk)
        if self.journal is not None:
            self.journal.record(keys, chunk, answer, seconds=time.perf_counter() - began)
        return answer
