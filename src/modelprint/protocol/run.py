"""The evaluation protocol in one call: target -> zoo -> owner's helper models -> per scheme, fingerprints and
verification -> figures.

Everything is written under one output folder and reused when a killed run is started again: the target, the zoo
(:mod:`modelprint.zoo.build`), the helper models (:mod:`.owner`), and per scheme ``OUT/<scheme>/`` each repeat's
fingerprint set and each suspect's verification. Every scheme meets the same target, zoo and helper models; repeats
draw new fingerprints (the scheme's seed is the repeat index).
"""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..access import WhiteBox
from ..data import DataSplits, load_data, same_recipe
from ..detectors import DeepSVDD, FeatureSqueezing
from ..fingerprints import FingerprintScheme, FingerprintSet
from ..fingerprints.base import helper_hashes
from ..gradcam import GradCAM, normalise_maps
from ..metrics import pair_scores, ssim, tar_at_far
from ..models import ImageModel, load_model, save_model
from ..tasks import Task
from ..train import TrainConfig, metric_name, predict, train_new_model
from ..zoo.build import build_zoo
from . import owner as owner_models
from . import training_zoo
from .config import EvaluationConfig
from .scores import verify_all, write_json
from .watermark import watermark_block
from .summary import MODE_KEYS, report as make_report, scheme_summary


def _target(config: EvaluationConfig, data: DataSplits, out: Path, progress: bool) -> Path:
    """The target's model file: the one given, or one trained here (reused when its recipe is unchanged)."""
    if config.target:
        load_model(config.target)  # fail early on a bad file
        return Path(config.target)
    path = out / "target.safetensors"
    train = TrainConfig(epochs=config.epochs, seed=config.seed, augment=data.augment, device=config.device)
    recipe = {"arch": config.arch, "width": config.width, "data": config.data, "train": train.to_dict()}
    if config.task != "classification":  # recipes of classification runs stay what they were: their targets are reused
        recipe["task"] = config.task
    if path.is_file() and same_recipe(load_model(path).spec.info.get("recipe"), recipe):
        return path
    model, _ = train_new_model(data, arch=config.arch, width=config.width, config=train, task_name=config.task, progress=progress, desc="target")
    model.spec.info["recipe"] = recipe
    save_model(model, path)
    return path


def generate_or_reuse(scheme: FingerprintScheme, target: ImageModel, task: Task, data: DataSplits, path: Path,
                      helpers: dict[str, list[ImageModel]], progress: bool, record: dict[str, Any] | None = None) -> FingerprintSet:
    """Generate a set, or reuse the one at ``path`` if the same settings made it for the same target and helpers.

    The settings compared are those the set was made with (its ``scheme_repr``): a setting added to the scheme since
    counts as the same when it is at its default, which by convention makes what the scheme made before it existed.
    ``record`` goes into the set's config (and must be there, equal, for a set to be reused)."""
    hashes = {**helper_hashes(**helpers), **(record or {})}
    if path.is_file():
        existing = FingerprintSet.load(path)
        same_helpers = all(existing.config.get(key, []) == value for key, value in hashes.items())
        same_settings = existing.scheme == scheme.name and _settings_repr(scheme, set(existing.config)) == existing.stats.get("scheme_repr")
        if existing.target.get("sha256") == target.spec.info["sha256"] and same_settings and same_helpers:
            return existing
    candidates, pairs = task.candidates(data.train)
    fingerprints = scheme.generate(target, candidates.images, candidates.labels, task, pairs=pairs, progress=progress, **helpers)
    fingerprints.stats["scheme_repr"] = repr(scheme)
    fingerprints.config.update(record or {})
    fingerprints.save(path)
    return fingerprints


def _settings_repr(scheme: FingerprintScheme, known: set[str]) -> str | None:
    """``repr(scheme)`` as a version of the scheme that had only the settings in ``known`` printed it; None when a
    setting it lacked is not at its default here (then no set made by that version is this scheme's)."""
    shown = []
    for f in fields(scheme):  # type: ignore[arg-type]
        value = getattr(scheme, f.name)
        if f.name in known:
            shown.append(f"{f.name}={value!r}")
        elif value != f.default:
            return None
    return f"{type(scheme).__qualname__}({', '.join(shown)})"


def _detectors(target: ImageModel, data: DataSplits, fpr: float) -> tuple[FeatureSqueezing, DeepSVDD]:
    return FeatureSqueezing(fpr=fpr).fit(target, data.test.images), DeepSVDD(fpr=fpr).fit(data.train.images)


def stealth(target: ImageModel, fingerprints: FingerprintSet, detectors: tuple[FeatureSqueezing, DeepSVDD] | None) -> dict[str, float]:
    """What a set shows of itself: label invariance (``acc``, for schemes that keep the target's output), PSNR and
    SSIM against the images the samples were made from (when the set keeps them), the detectors' rates, and for
    regression and similarity the largest output change over the tolerance."""
    samples, originals = fingerprints.samples, fingerprints.tensors.get("originals")
    stats = fingerprints.stats
    figures = {k: float(stats[s]) for k, s in (("acc", "labels_kept"), ("psnr_db", "psnr_db_mean")) if isinstance(stats.get(s), (int, float))}
    if originals is not None:
        figures["ssim"] = float(ssim(originals, samples).mean())
    tolerance = fingerprints.config.get("tolerance")
    if tolerance and originals is not None:
        task = fingerprints.task_adapter()
        with torch.no_grad():
            cond = task.condition_on(target, fingerprints.labels, fingerprints.tensors.get("pairs"))
            change = (task.score(target(samples), cond) - task.score(target(originals), cond)).abs()
        figures.update(tolerance=float(tolerance), output_change_max=float(change.max()), output_change_mean=float(change.mean()))
    if detectors is not None:
        squeezing, svdd = detectors
        figures.update(dr_feature_squeezing=squeezing.detection_rate(target, samples), dr_deepsvdd=svdd.detection_rate(samples))
        if originals is not None:
            figures.update(dr_feature_squeezing_originals=squeezing.detection_rate(target, originals), dr_deepsvdd_originals=svdd.detection_rate(originals))
    return figures


def gallery(fingerprints: FingerprintSet, models: dict[str, ImageModel], count: int = 6) -> dict[str, np.ndarray]:
    """Originals, fingerprints and the max-normalised Grad-CAM of each model on them, for the report's grid
    (for a set that marks a saliency region: its ``pattern``)."""
    samples, labels = fingerprints.samples[:count], fingerprints.labels[:count]
    pairs = fingerprints.tensors.get("pairs")
    pairs = None if pairs is None else pairs[:count]
    task = fingerprints.task_adapter()
    arrays = {"originals": fingerprints.tensors["originals"][:count].numpy(), "samples": samples.numpy(), "pattern": fingerprints.tensors["pattern"].numpy()}
    logit = bool(fingerprints.config.get("cam_logit", True))
    direction = fingerprints.tensors.get("direction", torch.ones(len(fingerprints)))[:count]  # which way each sample is read
    for name, model in models.items():
        layer = fingerprints.config.get("layer")
        cond = task.condition_on(model, labels, pairs)
        with GradCAM(model, layer if layer in dict(model.named_modules()) else None) as cam:
            maps, _ = cam(samples, lambda o: task.score(o, cond, logit=logit) * direction.to(o.device))
        arrays[f"cam_{name}"] = normalise_maps(maps.detach(), "max").numpy()
    return arrays


def run_evaluation(config: EvaluationConfig, out_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the protocol for every scheme of ``config`` and return the report data (also ``out_dir/report.json``).

    Returns:
        The first scheme's ``aruc``, ``auc`` and ``tpr_at_1pct_fpr`` per mode, ``stealth``, ``suspects``,
        ``per_transform``, ``curves``, ``thresholds``; every scheme's block under ``schemes``; ``timings_s``
        and ``config``. Figures with repeats are ``{"mean", "std", "values"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    zoo_spec, task, data = config.zoo_spec(), config.task_adapter(), load_data(config.data)
    executor = dict(executor=config.executor, workers=config.workers, ray_address=config.ray_address, device=config.device)

    t = time.perf_counter()
    log("target ...")
    target_path = _target(config, data, out, progress)
    target = load_model(target_path, device=config.device)
    timings["target_s"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"zoo: {len(zoo_spec.positives)} positives, {len(zoo_spec.negatives)} negatives ({config.executor}) ...")
    manifest = build_zoo(zoo_spec, target_path, config.data, Path(config.zoo_dir or out / "zoo"), progress=progress, **executor)
    timings["zoo_s"] = time.perf_counter() - t
    suspects = manifest["suspects"]

    counts = config.owner_counts()
    helpers: dict[str, list[ImageModel]] = {role: [] for role in counts}
    owner = None
    if any(counts.values()):
        t = time.perf_counter()
        log("owner's helper models: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + " ...")
        owner = owner_models.build_owner_models(counts, target_path, config.data, config.owner_dir or out / "owner", epochs=config.epochs, progress=progress, **executor)
        helpers = owner_models.load_helpers(owner, device=config.device)  # type: ignore[arg-type]
        timings["owner_models_s"] = time.perf_counter() - t

    training, training_models = None, {}  # the manifest, and the models each reading of it loaded
    training_size = config.training_zoo_size()
    if training_size:
        t = time.perf_counter()
        log(f"owner's training zoo: {training_size} models ...")
        training = training_zoo.build_training_zoo(training_size, target_path, config.data, config.training_zoo_dir or out / "training_zoo",
                                                   epochs=config.epochs, progress=progress, **executor)
        training_zoo.check_disjoint(training, manifest)
        timings["training_zoo_s"] = time.perf_counter() - t

    t = time.perf_counter()
    detectors = _detectors(target, data, config.detector_fpr) if config.detectors else None
    timings["detectors_s"] = time.perf_counter() - t

    blocks: dict[str, dict[str, Any]] = {}
    first_set = None
    timings["generation_s"] = timings["verification_s"] = 0.0
    for name in config.schemes:  # type: ignore[union-attr]
        per_repeat = []
        folder = out / name
        folder.mkdir(exist_ok=True)
        for repeat in range(config.repeats):
            scheme = config.fingerprint_scheme(repeat, name)
            given = {role: helpers[role] for role in config.helper_counts(name)}
            record = None
            size, checkpoints = reads = scheme.training_zoo()
            if size:  # loaded once for every repeat (and scheme) that reads the same models
                if reads not in training_models:
                    training_models[reads] = training_zoo.training_helpers(training, size, checkpoints=checkpoints, device=config.device)  # type: ignore[arg-type]
                given, record = training_models[reads]
            t = time.perf_counter()
            log(f"{name}, repeat {repeat + 1}/{config.repeats}: fingerprints ...")
            fingerprints = generate_or_reuse(scheme, target, task, data, folder / f"fingerprints-{repeat}.safetensors", given, progress, record)
            timings["generation_s"] += time.perf_counter() - t
            t = time.perf_counter()
            scores = verify_all(scheme, fingerprints, suspects, folder / f"verification-{repeat}.json", progress)
            timings["verification_s"] += time.perf_counter() - t
            per_repeat.append({
                "fingerprints": fingerprints,
                "scores": scores,
                "target_scores": {f"ms_{MODE_KEYS[m]}": scheme.verify(WhiteBox(target), fingerprints, mode=m).matching_score for m in scheme.modes},
                "stealth": stealth(target, fingerprints, detectors),
            })
        blocks[name] = scheme_summary(scheme.modes, suspects, per_repeat)
        blocks[name]["owner_models_read"] = {role: len(models) for role, models in given.items()}
        first_set = first_set or per_repeat[0]["fingerprints"]

    watermarks = {}
    for name in config.watermarks:
        t = time.perf_counter()
        watermarks[name] = watermark_block(name, config, target_path, target, data, manifest, out, executor=executor, progress=progress, log=log)
        timings[f"watermark_{name}_s"] = time.perf_counter() - t

    result = make_report(config, manifest, blocks, timings, first_set)  # type: ignore[arg-type]
    if watermarks:
        result["watermarks"] = watermarks
    result["task"] = {**task.to_config(), "metric_name": metric_name(config.task)}
    if config.task == "similarity":
        scores, same = pair_scores(predict(target, data.test.images), data.test.labels)
        result["task"].update(target_tar_at_far={str(far): tar_at_far(scores, same, far) for far in (0.01, 0.1)})
    if training is not None:
        result["training_zoo"] = training_zoo.cost(training)
    if owner is not None:
        result["owner_models"] = {**counts, "build_seconds": sum(r["build_seconds"] for r in owner["suspects"])}
    if suspects and first_set is not None and "pattern" in first_set.tensors:
        pick = lambda kind: next((r for r in suspects if r["kind"] == kind), None)  # noqa: E731
        shown = {"target": target, **{kind: load_model(r["path"]) for kind in ("positive", "negative") if (r := pick(kind))}}
        np.savez_compressed(out / "gallery.npz", **gallery(first_set, shown))
        result["gallery"] = {kind: (pick(kind) or {}).get("name", kind) for kind in shown}
    write_json(out / "report.json", result)
    return result
