"""The paper's evaluation protocol in one call: target -> zoo -> fingerprints -> verification -> metrics.

Everything is written under one output folder and reused when a killed run is started again: the target model,
the zoo (see :mod:`modelprint.zoo.build`), each repeat's fingerprint set and each suspect's verification. Repeats
draw new fingerprints (the scheme's seed is the repeat index) against the same target and zoo; every figure is
reported per repeat and as mean and standard deviation.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..access import BLACK_BOX, WHITE_BOX, WhiteBox
from ..data import DataSplits, load_data
from ..detectors import DeepSVDD, FeatureSqueezing
from ..errors import InputError
from ..fingerprints import FingerprintSet, SaliencyFingerprint
from ..fingerprints.saliency import OWNER_MODELS
from ..metrics import aruc, pair_scores, roc_auc, ru_curves, ssim, tar_at_far, tpr_at_fpr
from ..models import ImageModel, load_model, save_model
from ..gradcam import GradCAM, normalise_maps
from ..tasks import Task, task_named
from ..train import TrainConfig, metric_name, predict, train_new_model
from ..zoo.build import build_zoo
from ..zoo.spec import NEGATIVE, POSITIVE, PRESETS, SuspectSpec, ZooSpec

MODES = {"white_box": WHITE_BOX, "black_box": BLACK_BOX}


#: The owner's helper models, by the keyword of ``SaliencyFingerprint.generate`` that takes them: the prefix of their
#: names (and of the ``<prefix>_sha256`` key of a fingerprint set's config), their kind, how they are made, first seed.
OWNER_ROLES = {
    "references": ("reference", NEGATIVE, "independent", 5000),
    "surrogates": ("surrogate", POSITIVE, "distill", 6000),
    "calibration": ("calibration", NEGATIVE, "independent", 7000),
}

#: Training epochs of the target, the negatives and the distilled copies when none are given. The paper preset's 15
#: bring the CIFAR-10 target (ResNet-18 width 16) from 53.8% to 66.6% test accuracy, and every configuration that
#: does not take the paper's literal choices separates better on the better-trained zoo (docs/ablation.md, "A
#: better-trained target"); its zoo then takes about 44 min on this project's two CPU cores (5 epochs: 16 min).
PRESET_EPOCHS = {"paper": 15, "quick": 15}

#: The fingerprint configuration of a run that names none: the owner's (with its helper models) for the paper preset,
#: the measurement; the one without helper models for the quick preset and custom zoos, whose point is a short run
#: (the owner's 16 helper models would take longer than the quick zoo itself).
DEFAULT_CONFIGURATION = {"paper": "owner"}

#: What the ``"owner"`` configuration changes for tasks other than classification (settings a run names itself win).
#: Both score black-box changes on the output itself (``bb_score="log"`` needs a probability) and take twice
#: classification's L2 budget per value (12 on 64x64x3 UTKFace images, 6 on 32x32x3 FaceScrub ones: PSNR about
#: 24.5 dB), a tenth of the keep weight, and pools ranked by the smaller of the target's and the surrogates' value
#: (``select_anchor``). Measured on the paper zoos (docs/tasks.md): white-box ARUC with classification's settings
#: 0.184 (regression) and 0.267 (similarity, one set); with these 0.744 and 0.454 (0.465 once filter pruning of
#: depthwise convs was revised) (regression, one set each: xi 6 -> 0.567, xi 9 with the anchor -> 0.692, xi 12 -> 0.748).
OWNER_TASK_SETTINGS: dict[str, dict[str, Any]] = {
    "regression": {"bb_score": "abs", "xi": 12.0, "lam": 0.1, "select_anchor": "target_and_surrogates"},
    "similarity": {"bb_score": "abs", "xi": 6.0, "lam": 0.1, "select_anchor": "target_and_surrogates"},
}
DEFAULT_EPOCHS = 15


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """Settings of one evaluation run (recorded in the report).

    Args:
        data: data spec (see :func:`modelprint.load_data`).
        task: ``"classification"``, ``"regression"`` (float labels) or ``"similarity"`` (identity labels: an
            embedding network trained with ArcFace; fingerprint candidates are paired with another image of the same
            identity).
        similarity: F_c of the similarity task: ``"l2"`` (eq. 7) or ``"cosine"`` (eq. 8).
        arch, width: the target's architecture.
        epochs: training epochs of the target (and of the negatives and distilled copies of the presets); when
            None, the preset's (:data:`PRESET_EPOCHS`).
        seed: the target's seed.
        preset: ``"paper"`` or ``"quick"`` zoo, unless ``zoo`` names a JSON/YAML zoo spec file.
        zoo: path of a custom zoo spec.
        repeats: fingerprint sets drawn (seeds 0 .. repeats-1).
        n: fingerprints per set.
        scheme: the fingerprint scheme's settings, as keyword arguments of :class:`SaliencyFingerprint`
            (``n`` and ``seed`` are set by the run) on top of the named configuration ``"preset"`` (``"default"``,
            ``"paper"`` or ``"owner"``, see :meth:`SaliencyFingerprint.named`); without a name, the preset's
            (:data:`DEFAULT_CONFIGURATION`). For tasks other than classification the owner's configuration takes
            the task's settings (:data:`OWNER_TASK_SETTINGS`) under those named here; the report records them.
        references, surrogates: the owner's helper models for the scheme's ``beta``/``gamma``/``occlusion``
            terms: independently trained models (seeds 5000+) and distilled copies of the target (seeds 6000+),
            built like zoo suspects in ``out/owner`` and never part of the evaluation zoo. When None: the numbers
            the ``"owner"`` configuration reads (:data:`OWNER_MODELS`), else 0.
        calibration: the owner's independently trained models (seeds 7000+) that the scheme's calibrated thresholds
            (``"calibration"``, ``"per_sample"``) are read on; built like the references, kept out of the objective.
            When None, as for ``references``.
        executor, workers, ray_address: where the zoo is built. The default, a pool of ``workers`` processes with
            one torch thread each, built the CIFAR-10 zoo 1.18x faster than this process with two threads
            (bench/threads.py); every executor builds with one thread per job, so all three give identical zoos.
        target: an existing target model file instead of training one.
        zoo_dir, owner_dir: where the zoo and the owner's helper models are built and reused (default
            ``OUT/zoo`` and ``OUT/owner``); runs that share them (the configurations of an ablation) build them once.
        detector_fpr: false-positive rate on clean images that sets each stealth detector's threshold.
        detectors: measure the stealth detectors' detection rates (training Deep SVDD takes a while).
        device: torch device.
    """

    data: str = "digits"
    task: str = "classification"
    similarity: str = "l2"
    arch: str = "resnet18"
    width: int = 16
    epochs: int | None = None
    seed: int = 0
    preset: str = "quick"
    zoo: str | None = None
    repeats: int = 1
    n: int = 100
    scheme: dict[str, Any] | None = None
    references: int | None = None
    surrogates: int | None = None
    calibration: int | None = None
    executor: str = "pool"
    workers: int = 2
    ray_address: str | None = None
    target: str | None = None
    zoo_dir: str | None = None
    owner_dir: str | None = None
    detector_fpr: float = 0.05
    detectors: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs is None:  # resolved here so that the report records the number used
            object.__setattr__(self, "epochs", PRESET_EPOCHS.get(self.preset, DEFAULT_EPOCHS) if self.zoo is None else DEFAULT_EPOCHS)
        if self.preset not in PRESETS and self.zoo is None:
            raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        self.task_adapter()  # an unknown task or similarity metric fails now
        # Resolved here so that the report records the configuration and the helper models used.
        scheme = dict(self.scheme or {})
        scheme.setdefault("preset", DEFAULT_CONFIGURATION.get(self.preset, "default") if self.zoo is None else "default")
        if scheme["preset"] == "owner":
            scheme = {**OWNER_TASK_SETTINGS.get(self.task, {}), **scheme}
        object.__setattr__(self, "scheme", scheme)
        for role in OWNER_ROLES:
            if getattr(self, role) is None:
                object.__setattr__(self, role, OWNER_MODELS[role] if scheme["preset"] == "owner" else 0)
        if self.repeats < 1:
            raise InputError(f"repeats must be >= 1, got {self.repeats}")
        if min(self.owner_counts().values()) < 0:
            raise InputError("references, surrogates and calibration must be >= 0")
        try:
            scheme = self.fingerprint_scheme(0)  # bad settings fail now, not after the zoo is built
        except TypeError as exc:
            raise InputError(f"fingerprint settings: {exc}") from None
        scheme.check_helpers(**self.owner_counts())

    def zoo_spec(self) -> ZooSpec:
        if self.zoo:
            return ZooSpec.from_file(self.zoo)
        return PRESETS[self.preset](train_epochs=self.epochs)

    def owner_spec(self) -> ZooSpec | None:
        """The owner's helper models (``references``, ``surrogates``, ``calibration``), as a zoo spec; None when there
        are none."""
        helpers = [
            SuspectSpec(f"{prefix}_{i}", kind, transform, {"epochs": self.epochs}, first_seed + i)
            for role, (prefix, kind, transform, first_seed) in OWNER_ROLES.items()
            for i in range(self.owner_counts()[role])
        ]
        return ZooSpec(tuple(helpers)) if helpers else None

    def owner_counts(self) -> dict[str, int]:
        """How many helper models of each role (see :data:`OWNER_ROLES`) the run trains."""
        return {role: getattr(self, role) for role in OWNER_ROLES}

    def fingerprint_scheme(self, repeat: int) -> SaliencyFingerprint:
        settings = dict(self.scheme or {})
        name = settings.pop("preset", "default")
        settings.update(n=self.n, seed=repeat)
        return SaliencyFingerprint.named(name, **settings)

    def task_adapter(self) -> Task:
        return task_named(self.task, similarity=self.similarity)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "values": array.tolist()}


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
    if path.is_file() and load_model(path).spec.info.get("recipe") == recipe:
        return path
    model, _ = train_new_model(data, arch=config.arch, width=config.width, config=train, task_name=config.task, progress=progress, desc="target")
    model.spec.info["recipe"] = recipe
    save_model(model, path)
    return path


def _fingerprints(scheme: SaliencyFingerprint, target: ImageModel, task: Task, data: DataSplits, path: Path, helpers: dict[str, list[ImageModel]], progress: bool) -> FingerprintSet:
    """Generate a set, or reuse the one at ``path`` if the same scheme made it for the same target and helpers."""
    hashes = {f"{OWNER_ROLES[role][0]}_sha256": [m.spec.info["sha256"] for m in models] for role, models in helpers.items()}
    if path.is_file():
        existing = FingerprintSet.load(path)
        same_helpers = all(existing.config.get(key, []) == value for key, value in hashes.items())
        if existing.target.get("sha256") == target.spec.info["sha256"] and repr(scheme) == existing.stats.get("scheme_repr") and same_helpers:
            return existing
    candidates, pairs = task.candidates(data.train)
    fingerprints = scheme.generate(target, candidates.images, candidates.labels, task, pairs=pairs, progress=progress, **helpers)
    fingerprints.stats["scheme_repr"] = repr(scheme)
    fingerprints.save(path)
    return fingerprints


def _verify_all(scheme, fingerprints: FingerprintSet, suspects: list[dict], cache_path: Path, progress: bool) -> dict[str, dict]:
    """Matching scores of every suspect in both modes; finished suspects are cached on disk (resume)."""
    key = fingerprints.sha256()
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if cache.get("fingerprints_sha256") != key:
        cache = {"fingerprints_sha256": key, "suspects": {}}
    for record in tqdm(suspects, desc="verify", unit="suspect", disable=not progress, leave=False):
        cached = cache["suspects"].get(record["name"])
        if cached and cached.get("sha256") == record["sha256"]:
            continue
        access = WhiteBox(load_model(record["path"]))
        results = {field: scheme.verify(access, fingerprints, mode=mode) for field, mode in MODES.items()}
        cache["suspects"][record["name"]] = {
            "sha256": record["sha256"],
            **{f"ms_{field}": r.matching_score for field, r in results.items()},
            "queries_black_box": results["black_box"].queries,
            "seconds": sum(r.elapsed_s for r in results.values()),
        }
        _write_json(cache_path, cache)
    return cache["suspects"]


def _detectors(target: ImageModel, data: DataSplits, fpr: float) -> tuple[FeatureSqueezing, DeepSVDD]:
    squeezing = FeatureSqueezing(fpr=fpr).fit(target, data.test.images)
    svdd = DeepSVDD(fpr=fpr).fit(data.train.images)
    return squeezing, svdd


def _stealth(target: ImageModel, fingerprints: FingerprintSet, detectors: tuple[FeatureSqueezing, DeepSVDD] | None) -> dict[str, float]:
    """Label invariance (``acc``: the share of samples whose output the target keeps, its label for classification),
    PSNR, SSIM and the detectors' rates; for regression and similarity also the largest output change over the
    tolerance (at most 1 for every kept sample)."""
    samples, originals = fingerprints.samples, fingerprints.tensors["originals"]
    figures = {
        "acc": float(fingerprints.stats["labels_kept"]),
        "psnr_db": float(fingerprints.stats["psnr_db_mean"]),
        "ssim": float(ssim(originals, samples).mean()),
    }
    tolerance = fingerprints.config.get("tolerance")
    if tolerance:
        task = fingerprints.task_adapter()
        with torch.no_grad():
            cond = task.condition_on(target, fingerprints.labels, fingerprints.tensors.get("pairs"))
            change = (task.score(target(samples), cond) - task.score(target(originals), cond)).abs()
        figures.update(tolerance=float(tolerance), output_change_max=float(change.max()), output_change_mean=float(change.mean()))
    if detectors is not None:
        squeezing, svdd = detectors
        figures.update(
            dr_feature_squeezing=squeezing.detection_rate(target, samples),
            dr_deepsvdd=svdd.detection_rate(samples),
            dr_feature_squeezing_originals=squeezing.detection_rate(target, originals),
            dr_deepsvdd_originals=svdd.detection_rate(originals),
        )
    return figures


def _separation(positive: list[float], negative: list[float]) -> dict[str, float]:
    return {
        "aruc": aruc(positive, negative),
        "auc": roc_auc(positive, negative),
        "tpr_at_1pct_fpr": tpr_at_fpr(positive, negative, 0.01),
    }


def gallery(fingerprints: FingerprintSet, models: dict[str, ImageModel], count: int = 6) -> dict[str, np.ndarray]:
    """Originals, fingerprints and the max-normalised Grad-CAM of each model on them, for the report's grid."""
    samples = fingerprints.samples[:count]
    labels = fingerprints.labels[:count]
    pairs = fingerprints.tensors.get("pairs")
    pairs = None if pairs is None else pairs[:count]
    task = fingerprints.task_adapter()
    arrays = {"originals": fingerprints.tensors["originals"][:count].numpy(), "samples": samples.numpy(), "pattern": fingerprints.tensors["pattern"].numpy()}
    logit = bool(fingerprints.config.get("cam_logit", True))
    for name, model in models.items():
        layer = fingerprints.config.get("layer")
        cond = task.condition_on(model, labels, pairs)
        with GradCAM(model, layer if layer in dict(model.named_modules()) else None) as cam:
            maps, _ = cam(samples, lambda o: task.score(o, cond, logit=logit))
        arrays[f"cam_{name}"] = normalise_maps(maps.detach(), "max").numpy()
    return arrays


def run_evaluation(config: EvaluationConfig, out_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the protocol and return the report data (also written to ``out_dir/report.json``).

    Returns:
        ``aruc``, ``auc`` and ``tpr_at_1pct_fpr`` per mode, ``stealth``, ``suspects`` (per-suspect test metric and
        matching scores), ``per_transform``, ``curves``, ``thresholds``, ``timings_s`` and ``config``; figures
        with repeats are ``{"mean", "std", "values"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    zoo_spec = config.zoo_spec()
    task = config.task_adapter()
    data = load_data(config.data)

    t = time.perf_counter()
    log("target ...")
    target_path = _target(config, data, out, progress)
    target = load_model(target_path, device=config.device)
    timings["target_s"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"zoo: {len(zoo_spec.positives)} positives, {len(zoo_spec.negatives)} negatives ({config.executor}) ...")
    manifest = build_zoo(zoo_spec, target_path, config.data, Path(config.zoo_dir or out / "zoo"), executor=config.executor, workers=config.workers, ray_address=config.ray_address, device=config.device, progress=progress)
    timings["zoo_s"] = time.perf_counter() - t
    suspects = manifest["suspects"]

    helpers: dict[str, list[ImageModel]] = {role: [] for role in OWNER_ROLES}
    owner_spec = config.owner_spec()
    if owner_spec is not None:
        t = time.perf_counter()
        log(f"owner's helper models: {config.references} references, {config.surrogates} surrogates, {config.calibration} calibration ...")
        owner = build_zoo(owner_spec, target_path, config.data, Path(config.owner_dir or out / "owner"), executor=config.executor, workers=config.workers, ray_address=config.ray_address, device=config.device, progress=progress)
        role_of_prefix = {prefix: role for role, (prefix, *_) in OWNER_ROLES.items()}
        for record in owner["suspects"]:
            role = role_of_prefix[record["name"].rpartition("_")[0]]  # reference_0 -> references
            helpers[role].append(load_model(record["path"], device=config.device))
        timings["owner_models_s"] = time.perf_counter() - t

    t = time.perf_counter()
    detectors = _detectors(target, data, config.detector_fpr) if config.detectors else None
    timings["detectors_s"] = time.perf_counter() - t

    per_repeat = []
    timings["generation_s"] = timings["verification_s"] = 0.0
    for repeat in range(config.repeats):
        scheme = config.fingerprint_scheme(repeat)
        t = time.perf_counter()
        log(f"repeat {repeat + 1}/{config.repeats}: fingerprints ...")
        fingerprints = _fingerprints(scheme, target, task, data, out / f"fingerprints-{repeat}.safetensors", helpers, progress)
        timings["generation_s"] += time.perf_counter() - t
        t = time.perf_counter()
        scores = _verify_all(scheme, fingerprints, suspects, out / f"verification-{repeat}.json", progress)
        timings["verification_s"] += time.perf_counter() - t
        per_repeat.append({
            "fingerprints": fingerprints,
            "scores": scores,
            "target_scores": {f"ms_{field}": scheme.verify(WhiteBox(target), fingerprints, mode=mode).matching_score for field, mode in MODES.items()},
            "stealth": _stealth(target, fingerprints, detectors),
        })

    report = _report(config, manifest, per_repeat, timings)
    report["task"] = {**task.to_config(), "metric_name": metric_name(config.task)}
    if config.task == "similarity":
        scores, same = pair_scores(predict(target, data.test.images), data.test.labels)
        report["task"].update(target_tar_at_far={str(far): tar_at_far(scores, same, far) for far in (0.01, 0.1)})
    if owner_spec is not None:
        report["owner_models"] = {**config.owner_counts(), "build_seconds": sum(r["build_seconds"] for r in owner["suspects"])}
    if suspects:
        first = per_repeat[0]["fingerprints"]
        pick = lambda kind: next((r for r in suspects if r["kind"] == kind), None)  # noqa: E731
        shown = {"target": target, **{kind: load_model(r["path"]) for kind in ("positive", "negative") if (r := pick(kind))}}
        np.savez_compressed(out / "gallery.npz", **gallery(first, shown))
        report["gallery"] = {kind: (pick(kind) or {}).get("name", kind) for kind in shown}
    _write_json(out / "report.json", report)
    return report


def _report(config: EvaluationConfig, manifest: dict, per_repeat: list[dict], timings: dict[str, float]) -> dict[str, Any]:
    suspects = manifest["suspects"]
    positives = [r["name"] for r in suspects if r["kind"] == "positive"]
    negatives = [r["name"] for r in suspects if r["kind"] == "negative"]
    separation = {field: [] for field in MODES}
    curves = {}
    for field in MODES:
        for repeat in per_repeat:
            pos = [repeat["scores"][n][f"ms_{field}"] for n in positives]
            neg = [repeat["scores"][n][f"ms_{field}"] for n in negatives]
            separation[field].append(_separation(pos, neg) if pos and neg else None)
        first = per_repeat[0]["scores"]
        if positives and negatives:
            curves[field] = ru_curves([first[n][f"ms_{field}"] for n in positives], [first[n][f"ms_{field}"] for n in negatives])

    def figure(name: str) -> dict[str, Any]:
        return {field: _mean_std([s[name] for s in separation[field]]) if all(separation[field]) else None for field in MODES}

    rows = []
    for record in suspects:
        row = {k: record[k] for k in ("name", "kind", "transform", "params", "seed", "test_metric", "metric_name", "recovered", "recovery_epochs")}
        for field in MODES:
            values = [repeat["scores"][record["name"]][f"ms_{field}"] for repeat in per_repeat]
            row[f"ms_{field}"] = float(np.mean(values))
            row[f"ms_{field}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    per_transform: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row["transform"]
        entry = per_transform.setdefault(key, {"kind": row["kind"], "count": 0, "ms_white_box": [], "ms_black_box": [], "test_metric": []})
        entry["count"] += 1
        for name in ("ms_white_box", "ms_black_box", "test_metric"):
            entry[name].append(row[name])
    for entry in per_transform.values():
        for name in ("ms_white_box", "ms_black_box", "test_metric"):
            entry[name] = float(np.mean(entry[name]))

    stealth_keys = per_repeat[0]["stealth"].keys()
    first_set: FingerprintSet = per_repeat[0]["fingerprints"]
    return {
        "aruc": figure("aruc"),
        "auc": figure("auc"),
        "tpr_at_1pct_fpr": figure("tpr_at_1pct_fpr"),
        "stealth": {k: _mean_std([r["stealth"][k] for r in per_repeat]) for k in stealth_keys},
        "target_scores": {k: _mean_std([r["target_scores"][k] for r in per_repeat]) for k in per_repeat[0]["target_scores"]},
        "suspects": rows,
        "per_transform": per_transform,
        "target": manifest["target"],
        "thresholds": [r["fingerprints"].thresholds for r in per_repeat],
        "fingerprint_stats": [{k: v for k, v in r["fingerprints"].stats.items() if isinstance(v, (int, float))} for r in per_repeat],
        "scheme": first_set.stats.get("scheme_repr"),
        "curves": curves,
        "counts": {"positives": len(positives), "negatives": len(negatives), "n": config.n, "repeats": config.repeats},
        "timings_s": timings,
        "config": config.to_dict(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
