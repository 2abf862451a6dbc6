"""The watermark blocks of an evaluation's report.json as two Markdown tables: per watermark and mode the marked
model's score, fidelity, ARUC, ROC AUC, the verdicts' rates at alpha 0.05 and the ambiguity counts (mean ± standard
deviation over the keys); and per transform each watermark's mean score, beside the fingerprints'. Not a test.

    python bench/watermark_table.py runs/bd44/cifar-eval/report.json
"""

from __future__ import annotations

import argparse
import json

MODES = {"white_box": "white-box", "black_box": "black-box"}


def cell(figure: dict | None, digits: int = 3, sign: bool = False) -> str:
    if not figure:
        return ""
    text = f"{figure['mean']:+.{digits}f}" if sign else f"{figure['mean']:.{digits}f}"
    return text if len(figure.get("values", [])) < 2 or figure.get("std", 0) < 0.5 * 10 ** -digits else f"{text} ± {figure['std']:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    args = parser.parse_args()
    report = json.loads(open(args.report).read())
    blocks = report.get("watermarks", {})
    print("| watermark | mode | keys | marked model's score | accuracy change | KL host -> marked | top-1 agreement | penultimate distance | ARUC | "
          "ROC AUC | TPR at 1% FPR | false positives at alpha 0.05 | true positives at alpha 0.05 | forged keys declared (marked; negatives) |")
    print("|---" * 14 + "|")
    for name, block in blocks.items():
        fid = block["fidelity"]
        for mode, label in MODES.items():
            if not block["aruc"].get(mode):
                continue
            keys = len(block["aruc"][mode]["values"])
            verdict, forged = block["verdicts"][mode], block.get("ambiguity", {}).get(mode, {})
            negatives = sum(1 for s in block["suspects"] if s["kind"] == "negative")
            fp = verdict["false_positive_rate"]
            print(f"| {name} | {label} | {keys} | {cell(block['target_scores'].get('ms_' + mode))} | {cell(fid['test_metric_change'], sign=True)} | "
                  f"{cell(fid['kl_host_to_marked'])} | {cell(fid['top1_agreement'])} | {cell(fid['penultimate_distance'])} | {cell(block['aruc'][mode])} | "
                  f"{cell(block['auc'][mode])} | {cell(block['tpr_at_1pct_fpr'][mode])} | {round(sum(fp['values']) * negatives)} of {negatives * keys} | "
                  f"{cell(verdict['true_positive_rate'])} | {forged.get('marked_declared', '')}/{forged.get('marked_trials', '')}; "
                  f"{forged.get('negatives_declared', '')}/{forged.get('negatives_trials', '')} |")
    transforms = list(dict.fromkeys(t for block in blocks.values() for t in block["per_transform"]))
    columns = [(name, mode) for name, block in blocks.items() for mode in MODES if block["aruc"].get(mode)]
    print()
    print("| transform | " + " | ".join(f"{n} {MODES[m]}" for n, m in columns) + f" | {report.get('scheme_name', 'fingerprint')} black-box |")
    print("|---" * (len(columns) + 2) + "|")
    for transform in transforms:
        cells = [blocks[n]["per_transform"].get(transform, {}).get(f"ms_{m}") for n, m in columns]
        own = report.get("per_transform", {}).get(transform, {}).get("ms_black_box")
        print(f"| {transform} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + f" | {'' if own is None else f'{own:.3f}'} |")


if __name__ == "__main__":
    main()
