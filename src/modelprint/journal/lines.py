"""The lines of a query journal: the header that binds it to one verification, and the answered batches.

Line 1 is the *header*: the fingerprint set's SHA-256 and the suspect's identity the journal answers for (a file's
SHA-256; or a server's URL without credentials, the model name and the metadata the server declared), with the
SHA-256 of that binding. Every further line is one batch: its place in the journal (``seq``), the SHA-256 of the
line before it (``prev_sha256``, the header's for line 2), time, size, seconds, the SHA-256 of the inputs, of the
outputs and of each image, and the outputs themselves. Reading checks every line against its own hashes and against
the line before it, so an edited or damaged line, a line moved from another journal, an appended block of another
journal, a dropped or reordered line is refused with one line naming the line. Hashes without a key do not stop
someone who recomputes every one of them: only asking the suspect again does (``records check --replay``, and the
resume probe of :mod:`modelprint.access`).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any, Mapping

import torch

from ..errors import IntegrityError
from ..integrity.hashing import canonical_json as hashing_canonical_json
from ..integrity.hashing import tensors_sha256
from ..serving.urls import redact_url

#: The format of the header and lines; a journal of another format is refused.
JOURNAL_FORMAT = 2
HEADER_KEY = "modelprint_query_journal"
#: How to get past a journal that cannot be used, in every message that refuses one.
SET_ASIDE_HINT = "give another journal, or set this one aside and start a new one (verify --new-journal, BlackBox(new_journal=True))"
#: The largest difference a resume probe may ever allow between a journalled answer and the fresh one (output units):
#: a tenth of the smallest black-box threshold any scheme derives in practice (docs/evidence.md); a set's own cap is
#: lower when its thresholds are (:func:`modelprint.access.tolerance_cap`).
MAX_PROBE_TOLERANCE = 1e-2
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}


def canonical_json(value: Any) -> str:
    """Sorted, compact, strict JSON (paths and other objects as text): the bytes a binding's SHA-256 is taken over."""
    return hashing_canonical_json(value, default=str)


def suspect_binding(identity: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What of a suspect's identity a journal is keyed by.

    Args:
        identity: a black-box access's ``identity`` (``kind`` ``"file"`` with ``sha256``; ``"http"`` with ``url``,
            ``model_name`` and ``metadata``; anything else as given).

    Returns:
        For a file its SHA-256 only (the same bytes elsewhere are the same suspect); for a server its URL without
        credentials, model name and declared metadata; other identities as plain JSON data; None for None.
    """
    if identity is None:
        return None
    kind = identity.get("kind")
    if kind == "file":
        return {"kind": "file", "sha256": identity.get("sha256")}
    if kind == "http":
        return {"kind": "http", "url": redact_url(str(identity.get("url"))), "model_name": identity.get("model_name"),
                "metadata": identity.get("metadata")}
    return json.loads(canonical_json(dict(identity)))


def make_header(fingerprints_sha256: str | None, suspect: Mapping[str, Any] | None) -> dict[str, Any]:
    """The header line of a new journal.

    Args:
        fingerprints_sha256: the fingerprint set's SHA-256 (None: not bound to a set).
        suspect: the suspect's identity (see :func:`suspect_binding`).
    """
    binding = {"fingerprints_sha256": fingerprints_sha256, "suspect": suspect_binding(suspect)}
    return {
        HEADER_KEY: JOURNAL_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **binding,
        "binding_sha256": hashlib.sha256(canonical_json(binding).encode()).hexdigest(),
    }


def check_header(entry: Any, where: str) -> dict[str, Any]:
    """``entry`` (line 1, parsed) if it is an intact header.

    Raises:
        IntegrityError: not a header of this format, or its binding does not match its SHA-256.
    """
    if not isinstance(entry, dict) or HEADER_KEY not in entry:
        raise IntegrityError(f"{where}: line 1 is not a query-journal header (a journal of an older modelprint, or not a "
                             f"query journal); {SET_ASIDE_HINT}")
    if entry[HEADER_KEY] != JOURNAL_FORMAT:
        raise IntegrityError(f"{where}: query-journal format {entry[HEADER_KEY]!r}, this modelprint reads {JOURNAL_FORMAT}; {SET_ASIDE_HINT}")
    fingerprints, suspect = entry.get("fingerprints_sha256"), entry.get("suspect")
    binding = {"fingerprints_sha256": fingerprints, "suspect": suspect}
    well_formed = (fingerprints is None or (isinstance(fingerprints, str) and _HEX64.fullmatch(fingerprints))) and (
        suspect is None or isinstance(suspect, dict))
    try:
        digest = hashlib.sha256(canonical_json(binding).encode()).hexdigest()
    except ValueError:
        well_formed = False
    if not well_formed or entry.get("binding_sha256") != digest:
        raise IntegrityError(f"{where}: line 1, the header that names what the journal answered for, was edited or damaged; {SET_ASIDE_HINT}")
    return entry


def describe_binding(header: Mapping[str, Any]) -> str:
    """A header's suspect and fingerprint set, in a few words (for messages)."""
    suspect = header.get("suspect") or {}
    kind = suspect.get("kind")
    if kind == "file":
        who = f"the model file with SHA-256 {str(suspect.get('sha256'))[:12]}..."
    elif kind == "http":
        who = f"model {suspect.get('model_name')!r} at {suspect.get('url')}"
    else:
        who = f"a suspect of kind {kind!r}" if kind else "an unnamed suspect"
    fingerprints = header.get("fingerprints_sha256")
    return f"{who} with fingerprint set {fingerprints[:12] + '...' if fingerprints else '(none named)'}"


def line_sha256(text: str) -> str:
    """SHA-256 of one journal line as written (UTF-8, without its newline): what the next line's ``prev_sha256`` holds."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_entry(
    keys: list[str], images: torch.Tensor, outputs: torch.Tensor, *, seconds: float, seq: int, prev_sha256: str,
    probe: bool = False, tolerance: float | None = None,
) -> dict[str, Any]:
    """One answered batch as a journal line.

    Args:
        keys: each image's key (:func:`~modelprint.journal.image_key`).
        images: the batch sent.
        outputs: the answer, on the CPU.
        seconds: how long the request took.
        seq: the line's number among the batch lines (1 for the first after the header).
        prev_sha256: :func:`line_sha256` of the line before it (the header for ``seq`` 1).
        probe: the batch re-asked images of an earlier run to check that the suspect still answers the same.
        tolerance: a probe's largest allowed difference from the journalled answers (stored with it).
    """
    entry = {
        "seq": seq,
        "prev_sha256": prev_sha256,
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "batch_size": len(keys),
        "seconds": round(seconds, 6),
        "inputs_sha256": tensors_sha256({"inputs": images.detach().float()}),
        "outputs_sha256": tensors_sha256({"outputs": outputs}),
        "image_sha256": keys,
        "dtype": str(outputs.dtype).removeprefix("torch."),
        "outputs": outputs.tolist(),  # float32 -> Python float is exact, so a resumed run reads the same bits
    }
    if probe:
        entry["probe"] = True
        entry["tolerance"] = tolerance
    return entry


def check_entry(entry: Any, where: str) -> tuple[list[str], torch.Tensor, float | None]:
    """The keys, outputs and probe flag of one batch line, checked against its own hashes.

    Args:
        entry: the line, parsed.
        where: ``"PATH: line K"``, for messages.

    Returns:
        (image keys, outputs tensor, the probe's tolerance when the line is a probe, else None).

    Raises:
        IntegrityError: a field missing or malformed, or outputs that do not match their SHA-256.
    """
    def refuse(what: str) -> IntegrityError:
        return IntegrityError(f"{where}: {what}; the query journal was edited or damaged: {SET_ASIDE_HINT}")

    if not isinstance(entry, dict):
        raise refuse("not a JSON object")
    missing = [k for k in ("seq", "prev_sha256", "time", "batch_size", "inputs_sha256", "outputs_sha256", "image_sha256", "dtype", "outputs") if k not in entry]
    if missing:
        raise refuse(f"no {', '.join(missing)}")
    size, keys, dtype = entry["batch_size"], entry["image_sha256"], entry["dtype"]
    if isinstance(entry["seq"], bool) or not isinstance(entry["seq"], int) or entry["seq"] < 1:
        raise refuse(f"seq {entry['seq']!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise refuse(f"batch_size {size!r}")
    if not isinstance(keys, list) or len(keys) != size or not all(isinstance(k, str) and 0 < len(k) <= 128 for k in keys):
        raise refuse(f"image_sha256 is not a list of {size} image keys")
    for field in ("prev_sha256", "inputs_sha256", "outputs_sha256"):
        if not isinstance(entry[field], str) or not _HEX64.fullmatch(entry[field]):
            raise refuse(f"{field} is not a SHA-256 digest")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise refuse(f"dtype {dtype!r}")
    try:
        outputs = torch.tensor(entry["outputs"], dtype=getattr(torch, dtype))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise refuse("outputs are not a rectangular array of numbers") from None
    if outputs.dim() < 1 or len(outputs) != size:
        raise refuse(f"{0 if outputs.dim() < 1 else len(outputs)} outputs for a batch of {size}")
    if outputs.is_floating_point() and not bool(torch.isfinite(outputs).all()):
        raise refuse("outputs that are NaN or infinite")
    if tensors_sha256({"outputs": outputs}) != entry["outputs_sha256"]:
        raise refuse("its outputs do not match their SHA-256")
    if entry.get("probe") is not None and entry.get("probe") is not True:
        raise refuse(f"probe {entry.get('probe')!r}")
    if entry.get("probe") is True:
        tolerance = entry.get("tolerance")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance <= MAX_PROBE_TOLERANCE:
            raise refuse(f"a probe's tolerance {tolerance!r} (at most {MAX_PROBE_TOLERANCE:g})")
        return keys, outputs, float(tolerance)
    return keys, outputs, None


def log_line(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What the query log of a record keeps of a line: time, size, seconds and hashes (and a probe's flag)."""
    kept = {k: entry.get(k) for k in ("seq", "prev_sha256", "time", "batch_size", "seconds", "inputs_sha256", "outputs_sha256")}
    if entry.get("probe") is True:
        kept["probe"] = True
    return kept

