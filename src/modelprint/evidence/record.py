"""Evidence records: one JSON file per verification, with everything a third party needs to check it.

A record names the fingerprint set (its SHA-256), the suspect (a file's SHA-256, or the URL, model name and the
metadata the server declared), the thresholds and per-sample values, the matching score, the verdict and, for a
black-box suspect, the query counts (answers read, answers taken from the journal, images sent this run, the
resume probe), the journal as the run found it (path, binding, SHA-256) and the query log (its path, SHA-256 and
per-batch lines: time, size, SHA-256 of inputs and outputs). Records are strict JSON (a NaN becomes null and is
listed) and written atomically; URLs appear without credentials.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from .._version import __version__
from ..access import BlackBox
from ..errors import InputError
from ..fingerprints.base import FingerprintSet, VerificationResult
from ..integrity.hashing import file_sha256
from ..metrics import verdict as calibrated_verdict
from ..serving.urls import redact_url

RECORD_VERSION = 1


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """A suspect model file: its path, size and SHA-256 (read in chunks, never the whole file at once)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    return {"kind": "file", "path": str(path), "bytes": path.stat().st_size, "sha256": digest}


def read_null_scores(path: str | os.PathLike, *, mode: str, fingerprints_sha256: str) -> list[float]:
    """Matching scores of models known to be independent, for a calibrated verdict.

    Args:
        path: a JSON list of scores, an object with a ``scores`` list, or the ``verification-K.json`` of a
            ``modelprint evaluate`` run, ``OUT/<scheme>/verification-K.json`` (its negatives' scores are read, with
            the kinds from the run's ``report.json``, one folder up or beside it; the run must have used this very
            fingerprint set).
        mode: ``"white-box"`` or ``"black-box"``: which scores of an evaluation to read.
        fingerprints_sha256: the set being verified.

    Raises:
        InputError: the file is missing, holds no scores, or comes from another fingerprint set.
    """
    from ..checks import path_argument

    path = path_argument(path, "--null")
    data = _read_json(path, "null scores")
    if isinstance(data, dict) and "fingerprints_sha256" in data and "suspects" in data:
        if data["fingerprints_sha256"] != fingerprints_sha256:
            raise InputError(f"{path}: its scores were measured with another fingerprint set; null scores must come from the same set")
        beside = next((f / "report.json" for f in (path.parent, path.parent.parent) if (f / "report.json").is_file()), path.parent / "report.json")
        report = _read_json(beside, "the evaluation report (beside it, or one folder up)")
        suspects = report.get("suspects") if isinstance(report, dict) else None
        if not isinstance(suspects, list) or not isinstance(data["suspects"], dict):
            raise InputError(f"{path}: not an evaluation's verification file with its report.json (no list of suspects)")
        kinds = {s.get("name"): s.get("kind") for s in suspects if isinstance(s, dict) and isinstance(s.get("name"), str)}
        key = "ms_" + mode.replace("-", "_")
        scores = [entry[key] for name, entry in data["suspects"].items() if kinds.get(name) == "negative" and isinstance(entry, dict) and key in entry]
    else:
        scores = data.get("scores") if isinstance(data, dict) else data
    if not isinstance(scores, list) or not scores or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
        raise InputError(f"{path}: expected a non-empty JSON list of matching scores, {{\"scores\": [...]}} or an evaluation's verification file")
    return listed_null_scores(scores, what=str(path))


def listed_null_scores(scores: Sequence[Any], *, what: str) -> list[float]:
    """Matching scores of independent models given as a list: each a finite number in [0, 1].

    Raises:
        InputError: an empty list, or a value that is not a finite number in [0, 1].
    """
    if not scores or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1 for v in scores):
        raise InputError(f"{what}: matching scores must be a non-empty list of finite numbers in [0, 1]")
    return [float(v) for v in scores]


def _read_json(path: Path, what: str) -> Any:
    from ..checks import read_text

    text = read_text(path, what)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{path}: cannot read {what} ({' '.join(str(exc).split())})") from None


def verification_record(
    result: VerificationResult,
    fingerprints: FingerprintSet,
    *,
    suspect: dict[str, Any],
    box: BlackBox | None = None,
    null_scores: Sequence[float] | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The evidence record of one verification.

    Args:
        result: what the verification found.
        fingerprints: the set it used.
        suspect: the suspect's identity (:func:`file_identity`, or a black-box access's ``identity``).
        box: the black-box access used, for its query counts and query log.
        null_scores: matching scores of independently trained models, for a calibrated verdict; without them, the
            scheme's own p-value when it defines one (``result.p_value``), else the record states that no verdict
            could be calibrated.
        alpha: false-positive rate the verdict controls.
    """
    if isinstance(suspect.get("url"), str):  # credentials never go into a record meant for third parties
        suspect = {**suspect, "url": redact_url(suspect["url"])}
    if null_scores:
        decision: dict[str, Any] = calibrated_verdict(result.matching_score, null_scores, alpha=alpha).to_dict()
    elif result.p_value is not None:  # the scheme's own null model (a watermark's binomial)
        decision = {"score": result.matching_score, "p_value": result.p_value, "alpha": alpha, "pirated": result.p_value <= alpha,
                    "n_null": 0, "method": result.p_value_method}
    else:
        decision = {"pirated": None, "reason": "no null scores given (matching scores of independent models): no calibrated verdict"}
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "tool": {"name": "modelprint", "version": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprints": {
            "sha256": fingerprints.sha256(),
            "scheme": fingerprints.scheme,
            "config": fingerprints.config,
            "n_samples": len(fingerprints),
            "target": fingerprints.target,
            "signature": fingerprints.signature,  # the owner's signature over sha256, when the set is signed
        },
        "suspect": suspect,
        "mode": result.mode,
        "thresholds": {  # exactly one per value: the rows this mode read, each with the threshold it was compared with
            "rule": "one" if len(set(result.thresholds or [])) <= 1 else "per_sample",
            "values": result.thresholds,
        },
        "values": result.values,
        "matching_score": result.matching_score,
        "verdict": decision,
        "elapsed_s": result.elapsed_s,
    }
    if box is not None:
        record["queries"] = query_counts(box)
    return strict_json_data(record)


def query_counts(box: BlackBox) -> dict[str, Any]:
    """What a record states about a black-box access's queries.

    Returns:
        ``answered`` (answers the verification read), ``answered_from_journal`` (of those, taken from the journal),
        ``rechecked_against_journal`` (a file suspect's journalled answers computed again and found equal),
        ``sent_this_run`` (images put on the wire by this run, every attempt: retries and the probe included),
        ``answer_levels`` (distinct values among this run's answers, up to 1000: 2 or fewer means the answers carry
        no more than a label),
        ``budget``, ``probe`` (the resume probe's outcome, or None), ``journal`` (path, binding, the file as this
        run found it: SHA-256, answers and batches, and where an earlier journal was set aside) and ``log`` (the
        journal's path, SHA-256 after the run and per-batch lines).
    """
    journal = box.journal
    return {
        "answered": box.queries,
        "answered_from_journal": box.from_journal,
        "rechecked_against_journal": box.rechecked,
        "sent_this_run": box.sent,
        "answer_levels": box.levels,
        "budget": box.budget,
        "probe": box.probe,
        "journal": None if journal is None else journal.provenance(),
        "log": None if journal is None else {"path": str(journal.path), "sha256": journal.digest(), "batches": journal.log()},
    }


def strict_json_data(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every NaN or infinite number replaced by null, listed under ``non_finite_as_null``.

    Records are strict JSON (RFC 8259 has no NaN): a third party's parser must read them, and a signature covers
    their canonical JSON. A null is never silent: the paths of the values it replaced are listed.

    Returns:
        The record, unchanged when every number is finite.
    """
    replaced: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            replaced.append(where)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(record, "")
    if replaced:
        cleaned["non_finite_as_null"] = sorted(set(replaced) | set(cleaned.get("non_finite_as_null") or []))
    return cleaned


def write_record(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a record as indented, strict JSON (see :func:`strict_json_data`), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(strict_json_data(record), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
