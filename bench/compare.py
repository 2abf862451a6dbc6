"""The comparison of schemes of a finished evaluation, as Markdown for docs. Not a test.

Reads OUT/report.json of ``modelprint evaluate --schemes ...`` and prints (or writes) the comparison table (ARUC, ROC
AUC and TPR at 1% FPR per mode, queries, generation seconds, PSNR, SSIM, Feature Squeezing and Deep SVDD rates),
the mean matching score per transform and the paragraph naming which scheme leads on which metric; with
``--watermark``, each watermark's separation, verdict rates and fidelity, and the score per transform beside the
fingerprints':

    python bench/compare.py runs/paper
    python bench/compare.py runs/paper --write docs/comparison-cifar10.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modelprint.report.comparison import markdown
from modelprint.report.watermarks import markdown as watermark_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the evaluation's output folder (holds report.json)")
    parser.add_argument("--write", type=Path, help="write the Markdown to this file instead of printing it")
    args = parser.parse_args()
    report_file = args.run / "report.json"
    if not report_file.is_file():
        sys.exit(f"no report.json in {args.run}: run `modelprint evaluate --schemes ... --out {args.run}` first")
    report = json.loads(report_file.read_text())
    text = markdown(report) + ("\n" + watermark_markdown(report) if report.get("watermarks") else "")
    if args.write:
        args.write.write_text(text)
        print(f"wrote {args.write}")
    else:
        print(text)


if __name__ == "__main__":
    main()
