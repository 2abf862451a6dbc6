"""The saliency fingerprint's owner configuration with surrogates made by several recipes. Not a test.

For a finished evaluation (its target, zoo and owner's helper models are reused; its preset gives the students'
epochs), trains the owner's surrogates by the recipes named (``--recipes t1,hard,top3,adam``: the distillation
family's settings; ``paper`` is the paper zoo's recipe and an architecture's name a student of that architecture;
``transfer`` a student distilled on ``--transfer-data`` instead of the owner's own data; ``retrain_last``,
``finetune_all`` and ``weight_prune`` copies made by those pirating transforms instead of distillation; seeds 6100+,
never a zoo suspect's) in OUT/owner_recipes, makes the owner configuration's sets with them in place of the
paper-recipe surrogates (``--keep K`` keeps the first K of those beside them; references and calibration models
unchanged; ``--set`` changes settings on top of the owner configuration, ``--black-box-only``
makes the black-box group alone) in OUT/FOLDER (``--train-only``: the surrogates alone, say to hold them apart for
``research/readouts.py --held-apart``), verifies every suspect of the zoo, and prints ROC AUC, ARUC, every
distilled student's score and the lowest other pirated copy's per mode:

    python research/surrogate_recipes.py runs/paper_distill --data ../shared/data/cifar10_test_32 --repeats 1
    python research/surrogate_recipes.py runs/paper_distill --data ../shared/data/cifar10_test_32 --keep 2 \
        --recipes mobilefacenet,mobilefacenet --folder saliency-arch
    python research/surrogate_recipes.py runs/paper_distill --data ../shared/data/cifar10_test_32 --keep 4 --recipes "" \
        --black-box-only --folder saliency-xi45 --set 'black_box_settings={"gamma": 1.0, "occlusion": 1.0,
        "threshold_anchor": "surrogates", "pool": 3.0, "select": "black_box", "xi": 4.5}'
    python research/surrogate_recipes.py runs/vgg_distill --data ../shared/data/cifar10_test_32 --arch vgg11_bn --keep 4 \
        --recipes "" --set 'pattern=[[0,0],[0,1]]' --folder saliency-p2 --repeats 3
    python research/surrogate_recipes.py runs/digits_owner --data digits --keep 4 --recipes retrain_last --black-box-only \
        --folder saliency-rtll
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modelprint.architectures import ARCHITECTURES
from modelprint.data import load_data
from modelprint.errors import InputError
from modelprint.metrics import aruc, roc_auc
from modelprint.models import load_model
from modelprint.protocol import EvaluationConfig
from modelprint.protocol.owner import load_helpers
from modelprint.protocol.run import generate_or_reuse
from modelprint.protocol.scores import verify_all
from modelprint.zoo.build import build_zoo
from modelprint.zoo.spec import NEGATIVE, POSITIVE, SuspectSpec, ZooSpec, check_transfer_data

#: A recipe's name: (transform, its settings); distilled students get the preset's epochs on top.
RECIPES = {"t1": ("distill", {"temperature": 1.0}), "t10": ("distill", {"temperature": 10.0}), "hard": ("distill", {"labels": "hard"}),
           "top3": ("distill", {"labels": "top_k", "top_k": 3}), "adam": ("distill", {"optimizer": "adam", "lr": 0.002}), "paper": ("distill", {}),
           **{arch: ("distill", {"arch": arch}) for arch in ARCHITECTURES},
           "retrain_last": ("retrain", {"layers": "last", "epochs": 1}), "finetune_all": ("finetune", {"layers": "all", "epochs": 1}),
           "weight_prune": ("weight_prune", {"ratio": 0.4, "recover_epochs": 3})}


def surrogate(name: str, seed: int, epochs: int, recipes: dict[str, tuple[str, dict]]) -> SuspectSpec:
    """The surrogate made by recipe ``name`` of ``recipes``; a distilled one trains for the preset's ``epochs``."""
    transform, params = recipes[name]
    if transform == "distill":
        params = {"epochs": epochs, **params}
    return SuspectSpec(f"surrogate_{name}_{seed}", POSITIVE, transform, params, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--recipes", default="t1,hard,top3,adam")
    parser.add_argument("--transfer-data", default=None, help="the data spec the 'transfer' recipe distils on")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=int, default=0, help="keep the first K paper-recipe surrogates of OUT/owner beside the new ones")
    parser.add_argument("--folder", default="saliency-recipes", help="where the sets go, in OUT")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting on top of the owner configuration (JSON value)")
    parser.add_argument("--black-box-only", action="store_true", help="make and read only the black-box group of samples")
    parser.add_argument("--train-only", action="store_true", help="build the recipes' surrogates in OUT/owner_recipes and stop (no sets)")
    args = parser.parse_args()
    settings = {key: json.loads(value) for key, _, value in (item.partition("=") for item in args.set)}
    report_file = args.run / "report.json"
    preset = json.loads(report_file.read_text())["config"]["preset"] if report_file.is_file() else "paper-distill"
    config = EvaluationConfig(data=args.data, arch=args.arch, width=args.width, preset=preset, schemes=("saliency",),
                              repeats=args.repeats, scheme={"preset": "owner", **settings})
    target_path = args.run / "target.safetensors"
    if args.transfer_data:
        try:
            check_transfer_data(args.transfer_data, args.data)
        except InputError as error:
            parser.error(f"--transfer-data: {error}")
    table = {**RECIPES, **({"transfer": ("distill", {"transfer": args.transfer_data})} if args.transfer_data else {})}
    recipes = [name for name in args.recipes.split(",") if name]
    unknown = [name for name in recipes if name not in table]
    if unknown:
        parser.error(f"unknown recipes {unknown} (known: {', '.join(table)}; 'transfer' needs --transfer-data)")
    built = []
    if recipes:
        spec = ZooSpec(tuple(surrogate(name, 6100 + i, config.epochs, table) for i, name in enumerate(recipes)))
        built = build_zoo(spec, target_path, args.data, args.run / "owner_recipes", executor=config.executor, workers=config.workers)["suspects"]
    if args.train_only:
        return
    helpers = load_helpers(json.loads((args.run / "owner" / "manifest.json").read_text()))
    helpers["surrogates"] = helpers["surrogates"][: args.keep] + [load_model(r["path"]) for r in built]
    target, data, task = load_model(target_path), load_data(args.data), config.task_adapter()
    suspects = json.loads((args.run / "zoo" / "manifest.json").read_text())["suspects"]
    kinds = {r["name"]: r["kind"] for r in suspects}
    students = [r["name"] for r in suspects if r["transform"] == "distill"]
    folder = args.run / args.folder
    folder.mkdir(exist_ok=True)
    if args.black_box_only:  # the black-box group reads its own roles of helper models
        helpers = {role: models for role, models in helpers.items() if role in config.fingerprint_scheme(0).groups()[1].reads()}
    for repeat in range(args.repeats):
        scheme = config.fingerprint_scheme(repeat)
        if args.black_box_only:
            scheme = scheme.groups()[1]
        fingerprints = generate_or_reuse(scheme, target, task, data, folder / f"fingerprints-{repeat}.safetensors", helpers, True)
        scores = verify_all(scheme, fingerprints, suspects, folder / f"verification-{repeat}.json", True)
        for mode in ("black_box",) if args.black_box_only else ("white_box", "black_box"):
            score = {n: scores[n][f"ms_{mode}"] for n in kinds}
            pos = [score[n] for n in kinds if kinds[n] == POSITIVE]
            neg = [score[n] for n in kinds if kinds[n] == NEGATIVE]
            lowest = min((n for n in kinds if kinds[n] == POSITIVE and n not in students), key=score.get)
            print(f"set {repeat} {mode}: ROC AUC {roc_auc(pos, neg):.3f}, ARUC {aruc(pos, neg):.3f}, highest independent {max(neg):.3f}; "
                  f"students { {n: round(score[n], 3) for n in students} }; lowest other copy {lowest} {score[lowest]:.3f}")


if __name__ == "__main__":
    main()
