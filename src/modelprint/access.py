"""How a scheme reaches a suspect: a white-box model or a black-box prediction function.

Schemes state the capability they need; they receive an access object at call time and fail early with a clear
message when it cannot do what they need. A black-box access counts every image it sends, retries included, and
never sends more than its query budget allows; with a query journal it logs every batch and answers images it was
already asked from the journal, so an interrupted verification resumes without asking the suspect again. The
journal is bound to the fingerprint set and the suspect (a journal of another one is refused) and locked while the
access lives. A suspect known by its file's SHA-256 is never answered from a journal: every answer is computed
again and a journalled one that differs refuses the journal. A suspect that is not identified by its content (a
server, a function) is *probed* before an earlier run's answers are used: a random sample of the journalled images
is asked again and must be answered as recorded (:func:`probe_count` says how many; :meth:`BlackBox.confirm_resumed`
asks more once the verdict's margin is known, see docs/evidence.md).
"""

from __future__ import annotations

import math
import os
import random
import time
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from .errors import CapabilityError, InputError, IntegrityError, ModelprintError, QueryBudgetExceeded, RemoteError
from .journal import QueryJournal, image_key
from .journal_lines import MAX_PROBE_TOLERANCE
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
#: The chance with which the resume probe must catch a splice of the smallest size it is sized for.
PROBE_CATCH = 0.99
#: Without a verdict whose margin is known, the probe is sized to catch a splice of this fraction of the journalled
#: answers (with :data:`PROBE_CATCH`): 44 images, or every one of fewer.
PROBE_FRACTION = 0.1
#: A file suspect's recomputed answer may differ from its journalled one by this much (float rounding of batches of
#: other sizes); more, and the journal was not written by this model.
RECOMPUTE_TOLERANCE = 1e-4


def probe_count(journalled: int, spliced: int, catch: float = PROBE_CATCH) -> int:
    """How many of ``journalled`` answers a probe must ask again, drawn at random without replacement, to find at
    least one of ``spliced`` wrong answers with probability ``catch``.

    The chance that k draws miss all of them is C(J - s, k) / C(J, k) = prod_{i<k} (J - s - i) / (J - i); the
    count is the smallest k that brings it to 1 - ``catch`` or below (J when s < 1 is impossible to bound).

    Args:
        journalled: J, the answers taken from the journal.
        spliced: s, the fewest wrong answers that matter.
        catch: the probability of finding one.

    Returns:
        k, 0 <= k <= J.
    """
    if journalled <= 0:
        return 0
    spliced = min(max(spliced, 1), journalled)
    miss, k = 1.0, 0
    while miss > 1 - catch and k < journalled:
        miss *= (journalled - spliced - k) / (journalled - k) if journalled - spliced - k > 0 else 0.0
        k += 1
    return k


def default_spliced(journalled: int) -> int:
    """The splice size the probe is sized for when no verdict's margin is known: :data:`PROBE_FRACTION` of J."""
    return max(1, math.ceil(PROBE_FRACTION * journalled))


def tolerance_cap(threshold: float | None) -> float:
    """The largest probe tolerance a set allows: a quarter of its black-box threshold (an answer moved by less
    cannot move a statistic over its threshold by itself), and never above
    :data:`~modelprint.journal_lines.MAX_PROBE_TOLERANCE`."""
    if threshold is None or not math.isfinite(threshold) or threshold == 0:
        return MAX_PROBE_TOLERANCE
    return min(MAX_PROBE_TOLERANCE, abs(threshold) / 4)


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
            (see :data:`PROBE_TOLERANCE`; at most :data:`~modelprint.journal_lines.MAX_PROBE_TOLERANCE`); a suspect
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
        self.capabilities = frozenset({BLACK_BOX, LABELS if labels_only else SCORES})
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
        candidates = [i for i, a in enumerate(answers) if a is not None and keys[i] not in self._probed]
        probe = self._probe_rows(keys, candidates) if self._probe_due else []
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

    def _probe_rows(self, keys: list, candidates: list[int]) -> list[int]:
        """The rows of this call that the first probe asks again: a random sample of the journalled ones."""
        distinct = list({keys[i]: i for i in candidates}.values())
        wanted = self.probe_size or probe_count(len(self.journal or ()), default_spliced(len(self.journal or ())))
        return sorted(self._random.sample(distinct, min(wanted, len(distinct))))

    def confirm_resumed(self, spliced: int | None, *, at_least: int = 0) -> dict[str, Any] | None:
        """Probe enough of the journalled answers this run used to find a splice of ``spliced`` wrong answers with
        probability :data:`PROBE_CATCH` (images already probed count; more are drawn at random).

        Args:
            spliced: the fewest wrong journalled answers that could have changed the verdict (None: none could).
            at_least: probe at least this many of them (a replay's sample).

        Returns:
            The probe's outcome (also in :attr:`probe`), or None when no journalled answer was used.

        Raises:
            IntegrityError: a probed answer differs from the journalled one.
            QueryBudgetExceeded: the probe would exceed the budget.
        """
        used = len(self._resumed)
        if used == 0 or self.journal is None:
            return self.probe
        wanted = max(probe_count(used, spliced) if spliced is not None else 0, min(at_least, used))
        rest = [k for k in self._resumed if k not in self._probed]
        more = self._random.sample(rest, max(0, min(wanted - len(self._probed), len(rest))))
        if more:
            if self.budget is not None and self.used + len(more) > self.budget:
                raise QueryBudgetExceeded(f"the resume probe needs {len(more)} more images to check the journal's answers, which "
                                          f"would exceed the query budget ({self.used} of {self.budget} used); raise the budget")
            images = torch.stack([self._resumed[k] for k in more])
            self._probe(images, more, torch.stack([self.journal.lookup(k) for k in more]))  # type: ignore[misc]
        if self.probe is not None:
            self.probe.update(journalled=used, spliced=spliced, catch_probability=None if spliced is None else
                              round(1 - _miss(used, spliced, len(self._probed)), 6))
        return self.probe

    @property
    def levels(self) -> int:
        return len(self._levels)

    def _probe(self, images: torch.Tensor, keys: list[str], journalled: torch.Tensor) -> None:
        """Ask journalled images again; refuse the journal unless the suspect answers them as it did."""
        assert self.journal is not None
        worst = 0.0
        for start in range(0, len(images), self.batch_size):
            began = time.perf_counter()
            chunk, recorded = images[start : start + self.batch_size], journalled[start : start + self.batch_size]
            fresh = self._send(chunk)
            same_shape = tuple(fresh.shape) == tuple(recorded.shape)
            difference = float((fresh.double() - recorded.double()).abs().max()) if same_shape and fresh.numel() else 0.0
            if not same_shape or not difference <= self.probe_tolerance:
                found = f"differ by up to {difference:.3g} (tolerance {self.probe_tolerance:g})" if same_shape else f"have shape {list(fresh.shape[1:])}"
                raise IntegrityError(
                    f"{self.describe()} no longer answers as the journal {self.journal.path} recorded: its answers to "
                    f"{len(chunk)} journalled images drawn at random {found}; the journal belongs to another model or was "
                    "spliced, or the server is noisy (a noisy server's answers cannot be resumed): start a new journal with "
                    "--new-journal / new_journal=True (the old one is set aside), or allow a larger difference with "
                    "--probe-tolerance / probe_tolerance"
                )
            self._check_levels(torch.cat([fresh, recorded]))
            self.journal.record(keys[start : start + self.batch_size], chunk, fresh, seconds=time.perf_counter() - began,
                                tolerance=self.probe_tolerance)
            worst = max(worst, difference)
        self._probed.update(keys)
        previous = (self.probe or {}).get("max_difference", 0.0)
        self.probe = {"images": len(self._probed), "max_difference": max(previous, worst), "tolerance": self.probe_tolerance}

    def _check_levels(self, answers: torch.Tensor) -> None:
        """Refuse to vouch for a resumed journal through answers that take two values or fewer (a server rounding
        its scores to nothing): they cannot tell one model from another that agrees on its labels."""
        if LABELS in self.capabilities or not answers.is_floating_point() or answers.dim() < 2 or answers[0].numel() < 2:
            return
        if torch.unique(answers).numel() <= 2:
            values = ", ".join(f"{v:g}" for v in torch.unique(answers).tolist())
            raise IntegrityError(
                f"{self.describe()} answers scores rounded to {{{values}}}: such answers carry no more than a label and "
                "cannot distinguish this model from another that agrees with it on top-1 labels, so the journal's answers "
                "cannot be checked against it; start a new journal with --new-journal / new_journal=True"
            )

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

    def _ask(self, chunk: torch.Tensor, keys: list, journalled: list) -> torch.Tensor:
        """Send one batch, count its answers and journal the new ones; a file suspect's answers to images the journal
        holds must equal the journalled ones (:data:`RECOMPUTE_TOLERANCE`)."""
        began = time.perf_counter()
        answer = self._send(chunk)
        self.queries += len(chunk)
        if self.journal is None:
            return answer
        new = [i for i, known in enumerate(journalled) if known is None]
        for i, known in enumerate(journalled):
            if known is None:
                continue
            same = tuple(known.shape) == tuple(answer[i].shape)
            difference = float((known.double() - answer[i].double()).abs().max()) if same and known.numel() else 0.0
            if not same or difference > RECOMPUTE_TOLERANCE:
                found = f"by {difference:.3g}" if same else f"in shape ({list(answer[i].shape)})"
                raise IntegrityError(
                    f"the query journal {self.journal.path} does not hold {self.describe()}'s answers: image {keys[i][:12]}... "
                    f"is answered otherwise by the model now ({found}); the journal was written for another model or spliced: "
                    "start a new journal with --new-journal / new_journal=True (the old one is set aside)")
            self.rechecked += 1
        if new:
            self.journal.record([keys[i] for i in new], chunk[new], answer[new], seconds=time.perf_counter() - began)
        return answer


def _miss(journalled: int, spliced: int, probed: int) -> float:
    """The chance that ``probed`` random draws of ``journalled`` answers miss all of ``spliced`` wrong ones."""
    miss = 1.0
    for i in range(min(probed, journalled)):
        miss *= max(0.0, (journalled - max(spliced, 1) - i) / (journalled - i))
    return miss


def http_identity(client: "OipClient") -> dict[str, Any]:
    """A served suspect's identity: the server's URL (without credentials), the model name and its metadata."""
    return {"kind": "http", "url": redact_url(client.url), "model_name": client.model_name, "metadata": client.metadata}
