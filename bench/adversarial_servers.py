"""How a fingerprint set's black-box score (any scheme that reads scores) holds up behind imperfect and adversarial
prediction APIs. Not a test.

Every suspect is served over the Open Inference Protocol on loopback (``modelprint.serving.server``) and verified through
``BlackBox.http``, as a thief's API would be:

- plain server: the reference score of each suspect;
- Feature-Squeezing-guarded server (5% false positives on clean test images; flagged inputs get random outputs):
  the score, the share of fingerprint queries flagged, and for contrast the share of plain FGSM examples flagged;
- noisy server (Gaussian noise of std sigma on every output) and rounding server (d decimals): the score of the
  positives and of the negatives at each level, and the first level where the lowest positive no longer scores
  above the highest negative (where verification breaks);
- labels-only server: the message the scheme gives.

    python bench/adversarial_servers.py --fingerprints runs/paper/saliency/fingerprints-0.safetensors \\
        --positive runs/paper/target.safetensors runs/paper/zoo/suspects/ftal.safetensors \\
        --negative runs/paper/zoo/suspects/independent_0.safetensors runs/paper/zoo/suspects/independent_1.safetensors \\
        --data ../shared/data/cifar10_test_32 --out bench/out/adversarial_servers.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from modelprint import BlackBox, FingerprintSet, load_data, load_model, scheme_for
from modelprint.detectors import FeatureSqueezing, fgsm
from modelprint.errors import CapabilityError
from modelprint.serving.server import DetectorGuard, GaussianNoise, Rounding, ServedModel, ServerThread, TopLabel, create_app

SIGMAS = [0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
DECIMALS = [6, 5, 4, 3, 2, 1]


def served(path: str, *filters) -> ServedModel:
    return ServedModel.of(load_model(path), Path(path).stem, filters=filters)


def score_through(server_model: ServedModel, fingerprints: FingerprintSet) -> float:
    with ServerThread(create_app(server_model)) as server:
        box = BlackBox.http(server.url, server_model.name)
        return scheme_for(fingerprints).verify(box, fingerprints).matching_score


def breaking_level(levels: list, positives: dict, negatives: dict) -> object:
    """The first level where the lowest positive score is not above the highest negative one (None: never)."""
    for i, level in enumerate(levels):
        if min(p[i] for p in positives.values()) <= max(n[i] for n in negatives.values()):
            return level
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fingerprints", required=True)
    parser.add_argument("--positive", nargs="+", required=True, help="pirated suspects (model files)")
    parser.add_argument("--negative", nargs="+", required=True, help="independent suspects (model files)")
    parser.add_argument("--data", required=True, help="data whose test images fit the detector and make FGSM examples")
    parser.add_argument("--fgsm-eps", type=float, nargs="+", default=[8 / 255, 0.1, 0.3])
    parser.add_argument("--guard-fpr", type=float, nargs="+", default=[0.05, 0.01], help="detector false-positive rates on clean images")
    parser.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS, help="noise levels (std of the Gaussian on every output)")
    parser.add_argument("--decimals", type=int, nargs="+", default=DECIMALS, help="rounding levels (decimals kept)")
    parser.add_argument("--out", default="bench/out/adversarial_servers.json")
    args = parser.parse_args()

    fingerprints = FingerprintSet.load(args.fingerprints)
    suspects = {"positive": args.positive, "negative": args.negative}
    report: dict = {"fingerprints": args.fingerprints, "n": len(fingerprints), "torch": torch.__version__, "machine": platform.processor() or platform.machine()}

    report["plain"] = {path: score_through(served(path), fingerprints) for group in suspects.values() for path in group}

    # The detector-guarded server, in front of the first positive, at two false-positive rates on clean images.
    guarded_path = args.positive[0]
    model = load_model(guarded_path)
    spec = model.spec
    data = load_data(args.data, channels=spec.channels, size=spec.input_size[0])
    clean, labels = data.test.images[:1000], data.test.labels[:1000]
    report["guard"] = []
    for fpr in args.guard_fpr:
        detector = FeatureSqueezing(fpr=fpr).fit(model, clean[:500])
        guard = DetectorGuard(detector=detector, model=model)
        guarded = score_through(served(guarded_path, guard), fingerprints)
        report["guard"].append({
            "suspect": guarded_path,
            "detector_fpr": fpr,
            "score_plain": report["plain"][guarded_path],
            "score_guarded": guarded,
            "fingerprint_queries_flagged": guard.flagged / guard.seen,
            "clean_flagged": detector.detection_rate(model, clean[700:1000]),
            "fgsm_flagged": {f"{eps:.4f}": detector.detection_rate(model, fgsm(model, clean[500:700], labels[500:700], eps)) for eps in args.fgsm_eps},
        })

    for name, levels, make in (("noise", args.sigmas, lambda v: GaussianNoise(sigma=v)), ("rounding", args.decimals, lambda v: Rounding(decimals=v))):
        scores = {kind: {path: [score_through(served(path, make(v)), fingerprints) for v in levels] for path in group} for kind, group in suspects.items()}
        report[name] = {"levels": levels, **scores, "breaks_at": breaking_level(levels, scores["positive"], scores["negative"])}

    try:
        score_through(served(args.positive[0], TopLabel()), fingerprints)
        report["labels_only"] = "verified (unexpected)"
    except CapabilityError as exc:
        report["labels_only"] = str(exc)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print_tables(report)


def print_tables(report: dict) -> None:
    for g in report["guard"]:
        fgsm_text = ", ".join(f"FGSM eps {eps} {share:.1%}" for eps, share in g["fgsm_flagged"].items())
        print(f"guarded server ({Path(g['suspect']).stem}, detector at {g['detector_fpr']:.0%} false positives): score "
              f"{g['score_guarded']:.3f} vs plain {g['score_plain']:.3f}; flagged: fingerprint queries "
              f"{g['fingerprint_queries_flagged']:.1%}, clean {g['clean_flagged']:.1%}, {fgsm_text}")
    for name, label in (("noise", "sigma"), ("rounding", "decimals")):
        block = report[name]
        print(f"\n| suspect | {' | '.join(f'{label} {v:g}' for v in block['levels'])} |")
        print("|---" * (len(block["levels"]) + 1) + "|")
        for kind in ("positive", "negative"):
            for path, scores in block[kind].items():
                print(f"| {kind} {Path(path).stem} | " + " | ".join(f"{s:.2f}" for s in scores) + " |")
        print(f"verification breaks at {label} = {block['breaks_at']}")
    print(f"\nlabels-only server: {report['labels_only']}")


if __name__ == "__main__":
    main()
