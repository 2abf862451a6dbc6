"""Which fingerprint settings separate pirated copies from independent models? Not a test.

Generates one fingerprint set per configuration against a target and prints the matching scores (white-box,
black-box) of the target, a copy fine-tuned for one epoch and an independently trained model:

    python bench/ablation.py --target t0.safetensors --independent i1.safetensors \\
        --data ../shared/data/cifar10_test_32 "sam_norm=sum" "sam_norm=max" "sam_norm=max,lam=0.5"

A configuration is a comma-separated list of ``SaliencyFingerprint`` settings on top of the default
(``paper`` alone stands for ``SaliencyFingerprint.paper()``).
"""

from __future__ import annotations

import argparse
import json
import time

from modelprint import SaliencyFingerprint, WhiteBox, load_data, load_model
from modelprint.access import BLACK_BOX, WHITE_BOX
from modelprint.zoo import FineTune


def parse_configuration(text: str, seed: int) -> SaliencyFingerprint:
    """``"sam_norm=max,lam=0.5"`` -> the default scheme with those settings (values typed like the defaults)."""
    if text == "paper":
        return SaliencyFingerprint.paper(seed=seed)
    default = SaliencyFingerprint()
    settings: dict = {"seed": seed}
    for pair in filter(None, text.split(",")):
        key, value = pair.split("=", 1)
        current = getattr(default, key)
        if isinstance(current, bool):
            settings[key] = value.lower() in ("1", "true", "yes")
        elif current is None:
            settings[key] = float(value)
        else:
            settings[key] = type(current)(value)
    return SaliencyFingerprint(**settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configurations", nargs="+")
    parser.add_argument("--target", required=True)
    parser.add_argument("--independent", required=True)
    parser.add_argument("--data", default="../shared/data/cifar10_test_32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_data(args.data)
    target, independent = load_model(args.target), load_model(args.independent)
    finetuned = FineTune(epochs=1, lr=0.01).apply(target, data.train, seed=10)
    suspects = {"target": target, "fine-tuned": finetuned, "independent": independent}
    for text in args.configurations:
        scheme = parse_configuration(text, args.seed)
        start = time.perf_counter()
        fingerprints = scheme.generate(target, data.train.images, data.train.labels, progress=False)
        seconds = time.perf_counter() - start
        scores = {
            name: {mode: round(scheme.verify(WhiteBox(model), fingerprints, mode=mode).matching_score, 2) for mode in (WHITE_BOX, BLACK_BOX)}
            for name, model in suspects.items()
        }
        stats = fingerprints.stats
        print(json.dumps({
            "configuration": text,
            "scores": scores,
            "thresholds": {k: round(v, 4) for k, v in fingerprints.thresholds.items()},
            "labels_kept": stats["labels_kept"],
            "psnr_db_mean": round(stats["psnr_db_mean"], 1),
            "generation_s": round(seconds, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
