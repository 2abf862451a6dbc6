"""MetaV against the size of its training zoo, with and without the zoo's checkpoints: the overfitting curve. Not a test.

For a finished evaluation folder (its target and zoo are reused; nothing of them is rebuilt), runs the protocol
with the metav scheme alone for every size and checkpoint choice, each in its own folder OUT/metav-curve/S{size}-
{plain|ckpt}/ (resumable; the training zoo, built at the largest size in OUT/training_zoo, serves every smaller
one), and prints a Markdown table: ARUC and ROC AUC per mode, the lowest pirated and highest independent score and
the logit margin between them (which still shows a difference where ARUC saturates), the mean score per transform
and the seconds of the joint optimisation.

    python bench/metav.py runs/paper --sizes 10,20,40 --repeats 1

``--holdout K`` instead chooses settings without looking at the evaluation zoo: each candidate (``--candidate
"steps=100 lr_inputs=0.03"``, repeatable) learns from the first K training models and is scored on the training
zoo's other models (ROC AUC and ARUC of its held-out pirated and independent models):

    python bench/metav.py runs/paper --holdout 10 --candidate "" --candidate "steps=600"
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from modelprint.access import WhiteBox
from modelprint.data import load_data
from modelprint.fingerprints import scheme_named
from modelprint.metrics import aruc, roc_auc
from modelprint.models import load_model
from modelprint.protocol import EvaluationConfig, run_evaluation
from modelprint.protocol.training_zoo import training_helpers, training_records
from modelprint.tasks import task_from_config


def margin(positives: list[float], negatives: list[float]) -> tuple[float, float, float]:
    """The lowest pirated score, the highest independent one, and logit(lowest) - logit(highest)."""
    low, high = min(positives), max(negatives)
    logit = lambda p: math.log(max(p, 1e-12) / max(1 - p, 1e-12))  # noqa: E731
    return low, high, logit(low) - logit(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished evaluation's folder (its report.json names the data, task and zoo)")
    parser.add_argument("--sizes", default="10,20,40", help="training zoo sizes, comma-separated")
    parser.add_argument("--checkpoints", default="no,yes", help="'no', 'yes' or both")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="another metav setting, SETTING=VALUE (JSON)")
    parser.add_argument("--holdout", type=int, help="learn from this many training models and score the zoo's others")
    parser.add_argument("--candidate", action="append", default=[], help="settings of one candidate for --holdout, 'K=V K=V' (JSON values)")
    args = parser.parse_args()
    if args.holdout:
        holdout(args.run, args.holdout, args.candidate or [""])
        return
    base = json.loads((args.run / "report.json").read_text())["config"]
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for with_checkpoints in [c == "yes" for c in args.checkpoints.split(",")]:
            out = args.run / "metav-curve" / f"S{size}-{'ckpt' if with_checkpoints else 'plain'}"
            config = EvaluationConfig(
                data=base["data"], task=base["task"], similarity=base.get("similarity", "l2"), arch=base["arch"], width=base["width"], epochs=base["epochs"],
                seed=base["seed"], preset=base["preset"], zoo=base.get("zoo"), repeats=args.repeats, n=base["n"], schemes=("metav",),
                scheme={"preset": "default", "training_models": size, "checkpoints": with_checkpoints, **extra}, target=str(args.run / "target.safetensors"),
                zoo_dir=str(args.run / "zoo"), training_zoo_dir=str(args.run / "training_zoo"), detectors=False,
                executor=base.get("executor", "pool"), workers=base.get("workers", 2),
            )
            print(f"size {size}, checkpoints {with_checkpoints} -> {out}", flush=True)
            result = run_evaluation(config, out, progress=True)
            manifest = json.loads((args.run / "training_zoo" / "manifest.json").read_text())
            positives, negatives = training_records(manifest, size, checkpoints=with_checkpoints)
            scores = {kind: [s["ms_black_box"] for s in result["suspects"] if s["kind"] == kind] for kind in ("positive", "negative")}
            block = result["schemes"]["metav"]
            rows.append((size, with_checkpoints, len(positives) + len(negatives), block, margin(scores["positive"], scores["negative"]), block["generation_s"]["mean"]))
    kinds = list(rows[0][3]["per_transform"])
    print("\n| training models | checkpoints | models read | ARUC wb | ARUC bb | AUC wb | AUC bb | lowest pirated | highest independent | logit margin | gen. s/set | "
          + " | ".join(kinds) + " |")
    print("|---" * (11 + len(kinds)) + "|")
    for size, with_checkpoints, read, block, (low, high, gap), seconds in rows:
        figures = [f"{block[k][m]['mean']:.3f}" for k in ("aruc", "auc") for m in ("white_box", "black_box")]
        per = [f"{block['per_transform'][kind]['ms_black_box']:.2f}" for kind in kinds]
        print(f"| {size} | {'yes' if with_checkpoints else 'no'} | {read} | " + " | ".join(figures) + f" | {low:.4f} | {high:.4f} | {gap:.1f} | {seconds:.0f} | "
              + " | ".join(per) + " |")


def holdout(run: Path, size: int, candidates: list[str]) -> None:
    """Score each candidate's set on the training models it did not learn from (see the module's description)."""
    report = json.loads((run / "report.json").read_text())
    manifest = json.loads((run / "training_zoo" / "manifest.json").read_text())
    task = task_from_config({k: v for k, v in report["task"].items() if k in ("name", "metric", "tolerance")})
    target = load_model(run / "target.safetensors")
    helpers, _ = training_helpers(manifest, size, checkpoints=False)
    learnt = {m.spec.info["sha256"] for group in helpers.values() for m in group}
    held = [r for r in manifest["suspects"] if r["sha256"] not in learnt]
    data = load_data(report["config"]["data"], channels=target.spec.channels, size=target.spec.input_size[0])
    candidates_found, pairs = task.candidates(data.train)
    print(f"learning from {size} training models, scoring {len(held)} held out ({sum(r['kind'] == 'positive' for r in held)} pirated)")
    print("| candidate | held-out ROC AUC | held-out ARUC | lowest pirated | highest independent | logit margin | gen. s |\n|---|---|---|---|---|---|---|")
    for text in candidates:
        settings = {k: json.loads(v) for k, v in (item.split("=", 1) for item in text.split())}
        scheme = scheme_named("metav", **{"training_models": size, **settings})
        fingerprints = scheme.generate(target, candidates_found.images, candidates_found.labels, task, pairs=pairs, progress=False, **helpers)
        scores = {r["name"]: scheme.verify(WhiteBox(load_model(r["path"])), fingerprints, mode="black-box").matching_score for r in held}
        pos = [scores[r["name"]] for r in held if r["kind"] == "positive"]
        neg = [scores[r["name"]] for r in held if r["kind"] == "negative"]
        low, high, gap = margin(pos, neg)
        print(f"| `{text or 'defaults'}` | {roc_auc(pos, neg):.3f} | {aruc(pos, neg):.3f} | {low:.3f} | {high:.3f} | {gap:.1f} | "
              f"{fingerprints.stats['generation_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
