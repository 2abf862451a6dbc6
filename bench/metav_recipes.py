"""Leave-one-recipe-out: MetaV learns from the owner's training zoo with one thief's recipe left out, and is scored on
the evaluation zoo's students of that recipe beside every independent model. Not a test.

For a finished evaluation folder (its target, zoo and report are reused; nothing of them is rebuilt; a
``paper-distill`` or ``quick-distill`` preset holds the distillation family) and a training zoo of this target
large enough that ``--size`` models remain when a recipe's positives are passed over: for each recipe of
:data:`modelprint.zoo.spec.TRAINING_THIEVES` that names students of the evaluation zoo (``distill_0`` .. are the
paper zoo's ``distill`` recipe, ``extract_0`` the preset's ``extract``), and first with nothing left out, ``--sets``
sets are learnt (seeds 0..), the recipes each learnt from are checked to exclude the held-out one, and the held-out
students' black-box scores are compared with the verdict's threshold and with every independent model's. Every
row goes to ``OUT/recipes.json``.

    python bench/metav_recipes.py runs/paper-distill --training-zoo runs/paper/training_zoo --size 20 --sets 3 --out runs/recipes46
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from modelprint.access import WhiteBox
from modelprint.data import load_data
from modelprint.fingerprints import scheme_named
from modelprint.models import load_model
from modelprint.protocol.training_zoo import training_helpers, training_records
from modelprint.tasks import task_from_config
from modelprint.zoo.spec import TRAINING_THIEVES, training_recipe

RECIPES = tuple(name for name, _, _ in TRAINING_THIEVES)


def evaluation_recipe(name: str) -> str:
    """The recipe of an evaluation zoo's student: its name when a recipe's (the distillation family), else the name
    without its number (``distill_2`` -> ``distill``)."""
    return name if name in RECIPES else re.sub(r"_\d+$", "", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished evaluation folder")
    parser.add_argument("--training-zoo", type=Path, required=True)
    parser.add_argument("--size", type=int, default=20, help="training models each set learns from")
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--recipes", default="", help="comma-separated recipes to hold out (default: every one with students in the zoo)")
    parser.add_argument("--set", default="", help="MetaV settings, e.g. 'steps=600'")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = json.loads((args.run / "report.json").read_text())
    zoo = json.loads((args.run / "zoo" / "manifest.json").read_text())["suspects"]
    training = json.loads((args.training_zoo / "manifest.json").read_text())
    task = task_from_config({k: v for k, v in report["task"].items() if k in ("name", "metric", "tolerance")})
    target = load_model(args.run / "target.safetensors")
    data = load_data(report["config"]["data"], channels=target.spec.channels, size=target.spec.input_size[0])
    candidates, pairs = task.candidates(data.train)
    settings = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set.split(",") if a)}
    students = {r: [s for s in zoo if s["kind"] == "positive" and evaluation_recipe(s["name"]) == r] for r in RECIPES}
    held_out = [r for r in (args.recipes.split(",") if args.recipes else RECIPES) if students.get(r)]
    negatives = [s for s in zoo if s["kind"] == "negative"]
    loaded = {s["name"]: load_model(s["path"]) for s in negatives + [s for r in held_out for s in students[r]]}
    print(f"{len(negatives)} independent models; held out in turn: {', '.join(held_out)}")
    print("| held out | students | mean score | lowest | declared (> threshold) | above every independent | highest independent | independent declared |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for recipe in ["", *held_out]:
        leave_out = (recipe,) if recipe else ()
        scored = students[recipe] if recipe else [s for r in held_out for s in students[r]]
        for seed in range(args.sets):
            scheme = scheme_named("metav", **{"training_models": args.size, **settings, "seed": seed})
            size, checkpoints = scheme.training_zoo()
            learnt = {training_recipe(r["name"]) for r in training_records(training, size, checkpoints=checkpoints, leave_out=leave_out)[0]}
            assert recipe not in learnt, f"recipe {recipe} was not left out"
            helpers, _ = training_helpers(training, size, checkpoints=checkpoints, leave_out=leave_out)
            fingerprints = scheme.generate(target, candidates.images, candidates.labels, task, pairs=pairs, progress=False, **helpers)
            threshold = fingerprints.thresholds["black_box"]
            score = lambda name: scheme.verify(WhiteBox(loaded[name]), fingerprints, mode="black-box").matching_score  # noqa: E731
            positive = {s["name"]: score(s["name"]) for s in scored}
            negative = {s["name"]: score(s["name"]) for s in negatives}
            top = max(negative.values())
            rows.append({"held_out": recipe or None, "seed": seed, "learnt_recipes": sorted(learnt - {""}), "threshold": threshold,
                         "students": positive, "independent": negative})
            print(f"| {recipe or '(none)'} (set {seed}) | {len(positive)} | {sum(positive.values()) / len(positive):.3f} | {min(positive.values()):.3f} | "
                  f"{sum(v > threshold for v in positive.values())}/{len(positive)} | {sum(v > top for v in positive.values())}/{len(positive)} | "
                  f"{top:.3f} | {sum(v > threshold for v in negative.values())}/{len(negative)} |", flush=True)
            (args.out / "recipes.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
