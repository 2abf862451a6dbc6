"""Checking an evidence record as a third party: its signature, and what it claims about the files it names.

A record signed by the owner (``verify --sign KEY``) carries a ``signature`` block over its canonical JSON (see
:mod:`modelprint.integrity.signing`). Whoever holds the owner's public key can check that the record is the owner's and
unchanged, that the fingerprint set it names was signed by the same key, and, given the files, that the set and the
suspect file are the ones the record names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, IntegrityError
from ..integrity.signing import PublicKeySource, check_message, check_record, load_public_key, set_message


@dataclass
class RecordCheck:
    """What :func:`check_record_file` established.

    Attributes:
        key_fingerprint: the trusted key that signed the record.
        fingerprints_sha256: the fingerprint set the record names.
        set_signed: whether the record carries the set's own signature by the same key (checked).
        checked: one line per fact checked, for display.
    """

    key_fingerprint: str
    fingerprints_sha256: str | None
    set_signed: bool
    checked: list[str] = field(default_factory=list)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """A record file as a JSON object (bare NaN or infinity refused: records are strict JSON).

    Raises:
        InputError: missing, unreadable or not a JSON object.
    """
    path = Path(path)

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    try:
        record = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the record ({exc})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: a record is a JSON object")
    return record


def load_set_or_key(path: str | os.PathLike) -> Any:
    """The fingerprint set, or the watermark key, a record names (whichever the file is).

    Raises:
        IntegrityError: neither (the fingerprint set's reason is given).
    """
    from ..fingerprints import FingerprintSet
    from ..watermarks import WatermarkKey

    try:
        return FingerprintSet.load(path)
    except IntegrityError as not_a_set:
        try:
            return WatermarkKey.load(path)
        except IntegrityError:
            raise not_a_set from None


def check_record_file(
    path: str | os.PathLike,
    trusted_key: PublicKeySource,
    *,
    fingerprints: str | os.PathLike | None = None,
    suspect: str | os.PathLike | None = None,
) -> RecordCheck:
    """Check an evidence record against the owner's public key, and optionally against the files it names.

    Args:
        path: the record (JSON).
        trusted_key: the owner's public key (PEM file, hex, or key object).
        fingerprints: the fingerprint file: its content digest must be the one the record names.
        suspect: the suspect model file: its SHA-256 must be the one the record names.

    Returns:
        What was checked.

    Raises:
        IntegrityError: unsigned, signed by another key, changed after signing, or naming other files.
        InputError: a file that cannot be read.
    """
    record = read_record(path)
    public = load_public_key(trusted_key)
    key = check_record(record, public, what=str(path))
    named = record.get("fingerprints") if isinstance(record.get("fingerprints"), dict) else {}
    digest = named.get("sha256") if isinstance(named.get("sha256"), str) else None
    done = RecordCheck(key, digest, False, [f"record signed by the trusted key {key[:16]} and unchanged since"])
    if named.get("signature") and digest:
        check_message(named["signature"], set_message(digest), public, what=f"{path}: the fingerprint set it names")
        done.set_signed = True
        done.checked.append(f"fingerprint set {digest[:16]}... signed by the same key")
    if fingerprints is not None:
        actual = load_set_or_key(fingerprints).sha256()
        if actual != digest:
            raise IntegrityError(f"{path}: the record names fingerprint set {str(digest)[:16]}..., {fingerprints} is {actual[:16]}...")
        done.checked.append(f"{fingerprints} is the fingerprint set it names")
    if suspect is not None:
        from ..integrity.hashing import file_sha256

        claimed = record.get("suspect", {}).get("sha256") if isinstance(record.get("suspect"), dict) else None
        try:
            actual = file_sha256(suspect)
        except OSError as exc:
            raise InputError(f"{suspect}: cannot read the suspect file ({exc.strerror or exc})") from None
        if actual != claimed:
            raise IntegrityError(f"{path}: the record names suspect {str(claimed)[:16]}..., {suspect} is {actual[:16]}...")
        done.checked.append(f"{suspect} is the suspect it names")
    return done
