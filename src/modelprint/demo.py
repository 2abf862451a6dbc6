"""The demo: the owner's workflow on the embedded digits set, in a few minutes on a laptop CPU.

Trains a target, three pirated copies (fine-tuned, 30% weight-pruned, distilled from its soft labels) and an
independent model; ``protect`` makes the owner's kit (the fast profile: IPGuard and TAFA sets, 19 null models);
``check`` verifies each suspect as a file (white-box) and, served over the Open Inference Protocol by a local
server, as a thief's API (black-box), and prints the combined verdicts with their p-values. Every model and the kit
are kept in the output folder, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .data import load_data
from .integrity.signing import new_key_files
from .kit.check import check_suspect
from .kit.protect import build_kit
from .models import ImageModel, load_model, save_model
from .serving.server import ServedModel, ServerThread, create_app
from .tasks import Classification
from .train import TrainConfig, evaluate, train_new_model
from .zoo import Distill, FineTune, Transform, WeightPrune

#: The suspects that are also asked through a local server, as a thief's API (black-box).
SERVED = ("fine-tuned", "independent")


def cached_model(path: Path, recipe: dict[str, Any], make: Callable[[], ImageModel]) -> ImageModel:
    """Load the model at ``path`` if it was made by the same recipe; otherwise make and save it."""
    if path.is_file():
        model = load_model(path)
        if model.spec.info.get("recipe") == recipe:
            return model
    model = make()
    model.spec.info["recipe"] = recipe
    save_model(model, path)
    return load_model(path)


def trained_model(path: Path, splits: Any, *, seed: int, epochs: int, width: int, device: str = "cpu", progress: bool = True) -> ImageModel:
    """A ResNet-18 of ``width`` trained on ``splits`` from ``seed``, cached at ``path`` by its recipe (:func:`cached_model`)."""
    config = TrainConfig(epochs=epochs, seed=seed, augment=splits.augment, device=device)
    recipe = {"arch": "resnet18", "width": width, "data": splits.name, "train": config.to_dict()}
    return cached_model(path, recipe, lambda: train_new_model(splits, arch="resnet18", width=width, config=config, progress=progress,
                                                              desc=f"train seed {seed}")[0])


def derived_model(path: Path, parent: ImageModel, transform: Transform, splits: Any, *, seed: int, progress: bool = True) -> ImageModel:
    """``transform`` of ``parent`` on ``splits``' training images from ``seed``, cached at ``path`` by its recipe."""
    recipe = {"transform": transform.kind, "params": transform.params(), "seed": seed, "parent": parent.spec.info["sha256"]}
    return cached_model(path, recipe, lambda: transform.apply(parent, splits.train, seed=seed, progress=progress))


def run_demo(
    out_dir: str | Path = "modelprint-demo",
    *,
    data: str = "digits",
    epochs: int = 6,
    width: int = 8,
    n: int = 100,
    null_models: int = 19,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo and write ``out_dir/summary.json``.

    Args:
        out_dir: where models, the kit, the checks and the summary go.
        data: the data set (any spec :func:`modelprint.load_data` reads); the embedded digits by default.
        epochs: training epochs of the target, the independent model and the kit's null models.
        width: ResNet-18 width.
        n: fingerprints per set.
        null_models: the kit's null models (19 or more for a verdict at alpha 0.05).
        workers: processes that train the null models.
        device: torch device.
        progress: show progress bars.
        log: where progress lines go.

    Returns:
        The summary (also written as JSON).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    splits = load_data(data)
    timings: dict[str, float] = {}

    def made(stem: str, seed: int, transform: Transform | None = None) -> tuple[Path, ImageModel]:
        """The model file ``stem`` and its model: trained from seed ``seed``, or ``transform`` of the target."""
        path = out / "models" / f"{stem}.safetensors"
        if transform is None:
            return path, trained_model(path, splits, seed=seed, epochs=epochs, width=width, device=device, progress=progress)
        return path, derived_model(path, target, transform, splits, seed=seed, progress=progress)

    t = time.perf_counter()
    log(f"training the target, three pirated copies and an independent model on {splits.name} ...")
    target_path, target = made("seed0", 0)
    suspects = {  # name -> (kind, (its file, its model))
        "fine-tuned": ("pirated", made("finetuned", 10, FineTune(epochs=1, lr=0.01, augment=splits.augment))),
        "pruned 30%": ("pirated", made("pruned30", 11, WeightPrune(ratio=0.3))),
        "distilled": ("pirated", made("distilled", 12, Distill(epochs=epochs, augment=splits.augment))),
        "independent": ("independent", made("seed1", 1)),
    }
    timings["models_s"] = time.perf_counter() - t
    accuracy = {name: evaluate(model, splits.test, "classification") for name, (_, (_, model)) in suspects.items()}
    accuracy["target"] = evaluate(target, splits.test, "classification")

    t = time.perf_counter()
    key = out / "owner.key"
    if not key.is_file():
        new_key_files(out / "owner")
    log(f"protect: the owner's kit (IPGuard and TAFA sets of {n}, {null_models} null models) ...")
    kit = build_kit(target_path, data=data, out=out / "kit", key=key, profile="fast", n=n, null_models=null_models,
                    epochs=epochs, progress=progress, log=log, executor="pool" if workers > 1 else "inprocess", workers=workers, device=device)
    timings["protect_s"] = time.perf_counter() - t

    t = time.perf_counter()
    checks: list[dict[str, Any]] = []
    for name, (kind, (path, _)) in suspects.items():
        log(f"check: {name} (file) ...")
        done = check_suspect(out / "kit", suspect=path, out=out / "checks" / f"{path.stem}-file", device=device)
        checks.append(_row(name, kind, "file", done.bundle, done.path))
    for name in SERVED:
        kind, (path, model) = suspects[name]
        served = ServedModel("suspect", model, Classification(), (target.spec.channels, *target.spec.input_size))
        with ServerThread(create_app(served)) as server:
            log(f"check: {name} (served at {server.url}) ...")
            done = check_suspect(out / "kit", url=server.url, model_name="suspect", out=out / "checks" / f"{path.stem}-served", fresh=True)
        checks.append(_row(name, kind, "served", done.bundle, done.path))
    timings["check_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    summary = {
        "data": splits.name,
        "arch": {"name": "resnet18", "width": width, "epochs": epochs},
        "test_accuracy": accuracy,
        "kit": {"folder": str(out / "kit"), "sets": [s["name"] for s in kit["sets"]], "null_models": null_models},
        "checks": checks,
        "timings_s": timings,
        "torch": torch.__version__,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _row(name: str, kind: str, asked: str, bundle: dict[str, Any], path: Path) -> dict[str, Any]:
    combined = bundle["combined"]
    return {"suspect": name, "kind": kind, "asked": asked, "bundle": str(path), "scores": {e["set"]: e["score"] for e in bundle["sets"]},
            "p_value": combined["p_value"], "pirated": combined["pirated"], "queries": sum(e["images_used"] for e in bundle["sets"])}


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The demo's verdicts as lines of at most 80 characters: one per check, then what the p-value means."""
    sets = summary["kit"]["sets"]
    head = f"{'suspect':<12} {'kind':<12} {'asked as':<9}" + "".join(f" {s[:8]:>8}" for s in sets) + f" {'p':>7}  verdict"
    lines = [head, "-" * len(head)]
    for row in summary["checks"]:
        scores = "".join(f" {row['scores'][s]:>8.2f}" for s in sets)
        lines.append(f"{row['suspect']:<12} {row['kind']:<12} {row['asked']:<9}{scores} {row['p_value']:>7.3f}  {'PIRATED' if row['pirated'] else 'not shown'}")
    k = summary["kit"]["null_models"]
    lines += ["",
              "Columns: each set's matching score, then p, the combined p-value of the",
              f"suspect's rank among the owner's {k} independently trained null models (at",
              f"least 1/{k + 1}). PIRATED where p <= 0.05: an independent model like them is",
              "declared with probability at most 0.05."]
    return lines
