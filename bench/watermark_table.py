"""The watermark tables of an evaluation's report.json as Markdown (:func:`modelprint.report.watermarks.markdown`,
the tables of report.html): the summary across watermarks, each watermark's separation, verdicts, fidelity and
ambiguity counts, and the mean score per transform beside the fingerprints'. Not a test.

    python bench/watermark_table.py runs/bd44/cifar-eval/report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modelprint.report.watermarks import markdown

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    print(markdown(json.loads(Path(parser.parse_args().report).read_text())), end="")
