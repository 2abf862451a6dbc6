"""Leave-one-recipe-out: a scheme that learns from the owner's models (MetaV from the training zoo; the saliency
``owner`` configuration and ConferAE from distilled surrogates and independent references) learns with one thief's
recipe left out, and is scored on the evaluation zoo's students of that recipe beside every independent model. Not
a test.

For a finished evaluation folder (its target, zoo and report are reused; nothing of them is rebuilt; a
``paper-distill`` or ``quick-distill`` preset holds the distillation family) and a training zoo of this target
large enough that ``--size`` models remain when a recipe's positives are passed over: for each recipe of
:data:`modelprint.zoo.spec.TRAINING_THIEVES` that names students of the evaluation zoo (``distill_0`` .. are the
paper zoo's ``distill`` recipe, ``extract_0`` the preset's ``extract``), and first with nothing left out, ``--sets``
sets are made (seeds 0..), the recipes each learnt from are checked to exclude the held-out one, and the held-out
students' black-box scores are compared with the verdict's threshold and with every independent model's. A scheme
that reads the owner's helper models (``--scheme saliency:owner``, ``conferae``) gets them from the same training
zoo: its surrogates are the first thieves' students there (the held-out recipe's passed over), its references and
calibration models the first independent ones. Every row goes to ``OUT/SCHEME.json``.

    python bench/recipes.py runs/paper-distill --training-zoo runs/paper/training_zoo --size 56 --sets 3 --out runs/recipes46
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from modelprint.access import WhiteBox
from modelprint.data import load_data
from modelprint.fingerprints import SCHEMES
from modelprint.models import load_model
from modelprint.protocol.training_zoo import training_helpers, training_records
from modelprint.zoo.spec import NEGATIVE, POSITIVE
from modelprint.tasks import task_from_config
from modelprint.zoo.spec import TRAINING_THIEVES, training_recipe

RECIPES = tuple(name for name, _, _ in TRAINING_THIEVES)


def evaluation_recipe(name: str) -> str:
    """The recipe of an evaluation zoo's student: its name when a recipe's (the distillation family), else the name
    without its number (``distill_2`` -> ``distill``)."""
    return name if name in RECIPES else re.sub(r"_\d+$", "", name)


def owner_helpers(training: dict, counts: dict[str, int], leave_out: tuple[str, ...]) -> tuple[dict, set[str]]:
    """The helper models a scheme that reads the owner's models gets from a training zoo: its surrogates the first
    thieves' students (none of ``leave_out``), its references and then its calibration models the first independent
    models; and the recipes of its surrogates."""
    records = training["suspects"]
    thieves = [r for r in records if r["kind"] == POSITIVE and r["transform"] in ("distill", "extract") and training_recipe(r["name"]) not in leave_out]
    independent = [r for r in records if r["kind"] == NEGATIVE]
    surrogates = thieves[: counts.get("surrogates", 0)]
    references = independent[: counts.get("references", 0)]
    calibration = independent[len(references): len(references) + counts.get("calibration", 0)]
    if len(surrogates) < counts.get("surrogates", 0) or len(references) + len(calibration) < counts.get("references", 0) + counts.get("calibration", 0):
        raise SystemExit("the training zoo holds too few thieves' students or independent models for this scheme's helpers")
    load = lambda group: [load_model(r["path"]) for r in group]  # noqa: E731
    return ({"references": load(references), "surrogates": load(surrogates), "calibration": load(calibration)},
            {training_recipe(r["name"]) for r in surrogates})


def summarize(rows: list[dict]) -> None:
    """Per held-out recipe, its students' mean score when the recipe was learnt from (the row with nothing left
    out) and when it was left out, against the verdict's threshold and the highest independent model."""
    print("| recipe | score, learnt from | score, left out | declared when left out | above every independent when left out | sets |")
    print("|---|---|---|---|---|---|")
    base = [r for r in rows if r["held_out"] is None]
    for recipe in dict.fromkeys(r["held_out"] for r in rows if r["held_out"]):
        out = [r for r in rows if r["held_out"] == recipe]
        learnt = [v for r in base for n, v in r["students"].items() if evaluation_recipe(n) == recipe]
        scores = [v for r in out for v in r["students"].values()]
        declared = sum(v > r["threshold"] for r in out for v in r["students"].values())
        above = sum(v > max(r["independent"].values()) for r in out for v in r["students"].values())
        mean = lambda xs: f"{sum(xs) / len(xs):.3f}" if xs else "-"  # noqa: E731
        print(f"| {recipe} | {mean(learnt)} | {mean(scores)} | {declared}/{len(scores)} | {above}/{len(scores)} | {len(out)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", help="a finished evaluation folder")
    parser.add_argument("--summarize", type=Path, default=None, help="print the table of an earlier run's OUT/SCHEME.json and stop")
    parser.add_argument("--training-zoo", type=Path)
    parser.add_argument("--scheme", default="metav", help="metav, or a scheme that reads the owner's helper models (NAME[:CONFIGURATION])")
    parser.add_argument("--size", type=int, default=56, help="training models MetaV learns from")
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--recipes", default="", help="comma-separated recipes to hold out (default: every one with students in the zoo)")
    parser.add_argument("--set", default="", help="the scheme's settings, e.g. 'steps=600'")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.summarize:
        summarize(json.loads(args.summarize.read_text()))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    report = json.loads((args.run / "report.json").read_text())
    zoo = json.loads((args.run / "zoo" / "manifest.json").read_text())["suspects"]
    training = json.loads((args.training_zoo / "manifest.json").read_text())
    task = task_from_config({k: v for k, v in report["task"].items() if k in ("name", "metric", "tolerance")})
    target = load_model(args.run / "target.safetensors")
    data = load_data(report["config"]["data"], channels=target.spec.channels, size=target.spec.input_size[0])
    candidates, pairs = task.candidates(data.train)
    settings = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set.split(",") if a)}
    name, _, configuration = args.scheme.partition(":")
    configuration = configuration or "default"
    if name == "metav":
        settings["training_models"] = args.size
    counts = dict(SCHEMES[name].owner_models.get(configuration, {}))
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
            scheme = SCHEMES[name].configured(configuration, report["task"]["name"], **{**settings, "seed": seed})
            size, checkpoints = scheme.training_zoo()
            if size:
                learnt = {training_recipe(r["name"]) for r in training_records(training, size, checkpoints=checkpoints, leave_out=leave_out)[0]}
                helpers, _ = training_helpers(training, size, checkpoints=checkpoints, leave_out=leave_out)
            else:
                helpers, learnt = owner_helpers(training, counts, leave_out)
                helpers = {role: models for role, models in helpers.items() if counts.get(role)}
            assert recipe not in learnt, f"recipe {recipe} was not left out"
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
            (args.out / f"{args.scheme.replace(':', '-')}.json").write_text(json.dumps(rows, indent=1))
    summarize(rows)


if __name__ == "__main__":
    main()
