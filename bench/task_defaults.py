"""Does what ``modelprint generate`` makes without naming a configuration separate a target from an independent model?
Not a test.

Walks the command line as a new user would, per case: train a target (seed 0) and an independent model (seed 9),
make fingerprints, verify both models in both modes and print the target's margin over the independent model (the
bar: at least 0.3 in each mode). With ``--owner-models`` the owner's helper models are made first
(``modelprint owner-models``) and given to ``generate``; ``--configuration NAME`` names one instead of the default.
Every step's output is kept in OUT/CASE and reused when the script runs again:

    python bench/task_defaults.py --out runs/task_defaults --configuration default
    python bench/task_defaults.py --out runs/task_defaults --owner-models

Cases: CIFAR-10 classification (ResNet-18 width 16, 15 epochs), COIL-20 angle regression (VGG11-BN width 16, 30
epochs) and Olivetti face similarity (MobileFaceNet width 32, 60 epochs), N = 30 each, from ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: case -> (data folder, task, training arguments)
CASES = {
    "cifar10_classification": ("cifar10_test_32", "classification", ["--arch", "resnet18", "--width", "16", "--epochs", "15"]),
    "coil20_regression": ("coil20_angle_32", "regression", ["--arch", "vgg11_bn", "--width", "16", "--epochs", "30"]),
    "olivetti_similarity": ("olivetti_faces_64", "similarity", ["--arch", "mobilefacenet", "--width", "32", "--epochs", "60"]),
}
SEEDS = {"target": 0, "independent": 9}
MODES = ("white-box", "black-box")


def run(args: list[str]) -> str:
    """One ``modelprint`` command; its stdout. Stops the bench with the command's own error line."""
    print("$ modelprint " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "modelprint", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")
    return done.stdout


def case(name: str, out: Path, *, configuration: str | None, owner_models: bool, n: int) -> dict[str, float]:
    """Scores of the target and the independent model in both modes for one case."""
    folder, task, train_args = CASES[name]
    data = str(DATA / folder)
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    models = {}
    for role, seed in SEEDS.items():
        models[role] = work / f"{role}.safetensors"
        if not models[role].exists():
            run(["train", "--data", data, "--task", task, *train_args, "--seed", str(seed), "--out", str(models[role])])
    label = configuration or "task-default"
    generate = ["generate", "--model", str(models["target"]), "--data", data, "--n", str(n)]
    if configuration:
        generate += ["--configuration", configuration]
    if owner_models:
        helpers = work / "owner-models"
        epochs = train_args[train_args.index("--epochs") + 1]
        run(["owner-models", "--target", str(models["target"]), "--data", data, "--epochs", epochs, "--out", str(helpers)])
        generate += ["--owner-models", str(helpers)]
        label += "+owner-models"
    fingerprints = work / f"fingerprints-{label}.safetensors"
    if not fingerprints.exists():
        run([*generate, "--out", str(fingerprints)])
    scores = {}
    for role, model in models.items():
        for mode in MODES:
            answer = run(["verify", "--fingerprints", str(fingerprints), "--suspect", str(model), "--mode", mode,
                          "--records", str(work / "records"), "--json"])
            scores[f"{role} {mode}"] = json.loads(answer)["matching_score"]
    return {"configuration": label, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--configuration", default=None, help="a named configuration; the scheme's default for the task when omitted")
    parser.add_argument("--owner-models", action="store_true", help="make the owner's helper models and give them to generate")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = {name: case(name, args.out, configuration=args.configuration, owner_models=args.owner_models, n=args.n)
            for name in args.cases.split(",")}
    print("\n| case | configuration | target WB | independent WB | margin WB | target BB | independent BB | margin BB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        cells = []
        for mode in MODES:
            t, i = row[f"target {mode}"], row[f"independent {mode}"]
            cells += [f"{t:.2f}", f"{i:.2f}", f"**{t - i:+.2f}**" if t - i >= 0.3 else f"{t - i:+.2f}"]
        print(f"| {name} | {row['configuration']} | " + " | ".join(cells) + " |")
    table = args.out / "task_defaults.json"  # rows of earlier invocations stay, a row of the same case and configuration is replaced
    kept = [r for r in (json.loads(table.read_text()) if table.exists() else []) if isinstance(r, dict) and "case" in r]
    new = [{"case": name, **row} for name, row in rows.items()]
    done = {(r["case"], r["configuration"]) for r in new}
    table.write_text(json.dumps([r for r in kept if (r["case"], r["configuration"]) not in done] + new, indent=1))


if __name__ == "__main__":
    main()
