"""One verification of one suspect, end to end: the access, the query journal, the scheme and the evidence record.

The ``modelprint verify`` command is this function; it is here so that scripts get the same journal, resume and
record behaviour.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .access import BLACK_BOX, WHITE_BOX, BlackBox, WhiteBox
from .errors import InputError
from .evidence import file_identity, read_null_scores, verification_record, write_record
from .fingerprints import FingerprintSet, VerificationResult, scheme_for
from .models import load_model


@dataclass
class Verification:
    """What :func:`verify_suspect` did: the result, the record and where it went, and the black-box access used."""

    result: VerificationResult
    record: dict[str, Any]
    record_path: Path
    box: BlackBox | None


def verification_id(fingerprints_sha256: str, suspect: dict[str, Any], mode: str) -> str:
    """Names one verification (fingerprint set x suspect x mode): its journal and its records share it."""
    who = suspect.get("sha256") or f"{suspect.get('url')}|{suspect.get('model_name')}"
    return hashlib.sha256(f"{fingerprints_sha256}|{who}|{mode}".encode()).hexdigest()[:16]


def verify_suspect(
    fingerprints: str | os.PathLike,
    *,
    task: str | None = None,
    suspect: str | os.PathLike | None = None,
    url: str | None = None,
    model_name: str | None = None,
    mode: str | None = None,
    budget: int | None = None,
    batch_size: int = 64,
    records: str | os.PathLike = "modelprint-records",
    journal: str | os.PathLike | None = None,
    fresh: bool = False,
    record: str | os.PathLike | None = None,
    null: str | os.PathLike | None = None,
    alpha: float = 0.05,
    device: str = "cpu",
    **client_options: Any,
) -> Verification:
    """Verify a model file or a model behind an Open Inference Protocol server, and write the evidence record.

    Args:
        fingerprints: the fingerprint file.
        task: when given, the task the fingerprint set must protect (it records its own).
        suspect: a model file; or ``url`` and ``model_name`` of a server (black-box only).
        mode: ``"white-box"`` or ``"black-box"``; white-box for a file and black-box for a URL when None.
        budget: most images a black-box verification may have answered.
        batch_size: images per request.
        records: folder of records and query journals.
        journal: the query journal [default: RECORDS/<verification id>.queries.jsonl, so a rerun resumes].
        fresh: a new journal (ask the suspect again) instead of resuming an earlier run's.
        record: the record's path [default: RECORDS/<verification id>-<UTC time>.json].
        null: matching scores of independent models for a calibrated verdict (see :func:`read_null_scores`).
        alpha: false-positive rate of the verdict.
        **client_options: for a URL: timeout, retries, backoff, rate_limit, output (:class:`~modelprint.remote.OipClient`).
    """
    if (suspect is None) == (url is None):
        raise InputError("give either --suspect FILE or --url URL (with --model-name)")
    if url is not None and not model_name:
        raise InputError("--url needs --model-name: the suspect's model name on the server")
    if url is not None and mode == WHITE_BOX:
        raise InputError("a suspect behind a server can only be verified in black-box mode")
    mode = mode or (BLACK_BOX if url else WHITE_BOX)
    fingerprint_set = FingerprintSet.load(fingerprints)
    recorded = fingerprint_set.task.get("name", "classification")
    if task is not None and task != recorded:
        raise InputError(f"--task {task}, but the fingerprint set {fingerprints} is for {recorded}")
    digest = fingerprint_set.sha256()
    null_scores = read_null_scores(null, mode=mode, fingerprints_sha256=digest) if null else None
    identity = {"kind": "http", "url": url, "model_name": model_name} if url else file_identity(suspect)  # type: ignore[arg-type]
    name = verification_id(digest, identity, mode)
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    records = Path(records)
    if journal is None and mode == BLACK_BOX:
        journal = records / f"{name}{'-' + now if fresh else ''}.queries.jsonl"
    box: BlackBox | None = None
    if url:
        access = box = BlackBox.http(url, model_name, budget=budget, batch_size=batch_size, journal=journal, **client_options)  # type: ignore[arg-type]
    else:
        access = WhiteBox(load_model(suspect, device=device))  # type: ignore[arg-type]
        if mode == BLACK_BOX:
            access = box = access.black_box(fingerprint_set.task_adapter(), budget=budget, batch_size=batch_size, journal=journal, identity=identity)
    result = scheme_for(fingerprint_set).verify(access, fingerprint_set, mode=mode)
    evidence = verification_record(result, fingerprint_set, suspect=box.identity if box else identity, box=box, null_scores=null_scores, alpha=alpha)
    return Verification(result, evidence, write_record(evidence, record or records / f"{name}-{now}.json"), box)
