"""How much of the target's Grad-CAM each suspect of an evaluated zoo shares, on natural images and on fingerprints.

The saliency fingerprint can only find in a copy what the copy inherited: the target's saliency. This bench measures
that inheritance directly, without thresholds: for every suspect of a finished ``modelprint evaluate`` run, the
Pearson correlation (over the Grad-CAM grid, averaged over samples) between the suspect's max-normalised saliency
map and the target's, on the white-box samples of the run's first fingerprint set and on the natural images they
were made from. Independent models set the level that owes nothing to theft.

    python research/saliency_agreement.py --run runs/face_owner

prints one row per transform (mean, lowest and highest over its suspects) and writes ``saliency_agreement.json``
into the run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from modelprint.access import WHITE_BOX, WhiteBox
from modelprint.fingerprints.sets import FingerprintSet
from modelprint.fingerprints.saliency import SaliencyFingerprint, rows_read_by
from modelprint.models import load_model


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over samples of the Pearson correlation of two maps (samples where either map is constant are left out)."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)[(a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished `modelprint evaluate` output folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    report = json.loads((args.run / "report.json").read_text())
    white_box_rows = rows_read_by(FingerprintSet.load(args.run / "saliency" / "fingerprints-0.safetensors"), WHITE_BOX)
    images = {  # the same rows, read on the fingerprints and on the natural images they were made from
        "natural": replace(white_box_rows, tensors={**white_box_rows.tensors, "samples": white_box_rows.tensors["originals"]}),
        "fingerprints": white_box_rows,
    }
    scheme = SaliencyFingerprint()  # verification reads its generation settings from the set

    def maps(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {kind: scheme.saliency_maps(WhiteBox(model), rows).flatten(1) for kind, rows in images.items()}

    target_maps = maps(load_model(report["target"]["path"]))
    zoo = json.loads((Path(report["config"].get("zoo_dir") or args.run / "zoo") / "manifest.json").read_text())
    white_box = {row["name"]: row["ms_white_box"] for row in report["suspects"]}
    suspects = []
    for record in zoo["suspects"]:
        suspect_maps = maps(load_model(record["path"]))
        row = {"name": record["name"], "transform": record["transform"], "ms_white_box": white_box.get(record["name"])}
        row.update({kind: agreement(suspect_maps[kind], target_maps[kind]) for kind in images})
        suspects.append(row)
    samples = len(white_box_rows.samples)

    print(f"Grad-CAM agreement with the target ({args.run}, {samples} white-box samples of set 0)")
    print("| transform | suspects | natural images: mean (min-max) | fingerprints: mean (min-max) | white-box score |")
    print("|---|---|---|---|---|")
    for transform in dict.fromkeys(r["transform"] for r in suspects):
        group = [r for r in suspects if r["transform"] == transform]
        cells = []
        for kind in ("natural", "fingerprints"):
            values = [r[kind] for r in group]
            cells.append(f"{sum(values) / len(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        scores = [r["ms_white_box"] for r in group if r["ms_white_box"] is not None]
        score = f"{sum(scores) / len(scores):.2f}" if scores else ""
        print(f"| {transform} | {len(group)} | {cells[0]} | {cells[1]} | {score} |")
    (args.run / "saliency_agreement.json").write_text(json.dumps({"samples": samples, "suspects": suspects}, indent=2))


if __name__ == "__main__":
    main()
