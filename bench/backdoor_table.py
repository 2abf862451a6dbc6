"""The rows of ``bench/backdoor_modes.py --json`` runs (several keys, several files) as one Markdown table per host:
per embedding mode, the mean ± standard deviation over the keys of the trigger accuracy, the epochs and every
fidelity figure. Not a test.

    python bench/backdoor_table.py runs/bd44/modes-mnist.json runs/bd44/modes-mnist-12.json
"""

from __future__ import annotations

import argparse
import json
import statistics

COLUMNS = (("trigger_accuracy", "trigger accuracy"), ("embedding_epochs", "epochs"), ("test_metric_change", "accuracy change"),
           ("kl_host_to_marked", "KL host -> marked"), ("top1_agreement", "top-1 agreement"), ("penultimate_distance", "penultimate distance"),
           ("total_weight_change", "total weight change"), ("last_layer_change", "last-layer change"))


def cell(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    return f"{mean:.3g}" if len(values) == 1 else f"{mean:.3g} ± {statistics.stdev(values):.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    rows: list[dict] = []
    for path in args.files:
        with open(path) as handle:
            rows += json.load(handle)["rows"]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    print("| mode | keys | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for mode in modes:
        chosen = [r for r in rows if r["mode"] == mode]
        cells = [cell([float(r[key]) for r in chosen if r.get(key) is not None]) for key, _ in COLUMNS]
        print(f"| `{mode}` | {len(chosen)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
