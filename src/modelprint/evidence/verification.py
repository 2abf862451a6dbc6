"""One verification of one suspect, end to end: the access, the query journal, the scheme and the evidence record.

The ``modelprint verify`` command is this function; it is here so that scripts get the same journal, resume and
record behaviour. Output paths are checked before any work; the query journal is bound to the fingerprint set and
the suspect and locked for the whole verification (see :mod:`modelprint.journal`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..architectures import inference_only
from ..access import BLACK_BOX, PROBE_TOLERANCE, WHITE_BOX, BlackBox, WhiteBox, http_identity, tolerance_cap
from ..checks import device as check_device
from ..checks import number, output_file, output_folder
from ..errors import InputError, IntegrityError
from .record import file_identity, listed_null_scores, read_null_scores, verification_record, write_record
from ..metrics import verdict as calibrated_verdict
from ..fingerprints import FingerprintSet, VerificationResult, scheme_for
from ..journal.lines import canonical_json
from ..models import load_model
from ..integrity.signing import Ed25519PrivateKey, Ed25519PublicKey, load_private_key, sign_record
from ..serving.urls import redact_url

if TYPE_CHECKING:
    from ..serving.json_api import ApiMapping


@dataclass
class Verification:
    """What :func:`verify_suspect` did: the result, the record and where it went, and the black-box access used."""

    result: VerificationResult
    record: dict[str, Any]
    record_path: Path
    box: BlackBox | None


def verification_id(fingerprints_sha256: str, suspect: dict[str, Any], mode: str) -> str:
    """Names one verification (fingerprint set x suspect x mode): its journal and its records share it.

    Args:
        fingerprints_sha256: the set's SHA-256.
        suspect: a file's identity (its SHA-256 names it), a server's (URL without credentials, model name and the
            metadata it declares: a server that now declares other metadata gets another journal), or any other.
        mode: ``"white-box"`` or ``"black-box"``.
    """
    if suspect.get("kind") == "file":
        who = str(suspect.get("sha256"))
    elif suspect.get("kind") == "http":
        metadata = hashlib.sha256(canonical_json(suspect.get("metadata")).encode()).hexdigest()
        who = f"{redact_url(str(suspect.get('url')))}|{suspect.get('model_name')}|{metadata}"
    else:
        who = canonical_json(suspect)
    return hashlib.sha256(f"{fingerprints_sha256}|{who}|{mode}".encode()).hexdigest()[:16]


def verdict_margin(result: VerificationResult, null_scores: list[float] | None, alpha: float) -> int | None:
    """The fewest journalled answers that, answered otherwise, could have changed this result's verdict.

    A verdict built on per-sample values (the matching score is the fraction of samples that matched, one answer
    bearing on one sample) changes only when at least m samples change outcome, m the distance of the score from
    the verdict's boundary in samples; a splice that changed the verdict replaced at least m answers. A single
    value read from every answer at once (MetaV's verifier), or a scheme's own p-value (a watermark's), gives m = 1.

    Returns:
        m >= 1, or None when there is no verdict (no null scores and no p-value of the scheme's) or no number of
        changed samples could change it.
    """
    if null_scores:
        def pirated(score: float) -> bool:
            return calibrated_verdict(score, null_scores, alpha=alpha).pirated
    elif result.p_value is not None:
        return 1
    else:
        return None
    n = len(result.values)
    matched = round(result.matching_score * n)
    if n == 0 or abs(result.matching_score * n - matched) > 1e-6 or n == 1:
        return 1
    now = pirated(matched / n)
    for m in range(1, n + 1):
        if (matched + m <= n and pirated((matched + m) / n) != now) or (matched - m >= 0 and pirated((matched - m) / n) != now):
            return m
    return None


def confirm_target(fingerprint_set: FingerprintSet, target: str | os.PathLike, where: str | os.PathLike) -> dict[str, Any]:
    """Check that the model file ``target`` is the one the set names (its weights' SHA-256).

    Returns:
        What the record states: the file's path and its weights' SHA-256.

    Raises:
        InputError: the file is not a readable model file.
        IntegrityError: it is another model than the set's target.
    """
    from ..models import state_sha256

    named = fingerprint_set.target.get("sha256")
    found = state_sha256(load_model(target))
    if found != named:
        raise IntegrityError(f"{where}: the set names target weights {str(named)[:16]}..., but {target} holds {found[:16]}... (another model)")
    return {"path": str(target), "sha256": found}


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
    new_journal: bool = False,
    probe_tolerance: float | None = None,
    record: str | os.PathLike | None = None,
    null: str | os.PathLike | Sequence[float] | None = None,
    alpha: float = 0.05,
    device: str = "cpu",
    trusted_key: str | os.PathLike | Ed25519PublicKey | None = None,
    expect_sha256: str | None = None,
    sign: str | os.PathLike | Ed25519PrivateKey | None = None,
    kind: type[FingerprintSet] = FingerprintSet,
    target: str | os.PathLike | None = None,
    api: "ApiMapping | str | os.PathLike | None" = None,
    **client_options: Any,
) -> Verification:
    """Verify a model file or a model behind an Open Inference Protocol server, and write the evidence record.

    Args:
        fingerprints: the fingerprint file.
        task: when given, the task the fingerprint set must protect (it records its own).
        suspect: a model file; or ``url`` and ``model_name`` of an Open Inference Protocol server, or ``url`` and
            ``api`` of any JSON-over-HTTP API (black-box only).
        mode: ``"white-box"`` or ``"black-box"``; when None, white-box for a file (black-box when the scheme has no
            white-box mode) and black-box for a URL.
        budget: most images a black-box verification may use: answers taken from the journal plus images sent on
            the wire (every attempt, retries and the resume probe included).
        batch_size: images per request.
        records: folder of records and query journals.
        journal: the query journal [default: RECORDS/<verification id>.queries.jsonl, so a rerun resumes]. A journal
            of another fingerprint set or suspect is refused; one that another run holds is refused.
        fresh: ask the suspect again instead of resuming an earlier run's journal (the same as ``new_journal``).
        new_journal: set an existing journal aside (``NAME.<UTC>.set-aside.jsonl``) and start a new one.
        probe_tolerance: largest difference allowed between a journalled answer and the probe's fresh answer when a
            server's journal is resumed [default: :data:`~modelprint.access.PROBE_TOLERANCE`, or the set's cap when
            lower]; above the set's cap (:func:`~modelprint.access.tolerance_cap`) it is refused.
        record: the record's path [default: RECORDS/<verification id>-<UTC time>.json].
        null: matching scores of independent models for a calibrated verdict: a list of scores in ``mode``, or a file
            (see :func:`read_null_scores`).
        alpha: false-positive rate of the verdict.
        trusted_key: the owner's Ed25519 public key (PEM file or hex): a set not signed by it is refused before
            anything is sent to the suspect.
        expect_sha256: the set's content digest, published beforehand: another set is refused the same way.
        target: the owner's target model file: refused unless its weights' SHA-256 is the one the set names (a set
            can name any well-formed hash; only the file confirms it). The record then says so
            (``fingerprints.target_confirmed``).
        sign: the private key (PEM file) that signs the evidence record (a ``signature`` block, see
            :func:`~modelprint.integrity.signing.sign_record`).
        kind: the kind of file ``fingerprints`` is: a fingerprint set, or a watermark key
            (:class:`~modelprint.watermarks.WatermarkKey`); a file of another kind is refused.
        api: how to ask a JSON-over-HTTP API at ``url`` (:class:`~modelprint.serving.json_api.ApiMapping`, or its
            YAML/JSON file); without ``num_classes`` it takes the set's target's.
        **client_options: for a URL: timeout, deadline, max_answer_bytes, retries, backoff, rate_limit, output,
            headers, transport (:class:`~modelprint.serving.client.OipClient`).

    Raises:
        InputError: bad arguments or output paths (checked before anything is loaded or sent), or a journal of
            another verification or in use.
        IntegrityError: an edited or damaged journal, or a server that no longer answers as its journal recorded.
    """
    if (suspect is None) == (url is None):
        raise InputError("give either --suspect FILE or --url URL (with --model-name)")
    if url is not None and not model_name and api is None:
        raise InputError("--url needs --model-name (the suspect's model name on an Open Inference Protocol server) "
                         "or --api (how to ask a JSON-over-HTTP API)")
    if api is not None and (url is None or model_name):
        raise InputError("--api describes the JSON API at --url; give --url, and no --model-name")
    mapping = _mapping(api) if api is not None else None
    if url is not None and mode == WHITE_BOX:
        raise InputError("a suspect behind a server can only be verified in black-box mode")
    asked_mode, mode = mode, mode or (BLACK_BOX if url else WHITE_BOX)
    if mode not in (WHITE_BOX, BLACK_BOX):
        raise InputError(f"mode must be {WHITE_BOX!r} or {BLACK_BOX!r}, got {mode!r}")
    number(alpha, "--alpha", above=0, below=1)
    number(batch_size, "--batch-size", minimum=1, integer=True)
    if budget is not None:
        number(budget, "--budget", minimum=0, integer=True)
    if suspect is not None:
        check_device(device)
    output_folder(records, "--records")  # where the record and the journal go: checked before any work
    for path, what in ((journal, "--journal"), (record, "--record")):
        if path is not None:
            output_file(path, what)
    signing_key = load_private_key(sign) if sign is not None else None  # a bad key fails before any work
    fingerprint_set = kind.load(fingerprints, trusted_key=trusted_key, expect_sha256=expect_sha256)
    if asked_mode is None and mode not in scheme_for(fingerprint_set).modes:
        mode = BLACK_BOX  # a scheme without a white-box mode (a backdoor's triggers) asks a file as it would a server
    recorded = fingerprint_set.task.get("name", "classification")
    if task is not None and task != recorded:
        raise InputError(f"--task {task}, but the {kind.WHAT} {fingerprints} is for {recorded}")
    digest = fingerprint_set.sha256()
    cap = tolerance_cap(fingerprint_set.thresholds.get("black_box"))
    if probe_tolerance is None:
        probe_tolerance = min(PROBE_TOLERANCE, cap)
    elif mode == BLACK_BOX and probe_tolerance > cap:
        raise InputError(f"--probe-tolerance {probe_tolerance:g} is above {cap:g}, the most this set allows (a quarter of its "
                         "black-box threshold, and never above 0.01): answers that far apart could come from another model")
    null_scores = (listed_null_scores(null, what="null scores") if isinstance(null, (list, tuple))
                   else read_null_scores(null, mode=mode, fingerprints_sha256=digest) if null else None)
    confirmed = confirm_target(fingerprint_set, target, fingerprints) if target is not None else None

    def refuse_degenerate() -> None:
        """Before anything is sent to the suspect (after its own checks): a set under which a suspect that never saw
        the target would be declared a copy (thresholds lowered to 0, labels of one class, ...) is refused
        (:mod:`modelprint.fingerprints.nulls`)."""
        scheme_for(fingerprint_set).check_not_degenerate(fingerprint_set, modes=(mode,), alpha=alpha, null_scores=null_scores, what=str(fingerprints))

    records = Path(records)
    box: BlackBox | None = None
    client = None
    try:
        if url and mapping is not None:
            from ..serving.json_api import JsonApiClient

            from ..fingerprints.checks import num_classes

            outputs = num_classes(fingerprint_set.target)
            if mapping.num_classes is None and outputs is not None and outputs >= 2:
                mapping = replace(mapping, num_classes=outputs)
            client = JsonApiClient(url, mapping, **{k: v for k, v in client_options.items() if k != "output"})
            refuse_degenerate()  # before the server is asked anything
            identity = http_identity(client)
        elif url:
            from ..serving.client import OipClient

            client = OipClient(url, model_name, **client_options)  # type: ignore[arg-type]
            refuse_degenerate()  # before the server is asked anything
            identity = http_identity(client)
        else:
            identity = file_identity(suspect)  # type: ignore[arg-type]
            suspect_model = load_model(suspect, device=device)  # type: ignore[arg-type]
            if inference_only(suspect_model):  # an ONNX file run as it is: it can only be asked
                if asked_mode == WHITE_BOX:
                    raise InputError(f"{suspect}: a model run by ONNX Runtime gives no weights or gradients; verify it in black-box mode")
                mode = BLACK_BOX
            refuse_degenerate()
        name = verification_id(digest, identity, mode)
        now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        if journal is None and mode == BLACK_BOX:
            journal = records / f"{name}.queries.jsonl"
        options: dict[str, Any] = dict(budget=budget, batch_size=batch_size, journal=journal, fingerprints_sha256=digest,
                                       new_journal=new_journal or fresh, probe_tolerance=probe_tolerance)
        if mapping is not None:
            access = box = BlackBox.json_api(client, **options)
        elif client is not None:
            access = box = BlackBox.http(url, model_name, client=client, **options)  # type: ignore[arg-type]
        else:
            access = WhiteBox(suspect_model)
            if mode == BLACK_BOX:
                access = box = access.black_box(fingerprint_set.task_adapter(), identity=identity, **options)
        result = scheme_for(fingerprint_set).verify(access, fingerprint_set, mode=mode)
        if box is not None:  # before the record: enough journalled answers asked again to catch a verdict-changing splice
            box.confirm_resumed(verdict_margin(result, null_scores, alpha))
        evidence = verification_record(result, fingerprint_set, suspect=box.identity if box else identity, box=box, null_scores=null_scores, alpha=alpha)
        if confirmed is not None:
            evidence["fingerprints"]["target_confirmed"] = confirmed
        if signing_key is not None:
            evidence = sign_record(evidence, signing_key)
        written = write_record(evidence, record or records / f"{name}-{now}.json")
    finally:
        if box is not None:
            box.close()  # releases the journal's lock
        if client is not None:
            client.close()
    return Verification(result, evidence, written, box)


def _mapping(api: Any) -> "ApiMapping":
    """An :class:`~modelprint.serving.json_api.ApiMapping` given as itself or as its file."""
    from ..serving.json_api import ApiMapping

    return api if isinstance(api, ApiMapping) else ApiMapping.from_file(api)
