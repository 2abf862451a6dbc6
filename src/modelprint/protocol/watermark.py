"""The watermark protocol: mark the host, build the suspect zoo from the marked model, verify every suspect with
the key, and measure what the mark costs the host.

Per watermark scheme and repeat ``r`` (the key's seed), under ``OUT/<scheme>/``: ``marked-r.safetensors`` and
``key-r.safetensors`` (reused when the same settings marked the same host), ``zoo-r/`` (the evaluation zoo's
positives made from the marked model, plus the attacks aimed at watermarks: overwriting with the thief's own key of
the same scheme, and fine-pruning) and ``verification-r.json``. Negatives: the unmarked host and the evaluation
zoo's independent models, the very ones the fingerprints meet. Everything resumes as the fingerprint protocol does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from ..access import WhiteBox
from ..data import DataSplits
from ..models import ImageModel, load_model, save_model
from ..train import metric_name
from ..watermarks import WatermarkKey, WatermarkScheme, watermark_entry
from ..watermarks.ambiguity import ambiguity, forged_keys
from ..watermarks.fidelity import fidelity, projection, read_test
from ..zoo.build import build_zoo
from ..zoo.spec import POSITIVE, SuspectSpec, ZooSpec
from .scores import verify_all, write_json
from .summary import MODE_KEYS, mean_std, scheme_summary

#: The verdict level whose false-positive rate on the negatives the report states.
ALPHA = 0.05


def attacks(scheme: str) -> tuple[SuspectSpec, ...]:
    """The zoo's attacks aimed at watermarks: overwriting with a key of the thief's (same scheme) and fine-pruning."""
    return (SuspectSpec("overwrite", POSITIVE, "overwrite", {"scheme": scheme}, 601), SuspectSpec("fine_prune", POSITIVE, "fine_prune", {}, 602))


def marked_zoo_spec(zoo: ZooSpec, scheme: str) -> ZooSpec:
    """The suspects made from the marked model: the evaluation zoo's positives and :func:`attacks`."""
    return ZooSpec((*zoo.positives, *attacks(scheme)))


def embed_or_reuse(scheme: WatermarkScheme, host: ImageModel, data: DataSplits, folder: Path, repeat: int, progress: bool,
                   device: str = "cpu") -> tuple[Path, ImageModel, WatermarkKey]:
    """The marked model (its file and the model) and the key of ``repeat``: the ones in ``folder`` when the same
    settings marked this host, else made now (the model written first, the key last: a key on disk has its model)."""
    marked_path, key_path = folder / f"marked-{repeat}.safetensors", folder / f"key-{repeat}.safetensors"
    if marked_path.is_file() and key_path.is_file():
        key = WatermarkKey.load(key_path)
        if key.config.get("host_sha256") == host.spec.info["sha256"] and key.stats.get("scheme_repr") == repr(scheme):
            marked = load_model(marked_path, device=device)
            if marked.spec.info["sha256"] == key.target.get("sha256"):
                return marked_path, marked, key
    marked, key = scheme.embed(host, data.train, progress=progress, held_out=data.test)
    key.stats["scheme_repr"] = repr(scheme)
    save_model(marked, marked_path)
    key.save(key_path)
    return marked_path, marked, key


def host_record(host_path: Path, host: ImageModel, seed: int) -> dict[str, Any]:
    """The unmarked host as a negative suspect, in the form of a zoo manifest's records."""
    return {"name": "host", "kind": "negative", "transform": "host", "params": {}, "seed": seed, "path": str(host_path),
            "sha256": host.spec.info["sha256"], "test_metric": host.spec.info.get("test_metric"), "metric_name": metric_name(host.spec.task),
            "build_seconds": 0.0, "recovered": None, "recovery_epochs": 0}


def watermark_block(name: str, config: Any, host_path: Path, host: ImageModel, data: DataSplits, host_manifest: dict[str, Any], out: Path, *,
                    executor: dict[str, Any], progress: bool = True, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run the protocol of watermark ``name`` for every repeat of ``config`` and return its figures.

    Returns:
        :func:`~modelprint.protocol.summary.scheme_summary`'s figures over the marked zoos' positives and the
        negatives (ARUC, ROC AUC, TPR at 1% FPR per mode; per suspect and per transform the score: 1 - bit error
        rate white-box, key accuracy black-box), and ``fidelity`` (:func:`fidelity`), ``verdicts`` (per mode, the
        share of negatives and of positives whose p-value is at most :data:`ALPHA`), ``embedding_s`` and
        ``marked_zoo_s``, each as mean and standard deviation over the repeats; ``ambiguity`` (per mode, how many
        forged keys the marked models and the negatives verify, summed over the repeats) and ``projection`` (the
        first key's 2-D picture, :func:`~modelprint.watermarks.fidelity.projection`).
    """
    base = watermark_entry(name)[0]
    folder = out / name.replace(":", "-")
    folder.mkdir(parents=True, exist_ok=True)
    negatives = [r for r in host_manifest["suspects"] if r["kind"] == "negative"] + [host_record(host_path, host, config.seed)]
    per_repeat, zoo_seconds, first_suspects, picture = [], [], None, None
    spec, host_reading = marked_zoo_spec(config.zoo_spec(), base), read_test(host, data)
    for repeat in range(config.repeats):
        scheme = config.watermark_scheme(name, repeat)
        log(f"watermark {name}, key {repeat + 1}/{config.repeats}: embedding ...")
        marked_path, marked, key = embed_or_reuse(scheme, host, data, folder, repeat, progress, config.device)
        t = time.perf_counter()
        log(f"watermark {name}, key {repeat + 1}/{config.repeats}: the marked model's zoo ...")
        manifest = build_zoo(spec, marked_path, config.data, folder / f"zoo-{repeat}", progress=progress, **executor)
        zoo_seconds.append(time.perf_counter() - t)
        suspects = manifest["suspects"] + negatives
        first_suspects = first_suspects or suspects
        scores = verify_all(scheme, key, suspects, folder / f"verification-{repeat}.json", progress)
        marked_reading = read_test(marked, data)
        per_repeat.append({
            "fingerprints": key,
            "scores": scores,
            "target_scores": {f"ms_{MODE_KEYS[m]}": scheme.verify(WhiteBox(marked), key, mode=m).matching_score for m in scheme.modes},
            "stealth": {},
            "fidelity": fidelity(host_reading, marked_reading, host.spec.task, models=(host, marked)),
            "ambiguity": ambiguity_counts(scheme, key, marked, negatives, config.ambiguity_keys, folder / f"ambiguity-{repeat}.json", progress),
        })
        picture = picture or projection(host_reading, marked_reading)  # the first key's
    block = scheme_summary(scheme.modes, first_suspects, per_repeat)  # type: ignore[arg-type]
    block["fidelity"] = {k: mean_std([r["fidelity"][k] for r in per_repeat]) for k in per_repeat[0]["fidelity"]}
    block["verdicts"] = {MODE_KEYS[m]: _verdict_rates(per_repeat, first_suspects, MODE_KEYS[m]) for m in scheme.modes}  # type: ignore[arg-type]
    block["embedding_s"] = mean_std([float(r["fingerprints"].stats.get("embedding_s", 0.0)) for r in per_repeat])
    block["marked_zoo_s"] = mean_std(zoo_seconds)
    block["ambiguity"] = _ambiguity_summary(per_repeat, scheme.modes)  # type: ignore[arg-type]
    block["projection"] = picture
    block["suspects"] = [{k: r.get(k) for k in ("name", "kind", "transform", "params", "seed", "test_metric", "metric_name")} for r in first_suspects]  # type: ignore[union-attr]
    return block


def _verdict_rates(per_repeat: list[dict[str, Any]], suspects: list[dict[str, Any]], field: str) -> dict[str, Any]:
    """The share of negatives (false positives) and positives (true positives) declared at :data:`ALPHA` by the
    scheme's own p-values, per repeat and as mean and standard deviation."""
    rates: dict[str, list[float]] = {"false_positive_rate": [], "true_positive_rate": []}
    for repeat in per_repeat:
        for kind, key in (("negative", "false_positive_rate"), ("positive", "true_positive_rate")):
            p = [repeat["scores"][r["name"]].get(f"p_{field}") for r in suspects if r["kind"] == kind]
            rates[key].append(float(np.mean([v is not None and v <= ALPHA for v in p])))
    return {"alpha": ALPHA, **{k: mean_std(v) for k, v in rates.items()}}


def ambiguity_counts(scheme: WatermarkScheme, key: WatermarkKey, marked: ImageModel, negatives: list[dict[str, Any]], keys: int,
                     cache_path: Path, progress: bool) -> dict[str, Any]:
    """The ambiguity test of one key (:mod:`modelprint.watermarks.ambiguity`): ``keys`` forged keys verified on the
    marked model and on every negative, counted at :data:`ALPHA`; cached in ``cache_path`` for this key (resume)."""
    if keys == 0:
        return {}
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if cache.get("key_sha256") == key.sha256() and cache.get("keys") == keys:
        return cache
    forged = forged_keys(scheme, key, keys)
    models = [("marked", marked)] + [(r["name"], None) for r in negatives]
    paths = {r["name"]: r["path"] for r in negatives}
    counts = {}
    for name, model in tqdm(models, desc=f"ambiguity {scheme.name}", unit="model", disable=not progress, leave=False):
        access = WhiteBox(model if model is not None else load_model(paths[name]))
        counts[name] = ambiguity(scheme, forged, access, alpha=ALPHA).summary()
    cache = {"key_sha256": key.sha256(), "keys": keys, "models": counts}
    write_json(cache_path, cache)
    return cache


def _ambiguity_summary(per_repeat: list[dict[str, Any]], modes: tuple[str, ...]) -> dict[str, Any]:
    """Per mode: forged keys declared on the marked models and on the negatives, over all repeats, with the trials."""
    summary: dict[str, Any] = {}
    for mode in modes:
        marked = negatives = marked_trials = negative_trials = 0
        for repeat in per_repeat:
            for name, count in repeat["ambiguity"].get("models", {}).items():
                declared, trials = count["declared"].get(mode, 0), count["keys"]
                if name == "marked":
                    marked, marked_trials = marked + declared, marked_trials + trials
                else:
                    negatives, negative_trials = negatives + declared, negative_trials + trials
        summary[MODE_KEYS[mode]] = {"alpha": ALPHA, "marked_declared": marked, "marked_trials": marked_trials,
                                    "negatives_declared": negatives, "negatives_trials": negative_trials}
    return summary
