"""The query journal: every batch a black-box access sent to a suspect and what came back, as JSON lines.

It is two things at once. As a *query log* it is part of the verification record: each line holds the time, the
batch size, the SHA-256 of the inputs and of the outputs, so a third party can check which images were asked and
what was answered. As a *journal* it makes an interrupted verification resumable: the answers are stored with the
SHA-256 of each image, and a rerun that asks the same images again is answered from the file instead of the API.

A journal answers for one verification only. Its first line binds it to the fingerprint set and the suspect
(:mod:`modelprint.journal_lines`); :meth:`QueryJournal.bind` refuses a journal of another set or suspect, or sets
it aside (renamed ``NAME.<UTC>.set-aside.jsonl``) and starts a new one. Every line is checked against its own hashes
when read. A bound journal holds a lock file (``NAME.lock``) until :meth:`QueryJournal.close`, so two runs cannot
write one journal.

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
from filelock import FileLock, Timeout

from .errors import InputError, IntegrityError
from .hashing import tensors_sha256
from .journal_lines import SET_ASIDE_HINT, check_entry, check_header, describe_binding, log_line, make_entry, make_header


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
        self._lock: FileLock | None = None
        self._reset()
        if read:
            self._read()

    def _reset(self) -> None:
        self.header = None
        self._answers: dict[str, torch.Tensor] = {}
        self._log: list[dict] = []
        self._shape: tuple[int, ...] | None = None
        self._resumed: frozenset[str] = frozenset()

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
            if first:
                self.header, first = check_header(entry, str(self.path)), False
                continue
            keys, outputs, probe = check_entry(entry, f"{self.path}: line {number}")
            self._remember(keys, outputs, entry, probe=probe, where=f"{self.path}: line {number}")
        self._resumed = frozenset(self._answers)

    def _truncate_to(self, size: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(size)

    def _remember(self, keys: list[str], outputs: torch.Tensor, entry: Mapping[str, Any], *, probe: bool, where: str) -> None:
        shape = tuple(outputs.shape[1:])
        if self._shape is not None and shape != self._shape:
            raise IntegrityError(f"{where}: outputs of shape {list(shape)} per image, earlier lines hold {list(self._shape)}; "
                                 f"the query journal was edited or mixes two suspects: {SET_ASIDE_HINT}")
        self._shape = shape
        if not probe:  # a probe re-asked an image already answered: the answer used stays the first one
            for key, answer in zip(keys, outputs):
                self._answers[key] = answer
        self._log.append(log_line(entry))

    # ------------------------------------------------------------------------------------------------- binding
    def bind(self, *, fingerprints_sha256: str | None, suspect: Mapping[str, Any] | None, set_aside: bool = False) -> "QueryJournal":
        """Take the journal for one verification: lock it, read it again, and check what it answered for.

        Args:
            fingerprints_sha256: the fingerprint set's SHA-256 (None: not bound to a set).
            suspect: the suspect's identity (see :func:`~modelprint.journal_lines.suspect_binding`).
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
        lock = FileLock(str(lock_path), timeout=0, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise InputError(f"query journal {self.path} is in use by another verification (its lock {lock_path.name} is held): "
                             "two runs cannot write one journal; wait for the other to end, or give another journal") from None
        except OSError as exc:
            raise InputError(f"query journal {self.path}: cannot create its lock file {lock_path} ({exc.strerror or exc})") from None
        self._lock = lock

    def close(self) -> None:
        """Release the lock (a journal that was not bound holds none)."""
        if self._lock is not None:
            self._lock.release(force=True)
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

    def record(self, keys: list[str], images: torch.Tensor, outputs: torch.Tensor, *, seconds: float, probe: bool = False) -> None:
        """Append one answered batch and make it durable before returning.

        Args:
            keys: each image's key (:func:`image_key`).
            images: the batch sent.
            outputs: the answer.
            seconds: how long the request took.
            probe: the batch re-asked an earlier run's image (logged, but its answer is not used).
        """
        outputs = outputs.detach().cpu()
        entry = make_entry(keys, images, outputs, seconds=seconds, probe=probe)
        text = json.dumps(entry, allow_nan=False) + "\n"
        header = None
        if self.header is None:
            header = self._pending_header or make_header(None, None)
            text = json.dumps(header, allow_nan=False) + "\n" + text
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if header is not None:
            self.header = header
        self._remember(keys, outputs, entry, probe=probe, where=str(self.path))

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
