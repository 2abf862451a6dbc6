"""Ed25519 signatures by the owner's key: key files, signatures over a fingerprint set's digest and over records.

A digest (SHA-256) stored in a file shows that the file was not damaged; anyone who edits it can store a new one.
A signature shows who vouches for the content: only the holder of the private key can make it, and anyone holding
the public key can check it. Keys are named by their *fingerprint*, the SHA-256 of the 32-byte raw public key.

What is signed is a message with a purpose prefix, so that a signature made for one purpose cannot be passed off
as one for another:

* a fingerprint set: ``b"modelprint fingerprint-set v1\\n" + digest`` with ``digest`` the set's content SHA-256 in
  hex (it covers the set's metadata and every tensor);
* an evidence record: ``b"modelprint record v1\\n" + canonical_json(record without its "signature" block)``, with
  :func:`canonical_json` = ``json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)`` encoded as
  UTF-8 (``ensure_ascii`` on: every non-ASCII character is escaped).

This module is a leaf: it imports only the standard library, ``cryptography`` and the project's errors.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..checks import path_argument
from ..errors import InputError, IntegrityError
from .hashing import canonical_json as hashing_canonical_json

ALGORITHM = "ed25519"
SET_CONTEXT = b"modelprint fingerprint-set v1\n"
RECORD_CONTEXT = b"modelprint record v1\n"
SIGNATURE_FIELD = "signature"

PrivateKeySource = Union[str, os.PathLike, Ed25519PrivateKey]
PublicKeySource = Union[str, os.PathLike, Ed25519PublicKey]

_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


def new_key_files(out: str | os.PathLike) -> tuple[Path, Path]:
    """Make an Ed25519 key pair: ``OUT.key`` (private, PEM PKCS#8, unencrypted, mode 0600) and ``OUT.pub`` (public, PEM).

    Args:
        out: the files' common name without suffix (``keys/owner`` -> ``keys/owner.key``, ``keys/owner.pub``).

    Returns:
        The paths of the private and the public key file.

    Raises:
        InputError: either file exists already (nothing is overwritten) or cannot be written.
    """
    base = Path(out)
    private_path, public_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise InputError(f"{path} exists: a key file is never overwritten (choose another --out)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(public_pem)
    except OSError as exc:
        raise InputError(f"cannot write the key files {private_path}, {public_path}: {exc.strerror or exc}") from None
    return private_path, public_path


def load_private_key(source: PrivateKeySource) -> Ed25519PrivateKey:
    """An Ed25519 private key: a key object, or a PEM file written by :func:`new_key_files`.

    Raises:
        InputError: the file is missing, unreadable, encrypted, or holds another kind of key.
    """
    if isinstance(source, Ed25519PrivateKey):
        return source
    path = path_argument(source, "private key")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the private key ({exc.strerror or exc})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an unencrypted PEM private key ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """An Ed25519 public key: a key object, 64 hex digits (the raw key), or a file holding a PEM key or the hex.

    Raises:
        InputError: the file is missing or holds no Ed25519 public key.
    """
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, str) and _HEX_KEY.match(source.strip()):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(source.strip()))
    path = path_argument(source, "public key")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the public key ({exc.strerror or exc})") from None
    text = data.decode("ascii", errors="replace").strip()
    if _HEX_KEY.match(text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a PEM public key or 64 hex digits ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def public_hex(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The 32-byte raw public key in hex (of a private key: its public half)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def key_fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The name of a key: SHA-256 (hex) of its raw public key."""
    return hashlib.sha256(bytes.fromhex(public_hex(key))).hexdigest()


def sign_message(key: PrivateKeySource, message: bytes) -> dict[str, str]:
    """Sign ``message``; returns the signature block: algorithm, public key (hex), key fingerprint, signature (hex)."""
    private = load_private_key(key)
    return {
        "algorithm": ALGORITHM,
        "public_key": public_hex(private),
        "key_fingerprint": key_fingerprint(private),
        "signature": private.sign(message).hex(),
    }


def check_message(block: Any, message: bytes, trusted: PublicKeySource, *, what: str) -> str:
    """Check a signature block over ``message`` against the trusted public key.

    Args:
        block: the signature block (:func:`sign_message`), or None when there is none.
        message: the bytes that should have been signed.
        trusted: the public key the signature must be made with.
        what: names the signed thing in messages (a file, say).

    Returns:
        The trusted key's fingerprint.

    Raises:
        IntegrityError: unsigned, signed with another key, or a signature that does not match the content.
    """
    public = load_public_key(trusted)
    expected = key_fingerprint(public)
    if not block:
        raise IntegrityError(f"{what} is not signed; the trusted key {expected[:16]} requires a signature")
    if not isinstance(block, dict) or block.get("algorithm") != ALGORITHM or not isinstance(block.get("signature"), str):
        raise IntegrityError(f"{what}: unreadable signature block (expected an {ALGORITHM} signature)")
    named = block.get("key_fingerprint")
    if named != expected or block.get("public_key") != public_hex(public):
        raise IntegrityError(f"{what} is signed by key {str(named)[:16]}, not by the trusted key {expected[:16]}")
    try:
        public.verify(bytes.fromhex(block["signature"]), message)
    except (InvalidSignature, ValueError):
        raise IntegrityError(f"{what}: the signature by key {expected[:16]} does not match the content (changed after signing)") from None
    return expected


def check_own_key(block: Any, message: bytes, *, what: str) -> str:
    """Check a signature block against the public key it names itself: a signature that is there must hold, whether
    or not anyone pinned a key (a set re-hashed after signing keeps a signature over its old digest).

    This says only that the content is what the key in the block signed, not whose key that is: pin the owner's key
    for that (:func:`check_message`).

    Args:
        block: the signature block (:func:`sign_message`).
        message: the bytes that should have been signed.
        what: names the signed thing in messages (a file, say).

    Returns:
        The fingerprint of the key the block names.

    Raises:
        IntegrityError: an unreadable block, a key fingerprint that is not its public key's, or a signature that
            does not match the content.
    """
    key = block.get("public_key") if isinstance(block, dict) else None
    if not isinstance(key, str) or not _HEX_KEY.match(key):
        raise IntegrityError(f"{what}: unreadable signature block (expected an {ALGORITHM} signature with its 64-hex-digit public key)")
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key))
    except ValueError:
        raise IntegrityError(f"{what}: the signature block's public key is not an {ALGORITHM} key") from None
    if block.get("key_fingerprint") != key_fingerprint(public):
        raise IntegrityError(f"{what}: the signature block names key {str(block.get('key_fingerprint'))[:16]}, not its public key's fingerprint")
    return check_message(block, message, public, what=what)


def set_message(digest: str) -> bytes:
    """The message signed for a fingerprint set whose content SHA-256 (hex) is ``digest``."""
    return SET_CONTEXT + digest.encode("ascii")


def canonical_json(value: Any) -> bytes:
    """The canonical JSON of a record: sorted keys, no spaces, no NaN or infinity, ASCII, UTF-8.

    Raises:
        InputError: the value holds NaN or infinity, or something JSON cannot represent.
    """
    try:
        return hashing_canonical_json(value).encode("utf-8")
    except (ValueError, TypeError) as exc:
        raise InputError(f"the record is not strict JSON and cannot be signed ({exc})") from None


def record_message(record: dict[str, Any]) -> bytes:
    """The message signed for an evidence record: its canonical JSON without the signature block."""
    return RECORD_CONTEXT + canonical_json({k: v for k, v in record.items() if k != SIGNATURE_FIELD})


def sign_record(record: dict[str, Any], key: PrivateKeySource) -> dict[str, Any]:
    """The record with a ``signature`` block over its canonical JSON (any earlier block replaced)."""
    return {**{k: v for k, v in record.items() if k != SIGNATURE_FIELD}, SIGNATURE_FIELD: sign_message(key, record_message(record))}


def check_record(record: Any, trusted: PublicKeySource, *, what: str = "the record") -> str:
    """Check a record's signature against the trusted public key; returns the key's fingerprint.

    Raises:
        IntegrityError: the record is not a JSON object, is unsigned, signed by another key, or changed after signing.
    """
    if not isinstance(record, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    return check_message(record.get(SIGNATURE_FIELD), record_message(record), trusted, what=what)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
