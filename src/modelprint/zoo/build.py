"""Building a suspect zoo: resumable, with a manifest, on any executor.

Each suspect is a model file ``OUT/suspects/NAME.safetensors`` whose metadata records its recipe (the suspect's
spec, the parent's weight hash, the data) and provenance (transform, parameters, seed, test metric). A suspect
whose file exists with the same recipe is reused, so an interrupted build continues where it stopped and a changed
spec or target rebuilds only what changed. ``OUT/manifest.json`` is rewritten after every finished suspect; it
lists every model the folder holds for the same target and data, those of earlier builds of other specs too
(marked ``earlier_spec``): a build of fewer models (say, the helper roles one scheme reads) never drops the others.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data import DataSplits, data_key, load_data, same_recipe
from ..errors import InputError
from ..models import ImageModel, clone_model, load_model, read_spec, save_model, state_sha256
from ..train import after_each_epoch, evaluate, metric_name
from . import TRANSFORMS
from .executors import run_jobs
from .spec import SuspectSpec, ZooSpec


@functools.lru_cache(maxsize=2)
def _data(spec: str, channels: int, size: int) -> DataSplits:
    return load_data(spec, channels=channels, size=size)


def build_suspect(job: dict[str, Any]) -> dict[str, Any]:
    """Build one suspect from a job description (runs in any executor) and return its manifest record."""
    import torch

    start = time.perf_counter()
    suspect = SuspectSpec(**job["suspect"])
    target = load_model(job["target_path"], device=job.get("device", "cpu"))
    data = _data(job["data"], target.spec.channels, target.spec.input_size[0])
    epochs: list[dict[str, torch.Tensor]] = []  # every epoch's weights: which ones are kept depends on how many there were
    keep = lambda model: epochs.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})  # noqa: E731
    with after_each_epoch(keep) if job.get("checkpoints") else contextlib.nullcontext():
        child = suspect.build_transform().apply(target, data.train, seed=suspect.seed, progress=job.get("progress", False))
    task = target.spec.task
    child.spec.info.update(
        name=suspect.name,
        kind=suspect.kind,
        recipe=job["recipe"],
        test_metric=evaluate(child, data.test, task),
        metric_name=metric_name(task),
        build_seconds=round(time.perf_counter() - start, 2),
        threads=torch.get_num_threads(),
    )
    if job.get("checkpoints"):  # written before the suspect: a suspect on disk has its checkpoints
        child.spec.info["checkpoints"] = _save_checkpoints(child, epochs[:-1], job["checkpoints"], Path(job["out_path"]), data)
    save_model(child, job["out_path"])
    return _record(Path(job["out_path"]))


def checkpoint_epochs(trained: int, count: int) -> list[int]:
    """Which of ``trained`` epochs (1-based, the last excluded: it is the model itself) ``count`` checkpoints keep:
    evenly spaced, ``[5, 10]`` of 15 for 2; fewer when the run is shorter."""
    if trained < 2 or count < 1:
        return []
    return sorted({max(1, round(trained * (i + 1) / (count + 1))) for i in range(count)} - {trained})


def _save_checkpoints(child: ImageModel, states: list[dict[str, Any]], count: int, out_path: Path, data: DataSplits) -> list[dict[str, Any]]:
    """Write the chosen epochs' weights (of ``states``, one per finished epoch but the last) in ``checkpoints/``
    beside ``suspects/`` as ``NAME@eK.safetensors`` and return what the suspect's file records of them."""
    saved, task = [], child.spec.task
    for epoch in checkpoint_epochs(len(states) + 1, count):
        model = clone_model(child)
        model.load_state_dict(states[epoch - 1])
        model.spec.info = {**child.spec.info, "checkpoint_of": child.spec.info["name"], "epoch": epoch, "test_metric": evaluate(model, data.test, task)}
        path = out_path.parent.parent / "checkpoints" / f"{out_path.stem}@e{epoch}.safetensors"
        save_model(model, path)
        saved.append({"file": path.name, "epoch": epoch, "sha256": state_sha256(model), "test_metric": model.spec.info["test_metric"]})
    return saved


def _record(path: Path) -> dict[str, Any]:
    """The manifest record of a built suspect, read from its file."""
    model = load_model(path)
    info = model.spec.info
    return {
        "name": info["name"],
        "kind": info["kind"],
        "transform": info["transform"],
        "params": info["params"],
        "seed": info["seed"],
        "path": str(path),
        "sha256": info["sha256"],
        "test_metric": info["test_metric"],
        "metric_name": info["metric_name"],
        "build_seconds": info["build_seconds"],
        "recovered": info.get("recovered"),
        "recovery_epochs": int(info.get("recovery_epochs", 0)),
        **({"checkpoints": [{**c, "path": str(path.parent.parent / "checkpoints" / c["file"])} for c in info["checkpoints"]]} if "checkpoints" in info else {}),
    }


def _finished(path: Path, recipe: dict[str, Any]) -> bool:
    if not path.is_file():
        return False
    try:
        return same_recipe(read_spec(path).info.get("recipe"), recipe)
    except InputError:
        return False  # unreadable (say, an old format): rebuild


def _earlier_records(out: Path, parent: str, data: str, names: set[str]) -> list[dict[str, Any]]:
    """The records of the models that earlier builds left in ``out/suspects`` for the same target and data, but
    ``names`` (this build's), in seed order.

    Args:
        out: the zoo directory.
        parent: the target's weight hash.
        data: the data spec of this build.
        names: the suspects of this build.

    Returns:
        One manifest record per such model, read from its file, marked ``reused`` and ``earlier_spec``.
    """
    kept = []
    for path in sorted((out / "suspects").glob("*.safetensors")):
        if path.stem in names:
            continue
        try:
            recipe = read_spec(path).info.get("recipe") or {}
            if recipe.get("parent_sha256") != parent or not isinstance(recipe.get("data"), str) or data_key(recipe["data"]) != data_key(data):
                continue
            kept.append({**_record(path), "reused": True, "earlier_spec": True})
        except (InputError, KeyError):
            continue  # unreadable, or not a model this code built: not listed
    return sorted(kept, key=lambda record: (record["seed"], record["name"]))


def build_zoo(
    spec: ZooSpec,
    target_path: str | Path,
    data: str,
    out_dir: str | Path,
    *,
    executor: str = "inprocess",
    workers: int = 2,
    ray_address: str | None = None,
    threads_per_worker: int = 1,
    device: str = "cpu",
    checkpoints: int = 0,
    role: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or resume) the zoo of ``spec`` around the target and return the manifest.

    Args:
        spec: the suspects to build.
        target_path: the target's model file.
        data: the data spec (the thief's training data is its training split; the test metric uses its test split).
        out_dir: the zoo directory.
        executor, workers, ray_address, threads_per_worker: see :func:`modelprint.zoo.executors.run_jobs`.
        device: torch device of the workers.
        checkpoints: besides each suspect, keep this many of the epochs it was trained for (evenly spaced,
            :func:`checkpoint_epochs`) as models of their own in ``out_dir/checkpoints`` (part of the recipe).
        role: what the zoo is for, recorded in the manifest when given (``"training"`` for the owner's training zoo).
        progress: show a progress bar over suspects (and per-suspect bars in-process).

    Returns:
        The manifest: the target, the data, the spec and one record per suspect, with ``reused`` telling which were
        already built. ``out_dir/manifest.json`` holds it with, after this spec's suspects, the records of the models
        earlier builds left in the folder for the same target and data (see :func:`_earlier_records`).
    """
    out = Path(out_dir)
    (out / "suspects").mkdir(parents=True, exist_ok=True)
    target = load_model(target_path)
    parent = target.spec.info["sha256"]
    records: dict[str, dict[str, Any]] = {}
    jobs = []
    for suspect in spec.suspects:
        path = out / "suspects" / f"{suspect.name}.safetensors"
        recipe = {"suspect": suspect.to_dict(), "parent_sha256": parent, "data": data}
        revision = TRANSFORMS[suspect.transform].revision
        if revision > 1:  # recipes of transforms never revised stay what they were: their suspects are reused
            recipe["revision"] = revision
        if checkpoints:
            recipe["checkpoints"] = checkpoints
        if _finished(path, recipe):
            records[suspect.name] = {**_record(path), "reused": True}
            continue
        jobs.append(
            {
                "suspect": suspect.to_dict(),
                "target_path": str(target_path),
                "data": data,
                "out_path": str(path),
                "recipe": recipe,
                "device": device,
                "checkpoints": checkpoints,
                "progress": progress and executor == "inprocess",
            }
        )

    manifest = {
        "target": {"path": str(target_path), "sha256": parent, "test_metric": target.spec.info.get("test_metric")},
        "data": data,
        "spec": spec.to_dict(),
        **({"role": role} if role else {}),
        "suspects": [],
    }

    earlier = _earlier_records(out, parent, data, {s.name for s in spec.suspects})

    def write_manifest() -> None:
        manifest["suspects"] = [records[s.name] for s in spec.suspects if s.name in records]
        tmp = out / "manifest.json.tmp"
        tmp.write_text(json.dumps({**manifest, "suspects": manifest["suspects"] + earlier}, indent=2))
        os.replace(tmp, out / "manifest.json")

    write_manifest()
    with tqdm(total=len(spec.suspects), initial=len(records), desc="zoo", unit="suspect", disable=not progress) as bar:

        def finished(record: dict[str, Any]) -> None:
            records[record["name"]] = {**record, "reused": False}
            write_manifest()
            bar.update(1)

        run_jobs(
            build_suspect, jobs, executor=executor, workers=workers, ray_address=ray_address, threads_per_worker=threads_per_worker, on_result=finished
        )
    write_manifest()
    return manifest
