"""The figures of an evaluation: per scheme and mode the separation of pirated copies from independent models
(ARUC, ROC AUC, TPR at 1% FPR) as mean and standard deviation over the repeats, scores per suspect and transform,
stealth, and the R/U curves of the first repeat."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..fingerprints import FingerprintSet
from ..metrics import aruc, roc_auc, ru_curves, tpr_at_fpr

#: Report keys of the two verification modes.
MODE_KEYS = {"white-box": "white_box", "black-box": "black_box"}


def mean_std(values: list[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0, "values": array.tolist()}


def separation(positive: list[float], negative: list[float]) -> dict[str, float]:
    return {"aruc": aruc(positive, negative), "auc": roc_auc(positive, negative), "tpr_at_1pct_fpr": tpr_at_fpr(positive, negative, 0.01)}


def scheme_summary(modes: tuple[str, ...], suspects: list[dict], per_repeat: list[dict]) -> dict[str, Any]:
    """One scheme's figures.

    Args:
        modes: the scheme's verification modes.
        suspects: the zoo manifest's suspect records.
        per_repeat: per repeat ``scores`` (suspect -> ``ms_<mode>``, ``queries_<mode>``), ``fingerprints``,
            ``target_scores`` and ``stealth``.

    Returns:
        ``aruc``, ``auc``, ``tpr_at_1pct_fpr`` per mode key (None for a mode the scheme does not offer),
        ``curves``, ``scores`` (per suspect: mean and std per mode), ``per_transform``, ``stealth``,
        ``target_scores``, ``thresholds``, ``queries`` (per verification, per mode) and ``fingerprint_stats``.
    """
    fields = [MODE_KEYS[m] for m in modes]
    positives = [r["name"] for r in suspects if r["kind"] == "positive"]
    negatives = [r["name"] for r in suspects if r["kind"] == "negative"]
    found: dict[str, list] = {f: [] for f in MODE_KEYS.values()}
    curves = {}
    for field in fields:
        for repeat in per_repeat:
            pos = [repeat["scores"][n][f"ms_{field}"] for n in positives]
            neg = [repeat["scores"][n][f"ms_{field}"] for n in negatives]
            found[field].append(separation(pos, neg) if pos and neg else None)
        first = per_repeat[0]["scores"]
        if positives and negatives:
            curves[field] = ru_curves([first[n][f"ms_{field}"] for n in positives], [first[n][f"ms_{field}"] for n in negatives])

    def figure(name: str) -> dict[str, Any]:
        return {f: mean_std([s[name] for s in found[f]]) if found[f] and all(found[f]) else None for f in MODE_KEYS.values()}

    scores: dict[str, dict[str, float]] = {}
    for record in suspects:
        entry: dict[str, float] = {}
        for field in fields:
            values = [repeat["scores"][record["name"]][f"ms_{field}"] for repeat in per_repeat]
            entry[f"ms_{field}"] = float(np.mean(values))
            entry[f"ms_{field}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        scores[record["name"]] = entry
    per_transform: dict[str, dict[str, Any]] = {}
    for record in suspects:
        entry = per_transform.setdefault(record["transform"], {"kind": record["kind"], "count": 0, "test_metric": [], **{f"ms_{f}": [] for f in fields}})
        entry["count"] += 1
        entry["test_metric"].append(record["test_metric"])
        for field in fields:
            entry[f"ms_{field}"].append(scores[record["name"]][f"ms_{field}"])
    for entry in per_transform.values():
        for key in ("test_metric", *(f"ms_{f}" for f in fields)):
            entry[key] = float(np.mean(entry[key]))
    queries = {f: float(np.mean([s.get(f"queries_{f}", 0) for r in per_repeat for s in r["scores"].values()])) for f in fields}
    stealth_keys = set.intersection(*(set(r["stealth"]) for r in per_repeat))
    return {
        "aruc": figure("aruc"),
        "auc": figure("auc"),
        "tpr_at_1pct_fpr": figure("tpr_at_1pct_fpr"),
        "curves": curves,
        "scores": scores,
        "per_transform": per_transform,
        "stealth": {k: mean_std([r["stealth"][k] for r in per_repeat]) for k in sorted(stealth_keys)},
        "target_scores": {k: mean_std([r["target_scores"][k] for r in per_repeat]) for k in per_repeat[0]["target_scores"]},
        "thresholds": [r["fingerprints"].thresholds for r in per_repeat],
        "queries": queries,
        "fingerprint_stats": [{k: v for k, v in r["fingerprints"].stats.items() if isinstance(v, (int, float))} for r in per_repeat],
        "scheme": per_repeat[0]["fingerprints"].stats.get("scheme_repr"),
        "generation_s": mean_std([float(r["fingerprints"].stats.get("generation_s", 0.0)) for r in per_repeat]),
    }


def report(config: Any, manifest: dict, blocks: dict[str, dict[str, Any]], timings: dict[str, float], first_set: FingerprintSet) -> dict[str, Any]:
    """The report: every scheme's block under ``schemes``, and the first scheme's figures at the top level (the
    headline, and what report pages written before several schemes existed read)."""
    suspects = manifest["suspects"]
    name = next(iter(blocks))
    head = blocks[name]
    rows = []
    for record in suspects:
        row = {k: record[k] for k in ("name", "kind", "transform", "params", "seed", "test_metric", "metric_name", "recovered", "recovery_epochs")}
        row.update(head["scores"][record["name"]])
        row["schemes"] = {scheme: block["scores"][record["name"]] for scheme, block in blocks.items()}
        rows.append(row)
    return {
        **{k: head[k] for k in ("aruc", "auc", "tpr_at_1pct_fpr", "stealth", "target_scores", "per_transform", "thresholds", "fingerprint_stats", "curves")},
        "scheme": head["scheme"],
        "scheme_name": name,
        "schemes": {scheme: {k: v for k, v in block.items() if k != "scores"} for scheme, block in blocks.items()},
        "suspects": rows,
        "target": manifest["target"],
        "counts": {"positives": sum(r["kind"] == "positive" for r in suspects), "negatives": sum(r["kind"] == "negative" for r in suspects),
                   "n": config.n, "repeats": config.repeats},
        "timings_s": timings,
        "config": config.to_dict(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
