"""The owner's training zoo: pirated and independent models a learning scheme (MetaV) is trained on.

Built like an evaluation zoo, by the zoo code (cached by recipe, resumable, on any executor), from its own spec
(:func:`~modelprint.zoo.spec.training_zoo`) and seeds no preset evaluation zoo uses, with checkpoints of the models
it trains kept as extra models (LiteGuard's remedy for a learner that overfits few models). A training zoo must be
disjoint from the zoo a scheme is evaluated on: :func:`check_disjoint` refuses one that shares a seed or a recipe
with it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..journal.lines import canonical_json
from ..models import ImageModel, load_model, read_spec
from ..zoo.build import build_zoo
from ..zoo.spec import NEGATIVE, POSITIVE, ZooSpec, training_recipe, training_zoo
from .owner import check_made_for, read_manifest

#: Checkpoints kept of every model the training zoo trains for two epochs or more (evenly spaced epochs).
CHECKPOINTS = 2


def build_training_zoo(size: int, target_path: str | Path, data: str, out: str | Path, *, epochs: int, progress: bool = True,
                       **executor: Any) -> dict[str, Any]:
    """Train (or reuse) a training zoo of ``size`` models in ``out`` and return its manifest (see
    :func:`~modelprint.zoo.build.build_zoo`); ``executor`` goes there too."""
    spec = read_spec(target_path)
    return build_zoo(training_zoo(size, train_epochs=epochs, arch=spec.arch, task=spec.task), target_path, data, Path(out), checkpoints=CHECKPOINTS, role="training",
                     progress=progress, **executor)


def read_training_zoo(folder: str | Path, *, target_sha256: str, data: str) -> dict[str, Any]:
    """The manifest of a training zoo made for this target and data.

    Raises:
        InputError: no manifest, a folder that is not a training zoo, or one made for another target or data.
    """
    manifest = read_manifest(folder, what="training zoo", command="modelprint training-zoo")
    if manifest.get("role") != "training":
        raise InputError(f"{folder}: an evaluation zoo, not a training zoo (make one with 'modelprint training-zoo')")
    check_made_for(manifest, target_sha256=target_sha256, data=data, where=str(folder), models="models")
    return manifest


def check_disjoint(training: dict[str, Any], evaluation: ZooSpec | dict[str, Any]) -> None:
    """Refuse a training zoo that shares a seed, or a model's recipe or weights, with the evaluation zoo.

    Args:
        training: the training zoo's manifest.
        evaluation: the evaluation zoo's spec, or its manifest (whose records add the weights' hashes).

    Raises:
        InputError: naming the shared seeds or models.
    """
    records = training.get("suspects", [])
    others = [s.to_dict() for s in evaluation.suspects] if isinstance(evaluation, ZooSpec) else evaluation.get("suspects", [])
    seeds = sorted({r["seed"] for r in records} & {s["seed"] for s in others})
    if seeds:
        raise InputError(f"the training zoo shares seeds {seeds[:5]} with the evaluation zoo: a scheme must not be trained on the models it is evaluated on")
    recipe = lambda r: (r["transform"], canonical_json(r["params"]), r["seed"])  # noqa: E731
    recipes = {recipe(s) for s in others}
    shared = sorted({r["name"] for r in records if recipe(r) in recipes})
    weights = {s.get("sha256") for s in others} - {None}
    shared += sorted(r["name"] for r in records if r.get("sha256") in weights)
    if shared:
        raise InputError(f"the training zoo shares models with the evaluation zoo ({', '.join(shared[:5])}): a scheme must not be trained on the models it is evaluated on")


def training_records(manifest: dict[str, Any], size: int, *, checkpoints: bool, leave_out: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records of the models a scheme reading ``size`` training models learns from: the first ``size // 2``
    positives and ``size - size // 2`` negatives of the zoo (those a zoo of that size holds), each followed by its
    checkpoints when ``checkpoints``; positives made by a recipe in ``leave_out`` (:func:`training_recipe`) are
    passed over, and the next ones taken instead (leave-one-recipe-out needs a zoo larger than ``size``).

    Returns:
        (positives, negatives)

    Raises:
        InputError: the zoo holds fewer models of a kind than ``size`` needs.
    """
    wanted = {POSITIVE: size // 2, NEGATIVE: size - size // 2}
    chosen: dict[str, list[dict[str, Any]]] = {POSITIVE: [], NEGATIVE: []}
    for record in manifest.get("suspects", []):
        kind = record.get("kind")
        if kind == POSITIVE and training_recipe(str(record.get("name", ""))) in leave_out:
            continue
        if kind in chosen and len([r for r in chosen[kind] if "checkpoint_of" not in r]) < wanted[kind]:
            chosen[kind].append(record)
            if checkpoints:
                chosen[kind] += [{**c, "name": f"{record['name']}@e{c['epoch']}", "checkpoint_of": record["name"]} for c in record.get("checkpoints", [])]
    for kind, count in wanted.items():
        have = len([r for r in chosen[kind] if "checkpoint_of" not in r])
        if have < count:
            without = f" without recipes {', '.join(leave_out)}" if leave_out else ""
            raise InputError(f"the training zoo holds {have} {kind} models{without}, {count} needed for {size} training models; build it larger than --size {size}, or learn from fewer (--set training_models={2 * have})")
    return chosen[POSITIVE], chosen[NEGATIVE]


def records_sha256(records: list[dict[str, Any]]) -> str:
    """SHA-256 of what identifies the models read (names and weights' hashes, in order): what a set records of
    its training zoo, so that a record names the models its verifier learnt from."""
    return hashlib.sha256(canonical_json([[r["name"], r["sha256"]] for r in records]).encode()).hexdigest()


def training_helpers(manifest: dict[str, Any], size: int, *, checkpoints: bool, device: str | torch.device = "cpu",
                     leave_out: tuple[str, ...] = ()) -> tuple[dict[str, list[ImageModel]], dict[str, Any]]:
    """The models :func:`training_records` chooses, loaded, as :meth:`~modelprint.fingerprints.FingerprintScheme.generate`
    takes them (the independent ones as ``references``, the pirated ones as ``surrogates``), and what a set records
    of them (``training_zoo_sha256``: :func:`records_sha256`)."""
    positives, negatives = training_records(manifest, size, checkpoints=checkpoints, leave_out=leave_out)
    load = lambda records: [load_model(r["path"], device=device) for r in records]  # noqa: E731
    return {"references": load(negatives), "surrogates": load(positives)}, {"training_zoo_sha256": records_sha256(positives + negatives)}

def cost(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a training zoo cost: its models, their checkpoints and the one-core seconds of building them."""
    records = manifest.get("suspects", [])
    return {
        "models": len(records),
        "positives": sum(r["kind"] == POSITIVE for r in records),
        "checkpoints": sum(len(r.get("checkpoints", [])) for r in records),
        "build_seconds": sum(r["build_seconds"] for r in records),
    }
