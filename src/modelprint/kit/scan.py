"""``modelprint scan``: many suspects against one kit (a folder of model files, or a file of server URLs), one task per
suspect on any executor, ranked by the combined evidence; a suspect that cannot be checked (a corrupt file, a server
that does not answer) is reported and the scan goes on; a rerun reuses every finished check."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from statistics import fmean
from typing import Any, Callable

from ..errors import InputError, ModelprintError
from ..zoo.executors import run_jobs
from .check import BUNDLE_FILE, check_suspect
from .file import read_kit

MODEL_SUFFIXES = (".safetensors", ".onnx", ".pt", ".pth")


def read_suspects(source: str | os.PathLike) -> list[dict[str, str]]:
    """The suspects of a scan: every model file in a folder (sorted by name), or one per line of a text file:
    ``URL MODEL_NAME`` for an Open Inference Protocol server (``#`` starts a comment).

    Raises:
        InputError: nothing there, or a line that is not ``URL MODEL_NAME``.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MODEL_SUFFIXES)
        if not files:
            raise InputError(f"--suspects {path}: no model files ({', '.join(MODEL_SUFFIXES)}) in the folder")
        return [{"suspect": str(p), "name": p.stem} for p in files]
    if not path.is_file():
        raise InputError(f"--suspects {path}: no such folder or file")
    from ..checks import read_text

    found = []
    for number, line in enumerate(read_text(path, "the list of suspects").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise InputError(f"{path}:{number}: expected 'URL MODEL_NAME', got {line!r}")
        found.append({"url": parts[0], "model_name": parts[1], "name": f"{parts[1]}@{parts[0]}"})
    if not found:
        raise InputError(f"--suspects {path}: no suspects listed")
    return found


def _folder_name(suspect: dict[str, str]) -> str:
    """A file-system-safe, unique folder name for a suspect's check."""
    digest = hashlib.sha256(json.dumps(suspect, sort_keys=True).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in suspect["name"])[:60]
    return f"{stem}-{digest}"


def _check_one(job: dict[str, Any]) -> dict[str, Any]:
    """One suspect of a scan (a pool or Ray task): its row, or its error."""
    suspect = job["suspect"]
    row: dict[str, Any] = {"suspect": suspect["name"], "folder": job["out"]}
    try:
        checked = check_suspect(job["kit"], suspect=suspect.get("suspect"), url=suspect.get("url"), model_name=suspect.get("model_name"),
                                out=job["out"], alpha=job["alpha"], budget=job["budget"], mode=job["mode"])
    except Exception as exc:  # noqa: BLE001 - any suspect that cannot be checked is reported, and the scan goes on
        kind = "" if isinstance(exc, ModelprintError) else f"{type(exc).__name__}: "
        return {**row, "error": kind + (" ".join(str(exc).split()) or type(exc).__name__)}
    return {**row, **_row(checked.bundle)}


def _row(bundle: dict[str, Any]) -> dict[str, Any]:
    combined = bundle["combined"]
    return {"p_value": combined["p_value"], "pirated": combined["pirated"], "scores": {e["set"]: round(e["score"], 4) for e in bundle["sets"]},
            "mean_score": fmean(e["score"] for e in bundle["sets"])}


def _finished(folder: Path, kit_sha: str, suspect: dict[str, str], alpha: float) -> dict[str, Any] | None:
    """The row of a check an earlier scan finished with this kit (same kit file, same suspect file), else None."""
    path = folder / BUNDLE_FILE
    if not path.is_file():
        return None
    try:
        bundle = json.loads(path.read_text())
        same_file = "suspect" not in suspect or bundle["suspect"].get("sha256") == _file_digest(suspect["suspect"])
        if bundle["kit"]["sha256"] == kit_sha and same_file and bundle["combined"]["alpha"] == alpha:
            return {"suspect": suspect["name"], "folder": str(folder), **_row(bundle), "reused": True}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _file_digest(path: str) -> str | None:
    from ..integrity.hashing import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


def scan(kit: str | os.PathLike, suspects: str | os.PathLike, out: str | os.PathLike, *, alpha: float = 0.05, budget: int | None = None,
         mode: str | None = None, executor: str = "inprocess", workers: int = 2, ray_address: str | None = None,
         on_row: Callable[[dict[str, Any]], None] = lambda row: None) -> dict[str, Any]:
    """Check every suspect against the kit and rank them.

    Args:
        kit: the kit's folder (checked once before any suspect is asked).
        suspects: a folder of model files or a text file of ``URL MODEL_NAME`` lines (:func:`read_suspects`).
        out: the scan's folder: one check folder per suspect and ``scan.json``.
        alpha, budget, mode: as for :func:`~modelprint.kit.check.check_suspect` (the budget is per suspect).
        executor, workers, ray_address: one task per suspect (:func:`~modelprint.zoo.executors.run_jobs`).
        on_row: called with each suspect's row as it finishes.

    Returns:
        The scan: its rows, ranked (smallest combined p-value first, then the highest mean score; errors last).
    """
    from ..checks import number, output_folder

    number(alpha, "--alpha", above=0, below=1)
    listed = read_suspects(suspects)
    checked = read_kit(kit)
    out = output_folder(out, "--out")
    kit_sha = checked.sha256
    rows, jobs = [], []
    for suspect in listed:
        folder = out / _folder_name(suspect)
        done = _finished(folder, kit_sha, suspect, alpha)
        if done is not None:
            rows.append(done)
            on_row(done)
        else:
            jobs.append({"kit": str(checked.folder), "suspect": suspect, "out": str(folder), "alpha": alpha, "budget": budget, "mode": mode})

    def collect(row: dict[str, Any]) -> None:
        rows.append(row)
        on_row(row)

    run_jobs(_check_one, jobs, executor=executor, workers=workers, ray_address=ray_address, on_result=collect)
    rows.sort(key=lambda r: ("error" in r, r.get("p_value", 1.0), -r.get("mean_score", 0.0), r["suspect"]))
    result = {"kit": {"folder": str(checked.folder), "sha256": kit_sha}, "alpha": alpha, "suspects": rows}
    (out / "scan.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
