"""A watermark in the answers (CSP, USP: ``--scheme``) against the API thief: students extracted through the watermarked API, by budget, labels and architecture,
verified with the key (soft labels and labels only) beside unmarked models, and with every fingerprint set given.
Not a test.

For each key seed the host is marked (its answers perturbed), its fidelity measured (accuracy change, KL, top-1
agreement on every test image), and students are extracted through the marked API with each budget (``--budgets``;
``all`` = every image of the thief's split), soft labels and top-1 labels only, of the host's architecture and of
``--other-arch``. A labels-only API answers every key's host's top-1 labels (the perturbation keeps them), so one
labels-only student per budget and architecture serves every key. A student extracted through the *unmarked* API is
the control (a copy, but not of the marked answers). Negatives: the unmarked host and ``--negatives``. Students are
written to ``OUT/students`` and reused (the labels-only students and the control do not depend on the key or the
scheme: copy them from another run's ``students`` to reuse them); every row goes to ``OUT/SCHEME.json``. With ``--sets``, the same students and
negatives are verified with each fingerprint set (its scheme's black-box mode): which scheme catches an API thief.

    python bench/api_thief.py runs/paper_sets/target.safetensors --data ../shared/data/cifar10_test_32 \\
        --negatives 'runs/bd44/cifar-eval/zoo/suspects/independent_*.safetensors' --sets 'runs/extra_sets/*-0.safetensors' --out runs/csp
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import torch

from modelprint.access import WhiteBox
from modelprint.data import load_data
from modelprint.fingerprints import FingerprintSet, scheme_for
from modelprint.models import load_model, save_model
from modelprint.train import evaluate, predict
from modelprint.watermarks import watermark_named
from modelprint.watermarks.fidelity import fidelity, read_test
from modelprint.zoo import Extract
from modelprint.zoo.extract import api_of

ALPHA, STRICT = 0.05, 0.001


def student(host_top, marked, data, out: Path, name: str, params: dict, seed: int):
    """The student ``name`` (from ``OUT/students`` when there, else extracted now) and its figures."""
    path = out / "students" / f"{name}.safetensors"
    began = time.perf_counter()
    if path.is_file():
        model = load_model(path)
    else:
        model = Extract(**params).apply(marked, data.train, seed=seed)
        save_model(model, path)
    agreement = float((predict(model, data.test.images).argmax(1) == host_top).float().mean())
    return model, {"name": name, **params, "accuracy": evaluate(model, data.test, "classification"), "agreement": agreement,
                   "queries": model.spec.info.get("queries"), "seconds": round(time.perf_counter() - began, 1)}


def verdicts(scheme, key, model) -> dict:
    soft = scheme.verify(WhiteBox(model), key)
    labels = scheme.verify(api_of(model, budget=None, labels_only=True), key)
    return {"score": soft.matching_score, "p": soft.p_value, "score_labels": labels.matching_score, "p_labels": labels.p_value}


def summarize(rows: dict) -> None:
    """Per student recipe over the keys: mean score and how many keys declare it at ALPHA (soft-label and
    labels-only verification); per negative the same (false positives); each set's students above every independent."""
    import numpy as np

    print(f"| recipe | accuracy | agreement with host | score (soft) | declared at {ALPHA} / {STRICT} | score (labels only) | declared at {ALPHA} / {STRICT} |")
    print("|---|---|---|---|---|---|---|")
    groups: dict[str, list[dict]] = {}
    for row in rows["verification"]:
        name = row["name"] if row["name"].startswith(("hard", "control")) or "negative" in row else row["name"].split("-", 1)[1]
        groups.setdefault(name if "negative" not in row or not row["negative"] else f"negative: {name}", []).append(row)
    for name, group in groups.items():
        acc = [r["accuracy"] for r in group if "accuracy" in r]
        agree = [r["agreement"] for r in group if "agreement" in r]
        figures = f"{np.mean(acc):.3f} | {np.mean(agree):.3f}" if acc else "- | -"
        declared = lambda field: " / ".join(f"{sum(r[field] <= a for r in group)}/{len(group)}" for a in (ALPHA, STRICT))  # noqa: E731
        print(f"| {name} | {figures} | {np.mean([r['score'] for r in group]):.3f} | {declared('p')} | {np.mean([r['score_labels'] for r in group]):.3f} | "
              f"{declared('p_labels')} |")
    for key in rows["keys"]:
        print(f"key {key['seed']}: accuracy change {key['test_metric_change']:+.4f}, KL {key['kl_host_to_marked']:.4f}, top-1 agreement "
              f"{key['top1_agreement']:.4f}, marked model score {key['marked']['score']:.3f} (p {key['marked']['p']:.2g})")
    for entry in rows["sets"]:
        scores, top = entry["scores"], entry["max_independent"]
        soft = [n for n in scores if n.startswith("k")]
        hard = [n for n in scores if n.startswith("hard")]
        print(f"{Path(entry['set']).name} ({entry['scheme']}, {entry['mode']}): above every independent ({top:.3f}): soft students "
              f"{sum(scores[n] > top for n in soft)}/{len(soft)}, labels-only students {sum(scores[n] > top for n in hard)}/{len(hard)}, "
              f"unmarked-API student {'yes' if scores['control-unmarked-api'] > top else 'no'}; mean score soft {np.mean([scores[n] for n in soft]):.3f}, "
              f"labels-only {np.mean([scores[n] for n in hard]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host", nargs="?")
    parser.add_argument("--summarize", default=None, help="print the summary of an earlier run's OUT/SCHEME.json and stop")
    parser.add_argument("--scheme", default="csp", help="the watermark in the answers: csp or usp")
    parser.add_argument("--data")
    parser.add_argument("--negatives", default="", help="a glob of independent models")
    parser.add_argument("--sets", default="", help="globs (comma-separated) of fingerprint sets of the host to verify the same students with")
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--budgets", default="2000,5000,all")
    parser.add_argument("--other-arch", default="vgg11_bn")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--set", default="", help="the scheme's settings, e.g. 'amplitude=0.05'")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.summarize:
        summarize(json.loads(Path(args.summarize).read_text()))
        return
    out = Path(args.out)
    (out / "students").mkdir(parents=True, exist_ok=True)
    host = load_model(args.host)
    data = load_data(args.data, channels=host.spec.channels, size=host.spec.input_size[0])
    settings = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set.split(",") if a)}
    negatives = [("host", host)] + [(Path(p).stem, load_model(p)) for p in sorted(glob.glob(args.negatives))]
    budgets = [None if b == "all" else int(b) for b in args.budgets.split(",")]
    host_reading, rows, students = read_test(host, data), {"keys": [], "students": [], "verification": [], "sets": []}, {}
    host_top = predict(host, data.test.images).argmax(1)
    control, figures = student(host_top, host, data, out, "control-unmarked-api", {"epochs": args.epochs}, 700)
    rows["students"].append({**figures, "key": None, "labels": "soft"})
    print("| key | student | labels | budget | arch | accuracy | agreement | score (soft) | p | score (labels only) | p |")
    print("|---" * 11 + "|")
    for seed in range(args.keys):
        scheme = watermark_named(args.scheme, **settings, seed=seed)
        marked, key = scheme.embed(host, data.train, held_out=data.test)
        key.save(out / f"key-{seed}.safetensors")
        fid = fidelity(host_reading, read_test(marked, data), "classification", models=(host, marked))
        rows["keys"].append({"seed": seed, **fid, "marked": verdicts(scheme, key, marked)})
        print(f"key {seed}: accuracy change {fid['test_metric_change']:+.4f}, KL {fid['kl_host_to_marked']:.4f}, top-1 agreement {fid['top1_agreement']:.4f}", flush=True)
        for labels in ("soft", "hard"):
            for budget in budgets:
                for arch in (None, args.other_arch):
                    name = f"{'k%d-' % seed if labels == 'soft' else ''}{labels}-{budget or 'all'}-{arch or 'same'}"
                    params = {"epochs": args.epochs, "labels": labels, **({"budget": budget} if budget else {}), **({"arch": arch} if arch else {})}
                    model, figures = student(host_top, marked, data, out, name, params, 700)
                    students[name] = model
                    v = verdicts(scheme, key, model)
                    rows["verification"].append({"key": seed, **figures, **v})
                    print(f"| {seed} | {name} | {labels} | {budget or 'all'} | {arch or host.spec.arch} | {figures['accuracy']:.3f} | {figures['agreement']:.3f} | "
                          f"{v['score']:.3f} | {v['p']:.2g} | {v['score_labels']:.3f} | {v['p_labels']:.2g} |", flush=True)
        for name, model in [("control-unmarked-api", control)] + negatives:
            v = verdicts(scheme, key, model)
            rows["verification"].append({"key": seed, "name": name, "negative": name != "control-unmarked-api", **v})
            print(f"| {seed} | {name} | | | | | | {v['score']:.3f} | {v['p']:.2g} | {v['score_labels']:.3f} | {v['p_labels']:.2g} |", flush=True)
        (out / f"{args.scheme}.json").write_text(json.dumps(rows, indent=1))
    for path in sorted(p for pattern in args.sets.split(",") if pattern for p in glob.glob(pattern)):
        fingerprints = FingerprintSet.load(path)
        scheme = scheme_for(fingerprints)
        mode = "black-box" if "black-box" in scheme.modes else scheme.modes[0]
        scores = {name: scheme.verify(WhiteBox(m), fingerprints, mode=mode).matching_score for name, m in
                  [*students.items(), ("control-unmarked-api", control), *negatives[1:]]}
        top_negative = max(scores[name] for name, _ in negatives[1:]) if len(negatives) > 1 else float("nan")
        rows["sets"].append({"set": path, "scheme": scheme.name, "mode": mode, "scores": scores, "max_independent": top_negative})
        caught = [n for n in students if scores[n] > top_negative]
        print(f"{Path(path).name} ({scheme.name}, {mode}): max independent {top_negative:.3f}; students above it {len(caught)}/{len(students)}; "
              + ", ".join(f"{n} {scores[n]:.2f}" for n in students), flush=True)
        (out / f"{args.scheme}.json").write_text(json.dumps(rows, indent=1))
    summarize(rows)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
