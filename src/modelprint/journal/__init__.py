"""The query journal: every batch a black-box access sent to a suspect and what came back, as JSON lines.

It is two things at once. As a *query log* it is part of the verification record: each line holds the time, the
batch size, the SHA-256 of the inputs and of the outputs, so a third party can check which images were asked and
what was answered. As a *journal* it makes an interrupted verification resumable: the answers are stored with the
SHA-256 of each image, and a rerun that asks the same images again is answered from the file instead of the API.

A journal answers for one verification only. Its first line binds it to the fingerprint set and the suspect
(:mod:`modelprint.journal.lines`); :meth:`QueryJournal.bind` refuses a journal of another set or suspect, or sets
it aside (renamed ``NAME.<UTC>.set-aside.jsonl``) and starts a new one. Every line is checked when read against its
own hashes and against the line before it (a hash chain from the header), and two answers to one image must agree,
so a journal spliced from two, reordered, cut in the middle or holding contradictory answers is refused. A bound
journal holds a lock file (``NAME.lock``) until :meth:`QueryJournal.close`, which removes it, so two runs cannot
write one journal and no lock file outlives its run (one left by a killed run is taken over and removed by the
next).

Each line is written, flushed and fsync'ed before the next batch is sent, so at most the batch in flight is lost
when the process or the server dies; a truncated last line (a crash mid-write) is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import InputError, IntegrityError
from ..integrity.hashing import tensors_sha256
from .lines import (SET_ASIDE_HINT, check_entry, check_header, describe_binding, line_sha256, log_line, make_entry,
                            make_header)
from .locks import ExclusiveLock, LockHeld


def image_key(image: torch.Tensor) -> str:
    """SHA-256 of one image as float32 bytes and shape: the key an answer is stored under."""
    return tensors_sha256({"image": image.detach().float()})


def set_aside_path(path: Path) -> Path:
    """Where :meth:`QueryJournal.bind` moves a journal it sets aside: ``X.queries.jsonl`` -> ``X.queries.<UTC>.set-aside.jsonl``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stem, suffix = (path.name[: -len(".jsonl")], ".jsonl") if path.name.endswith(".jsonl") else (path.name, "")
    candidate, count = path.with_name(f"{stem}.{stamp}.set-aside{suffix}"), 1
    while candidate.exists():
        count += 1
        candidate = path.with_name(f"{stem}.{stamp}-{count}.set-aside{suffix}")
    return candidate


class QueryJournal:
    """An append-only JSON-lines file of the batches sent and their answers.

    Args:
        path: the file; created (with its folder) on the first answer, read back (every line checked) when it exists.
        read: read the file now; :meth:`bind` reads it (again) under the lock anyway.

    Attributes:
        path: the file.
        header: the binding header (line 1), once read or bound; None for a journal without lines.
        before_run: when bound: the file as this run found it (``sha256``, ``answers``, ``batches``), None if new.
        set_aside: where :meth:`bind` moved the earlier journal, if it did.

    Raises:
        InputError: ``path`` is a folder.
        IntegrityError: a line is not JSON (except a cut last line), line 1 is not an intact header, or a line does
            not match its own hashes.
    """

    def __init__(self, path: str | os.PathLike, *, read: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"query journal {self.path}: is a folder; give a file name")
        self.header: dict[str, Any] | None = None
        self.before_run: dict[str, Any] | None = None
        self.set_aside: Path | None = None
        self._pending_header: dict[str, Any] | None = None
        self._lock: ExclusiveLock | None = None
        self._reset()
        if read:
            self._read()

    def _reset(self) -> None:
        self.header = None
        self._answers: dict[str, torch.Tensor] = {}
        self._log: list[dict] = []
        self._shape: tuple[int, ...] | None = None
        self._resumed: frozenset[str] = frozenset()
        self._seq = 0
        self._last_sha256: str | None = None  # of the last line read or written: the next line's prev_sha256

    # ------------------------------------------------------------------------------------------------- reading
    def _read(self) -> None:
        if not self.path.exists():
            return
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"{self.path}: cannot read the query journal ({exc}); {SET_ASIDE_HINT}") from None
        rows = text.split("\n")
        first = True
        for number, row in enumerate(rows, start=1):
            if not row.strip():
                continue
            try:
                entry = json.loads(row)
            except (json.JSONDecodeError, RecursionError):
                if number == len(rows):  # the last line, cut short by a crash mid-write: its batch is asked again
                    self._truncate_to(text.rfind("\n") + 1)
                    break
                raise IntegrityError(f"{self.path}: line {number} is not JSON; the query journal was damaged: {SET_ASIDE_HINT}") from None
            where = f"{self.path}: line {number}"
            if first:
                self.header, first = check_header(entry, str(self.path)), False
                self._last_sha256 = line_sha256(row)
                continue
            keys, outputs, tolerance = check_entry(entry, where)
            self._check_place(entry, where)
            self._remember(keys, outputs, entry, tolerance=tolerance, where=where)
            self._last_sha256 = line_sha256(row)
        self._resumed = frozenset(self._answers)

    def _check_place(self, entry: Mapping[str, Any], where: str) -> None:
        """A batch line must be the next one (``seq``) and follow the line before it (``prev_sha256``)."""
        if entry["seq"] != self._seq + 1:
            raise IntegrityError(f"{where} is batch {entry['seq']}, but batch {self._seq + 1} comes next: a line was dropped, "
                                 f"moved or reordered; {SET_ASIDE_HINT}")
        if entry["prev_sha256"] != self._last_sha256:
            raise IntegrityError(f"{where} does not follow the line before it (its prev_sha256 is not that line's SHA-256): "
                                 f"a line or block taken from another journal, or an edited one; {SET_ASIDE_HINT}")
        self._seq += 1

    def _truncate_to(self, size: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(size)

    def _remember(self, keys: list[str], outputs: torch.Tensor, entry: Mapping[str, Any], *, tolerance: float | None, where: str) -> None:
        """Keep a line's answers; a second answer to one image must agree with the first (a probe's within its
        tolerance, any other exactly), and a probe re-asks only images answered before."""
        shape = tuple(outputs.shape[1:])
        if self._shape is not None and shape != self._shape:
            raise IntegrityError(f"{where}: outputs of shape {list(shape)} per image, earlier lines hold {list(self._shape)}; "
                                 f"the query journal was edited or mixes two suspects: {SET_ASIDE_HINT}")
        self._shape = shape
        for key, answer in zip(keys, outputs):
            known = self._answers.get(key)
            if known is None:
                if tolerance is not None:
                    raise IntegrityError(f"{where}: a probe of image {key[:12]}..., which no earlier line answered; {SET_ASIDE_HINT}")
                self._answers[key] = answer
                continue
            difference = float((answer.double() - known.double()).abs().max()) if answer.numel() else 0.0
            if difference > (tolerance or 0.0):
                raise IntegrityError(f"{where}: answers image {key[:12]}... otherwise than an earlier line (by {difference:.3g}): "
                                     f"contradictory answers to one image; {SET_ASIDE_HINT}")
        self._log.append(log_line(entry))

    # ------------------------------------------------------------------------------------------------- binding
    def bind(self, *, fingerprints_sha256: str | None, suspect: Mapping[str, Any] | None, set_aside: bool = False) -> "QueryJournal":
        """Take the journal for one verification: lock it, read it again, and check what it answered for.

        Args:
            fingerprints_sha256: the fingerprint set's SHA-256 (None: not bound to a set).
            suspect: the suspect's identity (see :func:`~modelprint.journal.lines.suspect_binding`).
            set_aside: move an existing journal aside (:func:`set_aside_path`) and start a new one.

        Returns:
            This journal, locked until :meth:`close`.

        Raises:
            InputError: another run holds the lock, or the journal answered for another suspect or set.
            IntegrityError: the journal was edited or damaged.
        """
        self._acquire()
        try:
            self._reset()
            if set_aside and self.path.exists() and self.path.stat().st_size > 0:
                self.set_aside = set_aside_path(self.path)
                os.replace(self.path, self.set_aside)
            self._read()
            wanted = make_header(fingerprints_sha256, suspect)
            if self.header is None:
                self._pending_header = wanted
            elif self.header["binding_sha256"] != wanted["binding_sha256"]:
                raise InputError(f"{self.path} is the query journal of {describe_binding(self.header)}, not of "
                                 f"{describe_binding(wanted)}: its answers cannot be used for this verification; {SET_ASIDE_HINT}")
            self.before_run = None if self.header is None else {
                "sha256": self.digest(), "answers": len(self._answers), "batches": len(self._log)}
        except BaseException:
            self.close()
            raise
        return self

    def _acquire(self) -> None:
        if self._lock is not None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"query journal {self.path}: cannot make its folder ({exc.strerror or exc})") from None
        try:
            self._lock = ExclusiveLock.take(lock_path)
        except LockHeld:
            raise InputError(f"query journal {self.path} is in use by another verification (its lock {lock_path.name} is held): "
                             "two runs cannot write one journal; wait for the other to end, or give another journal") from None
        except OSError as exc:
            raise InputError(f"query journal {self.path}: cannot create its lock file {lock_path} ({exc.strerror or exc})") from None

    def close(self) -> None:
        """Release the lock and remove its file (a journal that was not bound holds none)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def locked(self) -> bool:
        """Whether this object holds the journal's lock."""
        return self._lock is not None

    def resumed(self, key: str) -> bool:
        """Whether an image's answer was in the file when it was read (an earlier run's answer)."""
        return key in self._resumed

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """The shape of one answer (all lines share it), None before the first."""
        return self._shape

    # ------------------------------------------------------------------------------------------------- answers
    def __len__(self) -> int:
        """Number of images answered."""
        return len(self._answers)

    def lookup(self, key: str) -> torch.Tensor | None:
        """The stored answer for an image key, or None."""
        return self._answers.get(key)

    def record(
        self, keys: list[str], images: torch.Tensor, outputs: torch.Tensor, *, seconds: float, tolerance: float | None = None
    ) -> None:
        """Append one answered batch, chained to the line before it, and make it durable before returning.

        Args:
            keys: each image's key (:func:`image_key`).
            images: the batch sent.
            outputs: the answer.
            seconds: how long the request took.
            tolerance: for a probe (a batch re-asking images answered before), the largest difference allowed from
                the journalled answers; None for a batch of new images.

        Raises:
            IntegrityError: the batch contradicts the journal (see :meth:`_remember`); nothing is written then.
        """
        outputs = outputs.detach().cpu()
        header, text, last = None, "", self._last_sha256
        if self.header is None:
            header = self._pending_header or make_header(None, None)
            header_line = json.dumps(header, allow_nan=False)
            text, last = header_line + "\n", line_sha256(header_line)
        entry = make_entry(keys, images, outputs, seconds=seconds, seq=self._seq + 1, prev_sha256=str(last),
                           probe=tolerance is not None, tolerance=tolerance)
        line = json.dumps(entry, allow_nan=False)
        self._remember(keys, outputs, entry, tolerance=tolerance, where=str(self.path))
        text += line + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if header is not None:
            self.header = header
        self._seq, self._last_sha256 = self._seq + 1, line_sha256(line)

    @property
    def lines(self) -> int:
        """Number of batches in the file."""
        return len(self._log)

    def log(self) -> list[dict]:
        """The query log: per batch, its time, size, seconds and the SHA-256 of its inputs and outputs."""
        return list(self._log)

    def digest(self) -> str | None:
        """SHA-256 of the file's bytes (None before the first answer): the query log's identity in a record."""
        if not self.path.exists():
            return None
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def provenance(self) -> dict[str, Any]:
        """What a record states about this journal: path, binding, the file as this run found it, and a set-aside one."""
        binding = self.header or self._pending_header or {}
        return {
            "path": str(self.path),
            "binding": {k: binding.get(k) for k in ("fingerprints_sha256", "suspect", "binding_sha256")},
            "before_run": self.before_run,
            "set_aside": None if self.set_aside is None else str(self.set_aside),
        }
