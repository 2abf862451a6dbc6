"""Replaying an evidence record: ask the suspect again and compare with what the record and its journal say.

A record and its query journal are files: whoever holds them can rewrite them and recompute every hash in them
(the journal's hashes carry no key, and an owner signs whatever record they like). What only the suspect can
confirm is that it gives the answers the journal holds. :func:`replay_record` therefore

1. checks the record (its signature, when a trusted key is given) and that the fingerprint set (or watermark key)
   given is the one it names;
2. for a black-box record: reads the journal it names (every line against its hash chain), checks that its bytes
   are the ones the record states (``queries.log.sha256``), and runs the verification again on a copy of it,
   bound to the suspect given: a model file's answers are all computed again, a server is asked again for every
   journalled image or a seeded random sample of them (``sample``, ``seed``), and any answer that differs from the
   journal's ends the replay;
3. for a white-box record: verifies the model file again (deterministic);
4. compares the matching score with the record's.

The record counts only when the replay matches (docs/evidence.md says what a record alone proves and what only a
replay does).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..access import BLACK_BOX, WHITE_BOX, BlackBox, WhiteBox
from ..errors import InputError, IntegrityError, ModelprintError
from ..fingerprints import FingerprintSet, scheme_for
from ..models import load_model
from ..integrity.signing import PublicKeySource
from .check import check_record_file, load_set_or_key, read_record
from .record import file_identity

#: The largest difference between the record's matching score and the replay's that still counts as the same.
SCORE_TOLERANCE = 1e-6


@dataclass
class Replay:
    """What :func:`replay_record` found (it raises instead when the replay does not match).

    Attributes:
        mode: the record's mode.
        matching_score: the score the replay computed (equal to the record's).
        journalled: answers the journal held for this verification (black-box).
        asked_again: of those, how many the suspect was asked again (all of a file's).
        max_difference: the largest difference between a journalled answer and the suspect's answer now.
        checked: one line per fact established, for display.
    """

    mode: str
    matching_score: float
    journalled: int = 0
    asked_again: int = 0
    max_difference: float = 0.0
    checked: list[str] = field(default_factory=list)


def _load_set(path: str | os.PathLike, digest: str | None) -> FingerprintSet:
    loaded = load_set_or_key(path)
    if loaded.sha256() != digest:
        raise IntegrityError(f"{path} is not the fingerprint set the record names ({str(digest)[:16]}...)")
    return loaded


def replay_record(
    path: str | os.PathLike,
    *,
    fingerprints: str | os.PathLike,
    suspect: str | os.PathLike | None = None,
    url: str | None = None,
    model_name: str | None = None,
    journal: str | os.PathLike | None = None,
    sample: int | None = None,
    seed: int = 0,
    trusted_key: PublicKeySource | None = None,
    device: str = "cpu",
    **client_options: Any,
) -> Replay:
    """Replay an evidence record against the suspect (see the module's description).

    Args:
        path: the record.
        fingerprints: the fingerprint set (or watermark key) the record names.
        suspect: the suspect model file; or ``url`` and ``model_name`` of the server (black-box records only).
        journal: the record's query journal [default: the path the record names].
        sample: ask the server again for this many journalled images drawn with ``seed`` [default: every one]; a
            model file is always computed again in full.
        seed: seeds the sample's draw.
        trusted_key: also check the record's signature against the owner's public key.
        device: torch device for a model file.
        **client_options: for a URL (see :class:`~modelprint.serving.client.OipClient`).

    Returns:
        What matched.

    Raises:
        IntegrityError: the record, its journal or the suspect's answers do not match.
        InputError: bad arguments or unreadable files.
    """
    if (suspect is None) == (url is None):
        raise InputError("a replay needs the suspect: --suspect FILE, or --url URL with --model-name")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise InputError(f"--sample must be a whole number >= 1, got {sample}")
    record = read_record(path)
    if url is not None and not model_name and _api_mapping(record) is None:
        raise InputError("--url needs --model-name: the suspect's model name on the server (a record made through a "
                         "JSON API names its own mapping)")
    checked: list[str] = []
    if trusted_key is not None:
        checked += check_record_file(path, trusted_key).checked
    named = record.get("fingerprints") if isinstance(record.get("fingerprints"), dict) else {}
    the_set = _load_set(fingerprints, named.get("sha256"))
    checked.append(f"{fingerprints} is the fingerprint set the record names")
    mode, claimed = record.get("mode"), record.get("matching_score")
    if mode not in (WHITE_BOX, BLACK_BOX) or isinstance(claimed, bool) or not isinstance(claimed, (int, float)):
        raise IntegrityError(f"{path}: not a verification record (mode {mode!r}, matching score {claimed!r})")
    if mode == WHITE_BOX:
        if suspect is None:
            raise InputError(f"{path} is a white-box record: replay it with --suspect FILE, the model file it names")
        _same_suspect(record, file_identity(suspect), path)
        result = scheme_for(the_set).verify(WhiteBox(load_model(suspect, device=device)), the_set, mode=mode)
        done = Replay(mode, result.matching_score, checked=checked)
    else:
        done = _replay_black_box(record, the_set, path, suspect=suspect, url=url, model_name=model_name, journal=journal,
                                 sample=sample, seed=seed, device=device, checked=checked, **client_options)
    if not math.isclose(done.matching_score, float(claimed), abs_tol=SCORE_TOLERANCE):
        raise IntegrityError(f"{path}: the record states matching score {float(claimed):.6f}, the suspect gives "
                             f"{done.matching_score:.6f} when asked again: the record does not hold")
    done.checked.append(f"matching score {done.matching_score:.6f} reproduced")
    return done


def _same_suspect(record: dict[str, Any], identity: dict[str, Any], path: Any) -> None:
    named = record.get("suspect") if isinstance(record.get("suspect"), dict) else {}
    if identity.get("kind") == "file" and named.get("sha256") != identity.get("sha256"):
        raise IntegrityError(f"{path}: the record names suspect {str(named.get('sha256'))[:16]}..., the file given is "
                             f"{str(identity.get('sha256'))[:16]}...")


def _replay_black_box(record: dict[str, Any], the_set: FingerprintSet, path: Any, *, suspect: Any, url: str | None,
                      model_name: str | None, journal: Any, sample: int | None, seed: int, device: str,
                      checked: list[str], **client_options: Any) -> Replay:
    queries = record.get("queries") if isinstance(record.get("queries"), dict) else {}
    log = queries.get("log") if isinstance(queries.get("log"), dict) else {}
    journal = Path(journal or log.get("path") or "")
    if not journal.is_file():
        raise InputError(f"{path}: its query journal {journal} is not there; give it with --journal")
    digest = hashlib.sha256(journal.read_bytes()).hexdigest()
    if digest != log.get("sha256"):
        raise IntegrityError(f"{journal} is not the query journal the record names (SHA-256 {digest[:16]}..., the record "
                             f"states {str(log.get('sha256'))[:16]}...)")
    checked.append(f"{journal} is the query journal the record names")
    client = None
    with tempfile.TemporaryDirectory(prefix="modelprint-replay-") as folder:
        copy = Path(folder) / "journal.jsonl"
        shutil.copyfile(journal, copy)
        options: dict[str, Any] = dict(journal=copy, fingerprints_sha256=the_set.sha256(), probe_size=sample or 10**9,
                                       probe_seed=seed)
        try:
            api = _api_mapping(record)
            if url is not None and api is not None:  # asked again as the record says it was asked
                from ..serving.json_api import ApiMapping, JsonApiClient

                mapping = ApiMapping.from_dict(api, f"{path}: the record's API mapping")
                client = JsonApiClient(url, mapping, **{k: v for k, v in client_options.items() if k != "output"})
                box = BlackBox.json_api(client, **options)
            elif url is not None:
                from ..serving.client import OipClient

                client = OipClient(url, model_name, **client_options)  # type: ignore[arg-type]
                box = BlackBox.http(url, model_name, client=client, **options)  # type: ignore[arg-type]
            else:
                identity = file_identity(suspect)
                _same_suspect(record, identity, path)
                box = WhiteBox(load_model(suspect, device=device)).black_box(the_set.task_adapter(), identity=identity, **options)
            with box:
                held = len(box.journal or ())
                if held == 0:
                    raise IntegrityError(f"{journal} holds no answer: there is nothing to replay")
                result = scheme_for(the_set).verify(box, the_set, mode=BLACK_BOX)
                if url is not None:
                    box.confirm_resumed(None, at_least=sample or held)
                asked = box.rechecked if url is None else (box.probe or {}).get("images", 0)
                difference = float((box.probe or {}).get("max_difference", 0.0))
        except ModelprintError as exc:  # name the journal given, not the copy that is gone with this function
            raise type(exc)(str(exc).replace(str(copy), str(journal))) from None
        finally:
            if client is not None:
                client.close()
    what = "computed again from the model file" if url is None else f"asked again of {url} (seed {seed})"
    checked.append(f"{asked} of {held} journalled answers {what}: all as journalled")
    return Replay(BLACK_BOX, result.matching_score, held, asked, difference, checked)


def _api_mapping(record: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON API mapping a record's suspect was asked through, when it was (its settings, as recorded)."""
    suspect = record.get("suspect") if isinstance(record.get("suspect"), dict) else {}
    api = suspect.get("api")
    return api if isinstance(api, dict) else None
