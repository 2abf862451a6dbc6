"""The kit file, ``KIT/kit.json``: what ``protect`` made and what ``check`` trusts.

It names the target (its weights' SHA-256), every fingerprint set with its content SHA-256 (what the owner publishes
or timestamps as a commitment), the null models' scores under each set and mode (the combined verdict's
calibration), and how each part was made. It is signed by the owner's key; ``check`` refuses a kit whose file, or any
set it names, was edited, re-signed by another key or swapped, before anything is sent to a suspect.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, IntegrityError
from ..fingerprints import FingerprintSet
from ..integrity import signing

FORMAT = "modelprint-kit/1"
KIT_FILE = "kit.json"
KIT_CONTEXT = b"modelprint kit v1\n"
MODES = ("white-box", "black-box")
FINGERPRINTS, WATERMARK = "fingerprints", "watermark"  # the kinds of a kit's sets
_SHA = re.compile(r"[0-9a-f]{64}")
_MAX_BYTES = 16 * 2**20


def kit_message(kit: dict[str, Any]) -> bytes:
    """The message the owner's key signs: the kit's canonical JSON without its signature block."""
    return KIT_CONTEXT + signing.canonical_json({k: v for k, v in kit.items() if k != signing.SIGNATURE_FIELD})


def sign_kit(kit: dict[str, Any], key: signing.PrivateKeySource) -> dict[str, Any]:
    """The kit with a signature block over :func:`kit_message` (any earlier block replaced)."""
    return {**{k: v for k, v in kit.items() if k != signing.SIGNATURE_FIELD}, signing.SIGNATURE_FIELD: signing.sign_message(key, kit_message(kit))}


@dataclass(frozen=True)
class KitSet:
    """One set of a checked kit: its file, digest, scheme and the null models' scores per mode."""

    name: str
    path: Path
    sha256: str
    scheme: str
    configuration: str
    null: dict[str, list[float]]  # empty for a watermark key, decided by its own exact test
    kind: str = "fingerprints"  # or "watermark"


@dataclass(frozen=True)
class Kit:
    """A kit read and checked by :func:`read_kit`."""

    folder: Path
    data: dict[str, Any]
    sha256: str  # of the kit file's bytes that were checked
    key_fingerprint: str
    public_key: str
    sets: tuple[KitSet, ...]

    @property
    def target_sha256(self) -> str:
        return str(self.data.get("target", {}).get("sha256"))

    @property
    def null_models(self) -> int:
        return int(self.data["null_models"]["count"])

    def load_set(self, entry: KitSet) -> FingerprintSet:
        """The set (or watermark key), refused unless it is the one the kit names and signed by the kit's key."""
        from ..watermarks import WatermarkKey

        kind = WatermarkKey if entry.kind == WATERMARK else FingerprintSet
        return kind.load(entry.path, trusted_key=self.public_key, expect_sha256=entry.sha256)


def _field(container: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise IntegrityError(f"{where}: no valid '{key}' (not a kit made by 'modelprint protect', or edited)")
    return value


def _scores(values: Any, count: int, where: str) -> list[float]:
    if not isinstance(values, list) or len(values) != count or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1 for v in values):
        raise IntegrityError(f"{where}: the null scores must be {count} finite numbers in [0, 1]")
    return [float(v) for v in values]


def read_kit(folder: str | os.PathLike, *, trusted_key: signing.PublicKeySource | None = None, load_sets: bool = True) -> Kit:
    """Read ``folder/kit.json`` and check it before anything is sent to a suspect.

    Args:
        folder: the kit's folder (made by ``modelprint protect``).
        trusted_key: the owner's public key, when the caller pins it: a kit signed by another key is refused.
        load_sets: also load every set and check that it is the one named (digest) and signed by the kit's key.

    Returns:
        The checked kit.

    Raises:
        InputError: no kit there.
        IntegrityError: an unreadable or unsigned kit, a signature that does not hold or is not the trusted key's,
            a set missing, edited, swapped or signed by another key.
    """
    from ..checks import input_folder

    folder = input_folder(folder, "--kit")
    path = folder / KIT_FILE
    if not path.is_file():
        raise InputError(f"--kit {folder}: no {KIT_FILE} (make a kit with 'modelprint protect')")
    if path.stat().st_size > _MAX_BYTES:
        raise IntegrityError(f"{path}: {path.stat().st_size} bytes, more than a kit file holds ({_MAX_BYTES})")
    raw = path.read_bytes()  # read once: what is checked is what the digest names

    def not_json(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=not_json)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise IntegrityError(f"{path}: not a readable kit ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IntegrityError(f"{path}: not a kit of format {FORMAT}")
    block = data.get(signing.SIGNATURE_FIELD)
    if not block:
        raise IntegrityError(f"{path} is not signed: 'modelprint protect' signs every kit (--sign KEY or --new-key)")
    message = kit_message(data)
    fingerprint = signing.check_own_key(block, message, what=str(path))
    if trusted_key is not None:
        fingerprint = signing.check_message(block, message, trusted_key, what=str(path))
    if not _SHA.fullmatch(_field(_field(data, "target", dict, str(path)), "sha256", str, f"{path} target")):
        raise IntegrityError(f"{path}: the target's SHA-256 is not 64 hex digits")
    count = _field(_field(data, "null_models", dict, str(path)), "count", int, f"{path} null_models")
    if count < 1:
        raise IntegrityError(f"{path}: a kit needs null models (got {count})")
    entries = _field(data, "sets", list, str(path))
    if not any(isinstance(e, dict) and e.get("kind", FINGERPRINTS) == FINGERPRINTS for e in entries):
        raise IntegrityError(f"{path}: the kit holds no fingerprint set")
    sets, names, digests = [], set(), set()
    for i, entry in enumerate(entries):
        where = f"{path} sets[{i}]"
        name = _field(entry, "name", str, where)
        file = _field(entry, "file", str, where)
        digest = _field(entry, "sha256", str, where)
        if not _SHA.fullmatch(digest) or name in names or digest in digests:
            raise IntegrityError(f"{where}: a bad or repeated name or SHA-256")
        relative = Path(file)
        if relative.is_absolute() or ".." in relative.parts:
            raise IntegrityError(f"{where}: the set's file must lie inside the kit's folder, got {file!r}")
        kind = entry.get("kind", FINGERPRINTS)
        if kind not in (FINGERPRINTS, WATERMARK):
            raise IntegrityError(f"{where}: a set is of kind {FINGERPRINTS} or {WATERMARK}, got {kind!r}")
        null = _field(entry, "null", dict, where)
        if kind == WATERMARK and null:
            raise IntegrityError(f"{where}: a watermark key is decided by its own exact test; the kit gives it no null scores")
        if kind == FINGERPRINTS and (not null or set(null) - set(MODES)):
            raise IntegrityError(f"{where}: null scores must be given per mode ({', '.join(MODES)})")
        names.add(name)
        digests.add(digest)
        sets.append(KitSet(name, folder / relative, digest, _field(entry, "scheme", str, where), _field(entry, "configuration", str, where),
                           {mode: _scores(values, count, f"{where} null {mode}") for mode, values in null.items()}, kind))
    kit = Kit(folder, data, hashlib.sha256(raw).hexdigest(), fingerprint, block["public_key"], tuple(sets))
    if load_sets:
        for entry in sets:
            if not entry.path.is_file():
                raise IntegrityError(f"{path}: the set {entry.name} ({entry.path}) is missing")
            the_set = kit.load_set(entry)
            if the_set.scheme != entry.scheme:
                raise IntegrityError(f"{entry.path}: a {the_set.scheme} set where the kit names {entry.scheme}")
            if the_set.target.get("sha256") != kit.target_sha256:
                raise IntegrityError(f"{entry.path}: a set of another target than the kit's")
    return kit
