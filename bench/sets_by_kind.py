"""One zoo read by several folders of fingerprint sets, per kind of suspect and mode: a before/after table. Not a test.

For a finished evaluation (its zoo manifest) and folders of sets in it (``saliency`` as evaluated, and those that
``bench/surrogate_recipes.py`` makes), prints per folder and mode the ROC AUC of each set over every positive and over
the paper zoo's alone (the distillation family's students left out), the mean ARUC of both, and per kind of suspect
(fine-tuned, retrained, weight-pruned, filter-pruned, the paper zoo's students, each family student on its own row,
independent models) the mean score over the sets with its lowest and highest. Only the sets present in every folder
are read, so the folders compare like for like:

    python bench/sets_by_kind.py runs/paper_distill saliency saliency-p2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distillation import DEFAULTS, recipe  # the family's recipes, as bench/distillation.py names them

from modelprint.metrics import aruc, roc_auc

MODES = ("white_box", "black_box")
#: The rows' order; each family student comes between the paper zoo's students and the independent models.
ORDER = ["finetune", "retrain", "weight_prune", "filter_prune", "paper zoo's students", "student", "independent"]


def kind(suspect: dict) -> str:
    """The row a suspect is counted in: its transform, or a family student's own recipe."""
    params = suspect.get("params") or {}
    if suspect["transform"] == "distill" and any(k in params and params[k] != v for k, v in DEFAULTS.items()):
        return f"student: {recipe(params)}"
    return {"distill": "paper zoo's students"}.get(suspect["transform"], suspect["transform"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished evaluation's output folder (holds zoo/manifest.json)")
    parser.add_argument("folders", nargs="+", help="folders of sets in RUN (each with verification-K.json files)")
    args = parser.parse_args()
    manifest = args.run / "zoo" / "manifest.json"
    if not manifest.is_file():
        sys.exit(f"no zoo/manifest.json in {args.run}: run `modelprint evaluate --out {args.run}` first")
    suspects = {s["name"]: s for s in json.loads(manifest.read_text())["suspects"]}
    present = [{p.name for p in (args.run / f).glob("verification-*.json")} for f in args.folders]
    sets = sorted(set.intersection(*present))
    if not sets:
        sys.exit(f"no set has been verified in every one of {', '.join(args.folders)}")
    print(f"{len(sets)} set(s) read in each folder: {', '.join(sets)}")
    for mode in MODES:
        columns = [column(args.run / folder, sets, suspects, mode) for folder in args.folders]
        labels = list(dict.fromkeys(label for c in columns for label in c))
        print(f"\n### {mode.replace('_', '-')}\n\n| | " + " | ".join(args.folders) + " |\n|" + "---|" * (len(args.folders) + 1))
        for label in labels:
            print(f"| {label} | " + " | ".join(c.get(label, "") for c in columns) + " |")


def column(folder: Path, sets: list[str], suspects: dict[str, dict], mode: str) -> dict[str, str]:
    """One folder's cells for one mode: ROC AUC per set, mean ARUC, and each kind's mean (lowest-highest)."""
    caches = [json.loads((folder / name).read_text())["suspects"] for name in sets]
    if any(f"ms_{mode}" not in value for cache in caches for value in cache.values()):
        return {}  # a folder made for the other mode only
    by_kind: dict[str, list[float]] = {}
    auc_all, auc_paper, aruc_all, aruc_paper = [], [], [], []
    for cache in caches:
        scored = {n: v[f"ms_{mode}"] for n, v in cache.items() if n in suspects}
        for name, value in scored.items():
            by_kind.setdefault(kind(suspects[name]), []).append(value)
        neg = [v for n, v in scored.items() if suspects[n]["kind"] == "negative"]
        pos = [v for n, v in scored.items() if suspects[n]["kind"] == "positive"]
        paper = [v for n, v in scored.items() if suspects[n]["kind"] == "positive" and not kind(suspects[n]).startswith("student")]
        auc_all.append(roc_auc(pos, neg))
        auc_paper.append(roc_auc(paper, neg))
        aruc_all.append(aruc(pos, neg))
        aruc_paper.append(aruc(paper, neg))
    order = sorted(by_kind, key=lambda k: (ORDER.index("student" if k.startswith("student") else k), k))
    return {
        "ROC AUC per set, every positive": " / ".join(f"{a:.3f}" for a in auc_all),
        "ROC AUC per set, paper zoo": " / ".join(f"{a:.3f}" for a in auc_paper),
        "ARUC, every positive / paper zoo": f"{sum(aruc_all) / len(sets):.3f} / {sum(aruc_paper) / len(sets):.3f}",
        **{k: f"{sum(by_kind[k]) / len(by_kind[k]):.3f} ({min(by_kind[k]):.2f}-{max(by_kind[k]):.2f})" for k in order},
    }


if __name__ == "__main__":
    main()
