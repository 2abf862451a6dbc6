"""``modelprint check``: one suspect against every set of a kit, one evidence record per set, and one combined
verdict with its false-positive rate (:mod:`.combine`), written as a bundle that ``records check`` checks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..access import BLACK_BOX, WHITE_BOX
from ..errors import InputError, IntegrityError
from ..evidence.record import strict_json_data, write_record
from ..evidence.verification import verify_suspect
from ..fingerprints import SCHEMES
from ..watermarks import WATERMARKS, WatermarkKey
from ..integrity import signing
from ..integrity.hashing import file_sha256
from .combine import combine
from .file import WATERMARK, Kit, KitSet, read_kit

BUNDLE_FILE = "verdict.json"
BUNDLE_VERSION = 1


@dataclass(frozen=True)
class Checked:
    """What :func:`check_suspect` did: the bundle (the combined verdict and one entry per set) and where it went."""

    bundle: dict[str, Any]
    path: Path


def _mode(kit_set: KitSet, url: str | None, file_mode: str | None) -> str:
    """The mode a set asks the suspect in: black-box behind a server; for a file the mode asked for when the set's
    scheme has it, else white-box where it has it (a file can always be asked)."""
    modes = (WATERMARKS if kit_set.kind == WATERMARK else SCHEMES)[kit_set.scheme].modes
    if url is not None:
        return BLACK_BOX
    if file_mode in modes:
        return file_mode  # type: ignore[return-value]
    return WHITE_BOX if WHITE_BOX in modes else BLACK_BOX


def check_suspect(
    kit: str | os.PathLike | Kit,
    *,
    suspect: str | os.PathLike | None = None,
    url: str | None = None,
    model_name: str | None = None,
    api: Any = None,
    out: str | os.PathLike,
    mode: str | None = None,
    alpha: float = 0.05,
    budget: int | None = None,
    trusted_key: signing.PublicKeySource | None = None,
    sign: signing.PrivateKeySource | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    fresh: bool = False,
    log: Callable[[str], None] = lambda line: None,
    **client_options: Any,
) -> Checked:
    """Verify one suspect with every set of a kit and write the bundle ``out/verdict.json``.

    Args:
        kit: the kit's folder (checked first: see :func:`~modelprint.kit.file.read_kit`) or a kit already read.
        suspect: a model file; or ``url`` with ``model_name`` (Open Inference Protocol) or ``api`` (any JSON API).
        out: the bundle's folder: ``verdict.json``, and ``records/`` with one record and (black-box) one query
            journal per set, so that a killed check resumes without asking answered queries again.
        mode: for a file suspect, ``white-box`` or ``black-box`` for every set [default: white-box where a scheme
            has it]; a URL is always black-box.
        alpha: the false-positive rate of the combined verdict.
        budget: most images all sets together may use (answers from journals included).
        trusted_key: the owner's public key, when pinned: a kit signed by another key is refused.
        sign: a private key that signs each record and the bundle.
        fresh: ask the suspect again instead of resuming journals.
        **client_options: for a URL (see :func:`~modelprint.evidence.verification.verify_suspect`).

    Returns:
        The bundle and its path.

    Raises:
        InputError, IntegrityError: a bad kit or suspect (before anything is sent), or what a verification raises.
    """
    if (suspect is None) == (url is None):
        raise InputError("give either --suspect FILE or --url URL (with --model-name or --api)")
    if mode is not None and mode not in (WHITE_BOX, BLACK_BOX):
        raise InputError(f"--mode must be {WHITE_BOX} or {BLACK_BOX}, got {mode!r}")
    if url is not None and mode == WHITE_BOX:
        raise InputError("a suspect behind a server can only be verified in black-box mode")
    from ..checks import number, output_folder

    number(alpha, "--alpha", above=0, below=1)
    if budget is not None:
        number(budget, "--budget", minimum=0, integer=True)
    out = output_folder(out, "--out")
    if trusted_key is not None:
        trusted_key = signing.load_public_key(trusted_key)
    checked = kit if isinstance(kit, Kit) else read_kit(kit, trusted_key=trusted_key)  # every set checked: nothing sent yet
    if sign is not None:
        sign = signing.load_private_key(sign)
    if suspect is not None and mode is None:
        from ..architectures import ONNX_RUNTIME
        from ..models import read_spec

        if read_spec(suspect).arch == ONNX_RUNTIME:  # an ONNX graph run as it is: it can only be asked
            mode = BLACK_BOX
    modes = {entry.name: _mode(entry, url, mode) for entry in checked.sets}
    missing = [f"{entry.name} ({modes[entry.name]})" for entry in checked.sets if entry.kind != WATERMARK and modes[entry.name] not in entry.null]
    if missing:
        raise InputError(f"the kit has no null scores for {', '.join(missing)}: a set can only be judged in a mode it was calibrated in")
    records = out / "records"
    remaining = budget
    scores: dict[str, float] = {}
    nulls: dict[str, list[float]] = {}
    exact: dict[str, float] = {}  # a watermark key's own p-value
    entries: list[dict[str, Any]] = []
    entries_seen: list[dict[str, Any]] = []  # the suspect's identity as each record names it
    for entry in checked.sets:
        m = modes[entry.name]
        log(f"{entry.name} ({m})")
        marked = entry.kind == WATERMARK
        done = verify_suspect(entry.path, suspect=suspect, url=url, model_name=model_name, api=api, mode=m, budget=remaining, batch_size=batch_size,
                              records=records, null=None if marked else entry.null[m], alpha=alpha, device=device, trusted_key=checked.public_key,
                              expect_sha256=entry.sha256, sign=sign, new_journal=fresh, record=records / f"{entry.name}.{m}.json",
                              **({"kind": WatermarkKey} if marked else {}), **(client_options if url else {}))
        queries = done.record.get("queries") or {}
        used = int(queries.get("answered_from_journal") or 0) + int(queries.get("sent_this_run") or 0)
        if remaining is not None:
            remaining = max(0, remaining - used)
        key = f"{entry.name} ({m})"
        if marked:
            exact[key] = exact_p_value(done.record, key)
        else:
            scores[key], nulls[key] = done.result.matching_score, entry.null[m]
        entries.append({"set": entry.name, "kind": entry.kind, "scheme": entry.scheme, "configuration": entry.configuration, "mode": m,
                        "score": done.result.matching_score, "verdict": done.record.get("verdict"), "images_used": used,
                        "record": str(done.record_path.relative_to(out)), "record_sha256": file_sha256(done.record_path),
                        "null_scores": None if marked else entry.null[m]})
        named = done.record.get("suspect")
        if done.result.mode != m or (entries_seen and named != entries_seen[0]):
            raise IntegrityError(f"{entry.name}: the suspect answered in another mode, or is not the one the other sets asked (a file changed during the check?)")
        entries_seen.append(named)
    verdict = combine(scores, nulls, exact=exact, alpha=alpha)
    identity = entries_seen[0]
    bundle: dict[str, Any] = {
        "bundle_version": BUNDLE_VERSION,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kit": {"folder": str(checked.folder), "sha256": checked.sha256, "key_fingerprint": checked.key_fingerprint,
                "target": checked.data.get("target"), "profile": (checked.data.get("profile") or {}).get("name")},
        "suspect": identity,
        "sets": entries,
        "combined": verdict.to_dict(),
        "statement": statement(verdict.to_dict()),
    }
    bundle = strict_json_data(bundle)
    if sign is not None:
        bundle = signing.sign_record(bundle, sign)
    return Checked(bundle, write_record(bundle, out / BUNDLE_FILE))


def exact_p_value(record: dict[str, Any], what: str) -> float:
    """A watermark record's own p-value (its scheme's exact test).

    Raises:
        IntegrityError: a record without one.
    """
    p = (record.get("verdict") or {}).get("p_value")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise IntegrityError(f"{what}: the watermark's record gives no exact p-value")
    return float(p)


def statement(combined: dict[str, Any]) -> str:
    """The combined verdict in one sentence a non-specialist can read."""
    k, p, alpha = combined["null_models"], combined["p_value"], combined["alpha"]
    if combined["pirated"]:
        evidence = "fingerprints and watermark key better than unmarked, independently trained models can" if combined.get("exact") else \
            "fingerprints better than independently trained models do"
        head = f"PIRATED: the suspect matches the owner's {evidence} (p = {p:.3g} <= {alpha:g})"
    else:
        head = f"NOT SHOWN PIRATED: the suspect does not stand out from independently trained models (p = {p:.3g} > {alpha:g})"
    floor = f" (the smallest p-value this kit can give is {combined['floor']:.3g})" if combined["floor"] > 0 else ""
    tail = f"{head}. An independent model like the owner's {k} null models is declared pirated by this rule with probability at most {alpha:g}{floor}."
    if combined["floor"] > alpha:
        tail += f" This kit cannot declare anything at {alpha:g}: make it with --null-models {math.ceil(1 / alpha) - 1} or more."
    return tail


def check_bundle(path: str | os.PathLike, trusted_key: signing.PublicKeySource, *, kit: str | os.PathLike | None = None) -> list[str]:
    """Check a check's bundle as a third party: the bundle and every record it names are signed by the trusted key
    and unchanged, each record is the file the bundle names (SHA-256) and says what the bundle says, and the combined
    verdict is the one the rule computes from them; given the kit, the records' sets and null scores are the kit's.

    Returns:
        One line per fact checked.

    Raises:
        IntegrityError: anything that does not hold.
        InputError: a file that cannot be read.
    """
    from ..evidence.check import check_record_file, read_record

    path = Path(path)
    bundle = read_record(path)
    public = signing.load_public_key(trusted_key)
    key = signing.check_record(bundle, public, what=str(path))
    done = [f"bundle signed by the trusted key {key[:16]} and unchanged since"]
    entries = bundle.get("sets")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise IntegrityError(f"{path}: a bundle lists its sets")
    listed = read_kit(kit, trusted_key=public) if kit is not None else None
    if listed is not None:
        if listed.sha256 != (bundle.get("kit") or {}).get("sha256"):
            raise IntegrityError(f"{path}: the bundle was made with another kit than {kit}")
        done.append(f"made with the kit {kit}")
    scores, nulls, exact = {}, {}, {}
    for entry in entries:
        relative = Path(str(entry.get("record")))
        if relative.is_absolute() or ".." in relative.parts:
            raise IntegrityError(f"{path}: a record must lie inside the bundle's folder, got {relative}")
        record_path = path.parent / relative
        if not record_path.is_file() or file_sha256(record_path) != entry.get("record_sha256"):
            raise IntegrityError(f"{path}: {relative} is missing or is not the record the bundle names")
        check_record_file(record_path, public)
        record = read_record(record_path)
        if record.get("matching_score") != entry.get("score") or record.get("mode") != entry.get("mode") or record.get("suspect") != bundle.get("suspect"):
            raise IntegrityError(f"{path}: {relative} does not say what the bundle says of it")
        name = f"{entry.get('set')} ({entry.get('mode')})"
        marked = entry.get("kind") == WATERMARK
        if listed is not None:
            kit_set = next((s for s in listed.sets if s.name == entry.get("set")), None)
            if (kit_set is None or kit_set.sha256 != record["fingerprints"]["sha256"] or (kit_set.kind == WATERMARK) != marked
                    or kit_set.null.get(entry["mode"]) != entry.get("null_scores")):
                raise IntegrityError(f"{path}: {relative} used a set or null scores the kit does not hold")
        if marked:
            exact[name] = exact_p_value(record, str(relative))
        else:
            scores[name], nulls[name] = entry["score"], entry.get("null_scores")
        done.append(f"{relative}: signed, unchanged, score {entry['score']:.3f}")
    claimed = bundle.get("combined") or {}
    again = combine(scores, nulls, exact=exact, alpha=claimed.get("alpha", 0.05)).to_dict()
    if again != claimed:
        raise IntegrityError(f"{path}: the combined verdict is not the one its records give (p {again['p_value']:.4g})")
    done.append(f"combined verdict recomputed: p = {again['p_value']:.4g}, {'PIRATED' if again['pirated'] else 'not shown pirated'} at alpha {again['alpha']:g}")
    return done
