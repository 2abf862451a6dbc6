"""The owner's helper models: a step of its own, shared by ``modelprint owner-models``, ``generate`` and ``evaluate``.

Some schemes read models the owner trains besides the target: independently trained *references* (what an
innocent model looks like), distilled *surrogates* (what a stolen copy looks like) and independently trained
*calibration* models (for thresholds, kept out of any objective). They are built like zoo suspects, by the zoo
code (cached by recipe, resumable, on any executor), in their own folder with a manifest, from seeds that no zoo
preset uses, and are never part of an evaluation zoo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..data import data_key
from ..errors import InputError
from ..fingerprints import OWNER_ROLES
from ..models import ImageModel, load_model
from ..zoo.build import build_zoo
from ..zoo.spec import NEGATIVE, POSITIVE, SuspectSpec, ZooSpec

#: Per role (the keyword of ``generate`` that takes them): the prefix of the models' names, their kind, how they
#: are made and the first seed (zoo presets use seeds below 5000).
ROLES: dict[str, tuple[str, str, str, int]] = {
    "references": ("reference", NEGATIVE, "independent", 5000),
    "surrogates": ("surrogate", POSITIVE, "distill", 6000),
    "calibration": ("calibration", NEGATIVE, "independent", 7000),
}
assert set(ROLES) == set(OWNER_ROLES)


def owner_spec(counts: dict[str, int], *, epochs: int) -> ZooSpec | None:
    """The helper models as a zoo spec (None when there are none).

    Args:
        counts: how many of each role.
        epochs: training epochs of each (as the target's).
    """
    helpers = [
        SuspectSpec(f"{prefix}_{i}", kind, transform, {"epochs": epochs}, first_seed + i)
        for role, (prefix, kind, transform, first_seed) in ROLES.items()
        for i in range(counts.get(role, 0))
    ]
    return ZooSpec(tuple(helpers)) if helpers else None


def build_owner_models(
    counts: dict[str, int], target_path: str | Path, data: str, out: str | Path, *, epochs: int, progress: bool = True, **executor: Any
) -> dict[str, Any] | None:
    """Train (or reuse) the helper models in ``out``; the manifest (see :func:`~modelprint.zoo.build.build_zoo`),
    or None when none are asked for.

    ``executor`` goes to :func:`~modelprint.zoo.build.build_zoo` (``executor``, ``workers``, ``ray_address``, ``device``).
    """
    spec = owner_spec(counts, epochs=epochs)
    if spec is None:
        return None
    return build_zoo(spec, target_path, data, Path(out), progress=progress, **executor)


def read_manifest(folder: str | Path, *, what: str = "folder of the owner's helper models", command: str = "modelprint owner-models") -> dict[str, Any]:
    """The manifest of a folder of models built by the zoo code (here: the helper models of
    :func:`build_owner_models`; ``what`` and ``command`` name another kind in the message), each record's model
    file (and checkpoints) named where it is in ``folder``: the paths a build records are relative to the working
    directory it ran in, and the folder may have moved since.

    Raises:
        InputError: no such folder, or no readable manifest in it.
    """
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{folder}: not a {what} (no manifest.json; make one with '{command}')")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc})") from None
    for record in manifest.get("suspects", []) if isinstance(manifest, dict) else []:
        if isinstance(record, dict) and isinstance(record.get("path"), str):  # where build_zoo writes them
            record["path"] = str(Path(folder) / "suspects" / Path(record["path"]).name)
            for checkpoint in record["checkpoints"] if isinstance(record.get("checkpoints"), list) else []:
                if isinstance(checkpoint, dict) and isinstance(checkpoint.get("file"), str):
                    checkpoint["path"] = str(Path(folder) / "checkpoints" / checkpoint["file"])
    return manifest


def check_made_for(manifest: dict[str, Any], *, target_sha256: str, data: str, where: str, models: str = "helper models") -> None:
    """Refuse a folder of models made for another target, or trained on other data (named by any path).

    Raises:
        InputError: in one line, naming the folder and what does not fit.
    """
    made_for = manifest.get("target", {}).get("sha256")
    if made_for != target_sha256:
        raise InputError(f"{where}: its {models} were made for target {str(made_for)[:12]}..., not this one ({target_sha256[:12]}...)")
    if manifest.get("data") is not None and data_key(manifest["data"]) != data_key(data):
        raise InputError(f"{where}: its {models} were trained on {manifest.get('data')!r}, not {data!r}")


def load_helpers(manifest: dict[str, Any], *, roles: tuple[str, ...] = OWNER_ROLES, device: str | torch.device = "cpu") -> dict[str, list[ImageModel]]:
    """The helper models of a manifest, by role (only ``roles``), each list in seed order."""
    role_of_prefix = {prefix: role for role, (prefix, *_) in ROLES.items()}
    helpers: dict[str, list[ImageModel]] = {role: [] for role in roles}
    for record in manifest.get("suspects", []):
        role = role_of_prefix.get(record["name"].rpartition("_")[0])  # reference_0 -> references
        if role in helpers:
            helpers[role].append(load_model(record["path"], device=device))
    return helpers


def check_manifest(manifest: dict[str, Any], *, target_sha256: str, data: str, needed: dict[str, int], where: str) -> None:
    """Refuse a helper folder made for another target or data, or holding fewer models of a role than needed.

    Raises:
        InputError: in one line, naming the folder and what does not fit.
    """
    check_made_for(manifest, target_sha256=target_sha256, data=data, where=where)
    have = {role: 0 for role in ROLES}
    role_of_prefix = {prefix: role for role, (prefix, *_) in ROLES.items()}
    for record in manifest.get("suspects", []):
        role = role_of_prefix.get(record["name"].rpartition("_")[0])
        if role:
            have[role] += 1
    short = {role: (have[role], count) for role, count in needed.items() if have.get(role, 0) < count}
    if short:
        text = ", ".join(f"{role}: {got} of {count}" for role, (got, count) in short.items())
        raise InputError(f"{where}: too few helper models for this configuration ({text}); make them with 'modelprint owner-models'")
