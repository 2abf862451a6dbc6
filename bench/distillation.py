"""Each distilled student of a finished evaluation against every scheme, per mode. Not a test.

Reads OUT/report.json (the scores are the mean over the repeats) and prints, as Markdown, one row per distilled
student with its recipe (what differs from the paper zoo's: temperature, labels, optimiser, student architecture,
transfer data), its test accuracy and its score under every scheme and mode; then the highest independent model's
score, and per scheme and mode in how many sets every student lies above every independent model:

    python bench/distillation.py runs/paper_distill
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULTS = {"temperature": 4.0, "labels": "soft", "optimizer": "sgd", "arch": None, "transfer": None}


def changes(params: dict) -> list[str]:
    """What a student's recipe changes from the paper zoo's distillation (empty for the paper zoo's own students)."""
    changed = [f"{k}={Path(v).name if k == 'transfer' else v}" for k, v in params.items() if k in DEFAULTS and v != DEFAULTS[k]]
    if params.get("labels") == "top_k":
        changed.append(f"top_k={params.get('top_k', 3)}")
    return changed


def recipe(params: dict) -> str:
    """What a student's recipe changes from the paper zoo's distillation, in a few words."""
    return ", ".join(changes(params)) or "paper zoo's (T=4, soft, SGD, same arch, own split)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the evaluation's output folder (holds report.json)")
    args = parser.parse_args()
    report_file = args.run / "report.json"
    if not report_file.is_file():
        sys.exit(f"no report.json in {args.run}: run `modelprint evaluate --out {args.run}` first")
    report = json.loads(report_file.read_text())
    columns = [(name, mode) for name, block in report["schemes"].items() for mode in ("white_box", "black_box")
               if block["aruc"].get(mode) is not None]
    students = [s for s in report["suspects"] if s["transform"] == "distill"]
    independent = [s for s in report["suspects"] if s["kind"] == "negative"]
    head = ["student", "recipe", "test accuracy", *(f"{n} {m.replace('_', '-')}" for n, m in columns)]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    score = lambda s, n, m: s["schemes"][n][f"ms_{m}"]  # noqa: E731
    for s in students:
        print(f"| {s['name']} | {recipe(s['params'])} | {s['test_metric']:.3f} | " + " | ".join(f"{score(s, n, m):.3f}" for n, m in columns) + " |")
    highest = {c: max(score(s, *c) for s in independent) for c in columns}
    print("| highest independent |  |  | " + " | ".join(f"{highest[c]:.3f}" for c in columns) + " |")
    print()
    names = {s["name"] for s in students}, {s["name"] for s in independent}
    for scheme, mode in columns:  # per set: every student above every independent model?
        separated, sets = 0, sorted((args.run / scheme).glob("verification-*.json"))
        for path in sets:
            cache = json.loads(path.read_text())["suspects"]
            lowest = min(cache[n][f"ms_{mode}"] for n in names[0] if n in cache)
            highest_set = max(cache[n][f"ms_{mode}"] for n in names[1] if n in cache)
            separated += lowest > highest_set
        print(f"{scheme} {mode.replace('_', '-')}: every student above every independent model in {separated} of {len(sets)} sets")

if __name__ == "__main__":
    main()
