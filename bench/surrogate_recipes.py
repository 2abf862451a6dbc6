"""The saliency fingerprint's owner configuration with surrogates distilled by several recipes. Not a test.

For a finished evaluation of the ``paper-distill`` preset (its target, zoo and owner's helper models are reused),
trains the owner's surrogates by the recipes named (``--recipes t1,hard,top3,adam``: the distillation family's
settings, seeds 6100+, never a zoo student's) in OUT/owner_recipes, makes the owner configuration's sets with them
in place of the paper-recipe surrogates (references and calibration models unchanged) in OUT/saliency-recipes, verifies
every suspect of the zoo, and prints ROC AUC, ARUC and every distilled student's score per mode:

    python bench/surrogate_recipes.py runs/paper_distill --data ../shared/data/cifar10_test_32 --repeats 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modelprint.data import load_data
from modelprint.metrics import aruc, roc_auc
from modelprint.models import load_model
from modelprint.protocol import EvaluationConfig
from modelprint.protocol.owner import load_helpers
from modelprint.protocol.run import generate_or_reuse
from modelprint.protocol.scores import verify_all
from modelprint.zoo.build import build_zoo
from modelprint.zoo.spec import POSITIVE, SuspectSpec, ZooSpec

RECIPES = {"t1": {"temperature": 1.0}, "t10": {"temperature": 10.0}, "hard": {"labels": "hard"}, "top3": {"labels": "top_k", "top_k": 3},
           "adam": {"optimizer": "adam", "lr": 0.002}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--recipes", default="t1,hard,top3,adam")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    config = EvaluationConfig(data=args.data, arch=args.arch, width=args.width, preset="paper-distill", schemes=("saliency",), repeats=args.repeats)
    target_path = args.run / "target.safetensors"
    spec = ZooSpec(tuple(SuspectSpec(f"surrogate_{name}", POSITIVE, "distill", {"epochs": config.epochs, **RECIPES[name]}, 6100 + i)
                         for i, name in enumerate(args.recipes.split(","))))
    built = build_zoo(spec, target_path, args.data, args.run / "owner_recipes")
    helpers = load_helpers(json.loads((args.run / "owner" / "manifest.json").read_text()), roles=("references", "calibration"))
    helpers["surrogates"] = [load_model(r["path"]) for r in built["suspects"]]
    target, data, task = load_model(target_path), load_data(args.data), config.task_adapter()
    suspects = json.loads((args.run / "zoo" / "manifest.json").read_text())["suspects"]
    kinds = {r["name"]: r["kind"] for r in suspects}
    folder = args.run / "saliency-recipes"
    folder.mkdir(exist_ok=True)
    for repeat in range(args.repeats):
        scheme = config.fingerprint_scheme(repeat)
        fingerprints = generate_or_reuse(scheme, target, task, data, folder / f"fingerprints-{repeat}.safetensors", helpers, True)
        scores = verify_all(scheme, fingerprints, suspects, folder / f"verification-{repeat}.json", True)
        for mode in ("white_box", "black_box"):
            pos = [scores[n][f"ms_{mode}"] for n in kinds if kinds[n] == "positive"]
            neg = [scores[n][f"ms_{mode}"] for n in kinds if kinds[n] == "negative"]
            students = {n: round(scores[n][f"ms_{mode}"], 3) for n in kinds if n.startswith("distill")}
            print(f"set {repeat} {mode}: ROC AUC {roc_auc(pos, neg):.3f}, ARUC {aruc(pos, neg):.3f}, highest independent {max(neg):.3f}; students {students}")


if __name__ == "__main__":
    main()
