"""The core issue's table: matching scores of the target, a 1-epoch fine-tuned copy, a 30%-pruned copy and two
independently trained models, for the saliency fingerprint's paper-faithful and default configurations, white-box
and black-box (what ``modelprint demo`` printed before the demo became the owner's workflow). Not a test.

    python bench/core_table.py --data ../shared/data/cifar10_test_32 --epochs 30 --out bench/out/cifar
    python bench/core_table.py ... --target t0.safetensors --independent i1.safetensors i2.safetensors
    python bench/core_table.py --data digits --epochs 8 --out bench/out/digits      # the old demo's table

Models are cached in OUT/models (an interrupted run resumes); pretrained files may be given instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from modelprint.access import BLACK_BOX, WHITE_BOX, WhiteBox
from modelprint.data import load_data
from modelprint.demo import derived_model, trained_model
from modelprint.fingerprints import SaliencyFingerprint
from modelprint.models import ImageModel, load_model
from modelprint.tasks import Classification
from modelprint.train import evaluate
from modelprint.zoo import FineTune, Transform, WeightPrune


def run_table(
    out_dir: str | Path = "bench/out/core_table",
    *,
    data: str = "digits",
    pretrained: dict[int, str | Path] | None = None,
    epochs: int = 8,
    width: int = 16,
    n: int = 100,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make the table and write ``out_dir/summary.json``.

    Args:
        out_dir: where models, fingerprints and the summary go.
        data: the data set (any spec :func:`modelprint.load_data` reads); the embedded digits by default.
        pretrained: model files to use instead of training, by seed (0 is the target, 1 and 2 the independents).
        epochs: training epochs of the target and the independent models.
        width: ResNet-18 width.
        n: fingerprints per configuration.
        device: torch device.
        progress: show progress bars.
        log: where progress lines go.

    Returns:
        The summary (also written as JSON).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    splits = load_data(data)
    pretrained = pretrained or {}
    task = Classification()

    def trained(seed: int) -> ImageModel:
        if seed in pretrained:
            return load_model(pretrained[seed], device=device)
        return trained_model(out / "models" / f"seed{seed}.safetensors", splits, seed=seed, epochs=epochs, width=width, device=device, progress=progress)

    def pirated(name: str, parent: ImageModel, transform: Transform, seed: int) -> ImageModel:
        return derived_model(out / "models" / f"{name}.safetensors", parent, transform, splits, seed=seed, progress=progress)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    log(f"training the target and two independent models on {splits.name} ...")
    target = trained(0)
    suspects = {
        "target": ("target", target),
        "fine-tuned": ("positive", pirated("finetuned", target, FineTune(epochs=1, lr=0.01, augment=splits.augment), 10)),
        "pruned 30%": ("positive", pirated("pruned30", target, WeightPrune(ratio=0.3), 11)),
        "independent 1": ("negative", trained(1)),
        "independent 2": ("negative", trained(2)),
    }
    timings["models_s"] = time.perf_counter() - t
    accuracy = {name: evaluate(model, splits.test, "classification") for name, (_, model) in suspects.items()}

    configurations = {"paper": SaliencyFingerprint.paper(n=n), "default": SaliencyFingerprint(n=n)}
    results: dict[str, Any] = {}
    for config_name, scheme in configurations.items():
        t = time.perf_counter()
        log(f"generating {n} fingerprints ({config_name} configuration) ...")
        fingerprints = scheme.generate(target, splits.train.images, splits.train.labels, task, progress=progress)
        fingerprints.save(out / f"fingerprints-{config_name}.safetensors")
        timings[f"generate_{config_name}_s"] = time.perf_counter() - t
        scores = {}
        for name, (kind, model) in suspects.items():
            access = WhiteBox(model)
            wb = scheme.verify(access, fingerprints, mode=WHITE_BOX)
            bb = scheme.verify(access, fingerprints, mode=BLACK_BOX)
            scores[name] = {"kind": kind, "white_box": wb.matching_score, "black_box": bb.matching_score, "queries": bb.queries}
        results[config_name] = {
            "scheme": repr(scheme),
            "thresholds": fingerprints.thresholds,
            "stats": fingerprints.stats,
            "scores": scores,
        }
    timings["total_s"] = time.perf_counter() - start
    summary = {
        "data": splits.name,
        "arch": {"name": "resnet18", "width": width},
        "test_accuracy": accuracy,
        "configurations": results,
        "timings_s": timings,
        "torch": torch.__version__,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table of matching scores as a header and rows of text (one row per suspect)."""
    header = ["suspect", "kind", "test acc"]
    for config_name in summary["configurations"]:
        header += [f"{config_name} WB", f"{config_name} BB"]
    first = next(iter(summary["configurations"].values()))
    rows = []
    for name, row in first["scores"].items():
        cells = [name, row["kind"], f"{summary['test_accuracy'][name]:.3f}"]
        for config in summary["configurations"].values():
            score = config["scores"][name]
            cells += [f"{score['white_box']:.2f}", f"{score['black_box']:.2f}"]
        rows.append(cells)
    return header, rows


def summary_notes(summary: dict[str, Any]) -> list[str]:
    """One line per configuration: thresholds, PSNR, label keeping and generation time."""
    lines = []
    for config_name, config in summary["configurations"].items():
        stats = config["stats"]
        lines.append(
            f"{config_name}: t_wb {config['thresholds']['white_box']:.3f}, t_bb {config['thresholds']['black_box']:.4f}, "
            f"PSNR {stats['psnr_db_mean']:.1f} dB (min {stats['psnr_db_min']:.1f}), labels kept "
            f"{stats['labels_kept']:.0%}, generation {stats['generation_s']:.1f} s"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10_test_32")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--target", help="pretrained target (seed 0)")
    parser.add_argument("--independent", nargs="*", default=[], help="pretrained independent models (seeds 1, 2)")
    parser.add_argument("--out", default="bench/out/core_table")
    args = parser.parse_args()

    pretrained = {seed: path for seed, path in enumerate([args.target, *args.independent]) if path}
    summary = run_table(args.out, data=args.data, pretrained=pretrained, epochs=args.epochs, width=args.width, n=args.n)
    header, rows = summary_table(summary)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for line in summary_notes(summary):
        print(line)
    for name, config in summary["configurations"].items():
        print(name, json.dumps(config["scheme"]))
    print(f"total {summary['timings_s']['total_s']:.0f} s")


if __name__ == "__main__":
    main()
