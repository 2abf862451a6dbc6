"""One zoo read by several folders of fingerprint sets, per kind of suspect and mode: a before/after table. Not a test.

For a finished evaluation (its zoo manifest) and folders of sets in it (``saliency`` as evaluated, and those that
``research/surrogate_recipes.py`` makes), prints per folder and mode the ROC AUC of each set over every positive and over
the paper zoo's alone (the distillation family's students left out), the mean ARUC of both, and per kind of suspect
(fine-tuned, retrained, weight-pruned, filter-pruned, the paper zoo's students, each family student on its own row,
independent models) the mean score over the sets with its lowest and highest. Only the sets present in every folder
are read, so the folders compare like for like:

    python research/sets_by_kind.py runs/paper_distill saliency saliency-p2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import fmean

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from distillation import changes  # noqa: E402  (the family's recipes, as bench/distillation.py names them)

from modelprint.protocol.summary import separation  # noqa: E402

MODES = ("white_box", "black_box")
#: The rows' order; each family student comes between the paper zoo's students and the independent models.
ORDER = ["finetune", "retrain", "weight_prune", "filter_prune", "paper zoo's students", "student", "independent"]
FAMILY = "student: "


def kind(suspect: dict) -> str:
    """The row a suspect is counted in: its transform, or a family student's own recipe."""
    changed = changes(suspect.get("params") or {}) if suspect["transform"] == "distill" else []
    if changed:
        return FAMILY + ", ".join(changed)
    return {"distill": "paper zoo's students"}.get(suspect["transform"], suspect["transform"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished evaluation's output folder (holds zoo/manifest.json)")
    parser.add_argument("folders", nargs="+", help="folders of sets in RUN (each with verification-K.json files)")
    args = parser.parse_args()
    manifest = args.run / "zoo" / "manifest.json"
    if not manifest.is_file():
        sys.exit(f"no zoo/manifest.json in {args.run}: run `modelprint evaluate --out {args.run}` first")
    suspects = {s["name"]: {**s, "row": kind(s)} for s in json.loads(manifest.read_text())["suspects"]}
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
    """One folder's cells for one mode: ROC AUC per set, mean ARUC, and each kind's mean (lowest-highest). A cached
    score of a suspect whose file has changed since (another sha256 than the manifest's) is not read."""
    caches = [{n: v for n, v in json.loads((folder / name).read_text())["suspects"].items()
               if n in suspects and v.get("sha256") == suspects[n]["sha256"]} for name in sets]
    if not all(caches):
        sys.exit(f"{folder}: a set holds no score of the zoo's suspects as they are now; verify them again")
    if any(f"ms_{mode}" not in value for cache in caches for value in cache.values()):
        return {}  # a folder made for the other mode only
    by_kind: dict[str, list[float]] = {}
    every, paper = [], []  # per set: separation() over every positive, over the paper zoo's alone
    for cache in caches:
        scored = {n: v[f"ms_{mode}"] for n, v in cache.items()}
        for name, value in scored.items():
            by_kind.setdefault(suspects[name]["row"], []).append(value)
        neg = [v for n, v in scored.items() if suspects[n]["kind"] == "negative"]
        pos = [v for n, v in scored.items() if suspects[n]["kind"] == "positive"]
        pos_paper = [v for n, v in scored.items() if suspects[n]["kind"] == "positive" and not suspects[n]["row"].startswith(FAMILY)]
        every.append(separation(pos, neg))
        paper.append(separation(pos_paper, neg))
    order = sorted(by_kind, key=lambda k: (ORDER.index("student" if k.startswith(FAMILY) else k), k))
    return {
        "ROC AUC per set, every positive": " / ".join(f"{f['auc']:.3f}" for f in every),
        "ROC AUC per set, paper zoo": " / ".join(f"{f['auc']:.3f}" for f in paper),
        "ARUC, every positive / paper zoo": f"{fmean(f['aruc'] for f in every):.3f} / {fmean(f['aruc'] for f in paper):.3f}",
        **{k: f"{sum(by_kind[k]) / len(by_kind[k]):.3f} ({min(by_kind[k]):.2f}-{max(by_kind[k]):.2f})" for k in order},
    }


if __name__ == "__main__":
    main()
