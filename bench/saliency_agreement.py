"""How much of the target's Grad-CAM each suspect of an evaluated zoo shares, on natural images and on fingerprints.

The saliency fingerprint can only find in a copy what the copy inherited: the target's saliency. This bench measures
that inheritance directly, without thresholds: for every suspect of a finished ``modelprint evaluate`` run, the
Pearson correlation (over the Grad-CAM grid, averaged over samples) between the suspect's max-normalised saliency
map and the target's, on the white-box samples of the run's first fingerprint set and on the natural images they
were made from. Independent models set the level that owes nothing to theft.

    python bench/saliency_agreement.py --run runs/face_owner

prints one row per transform (mean, lowest and highest over its suspects) and writes ``saliency_agreement.json``
into the run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from modelprint.access import WHITE_BOX
from modelprint.fingerprints.base import FingerprintSet
from modelprint.fingerprints.saliency import MODE_CODE
from modelprint.models import load_model
from modelprint.saliency import GradCAM, find_cam_layer, normalise_maps


def saliency_maps(model: torch.nn.Module, images: torch.Tensor, fingerprints: FingerprintSet, rows: torch.Tensor) -> torch.Tensor:
    """Max-normalised Grad-CAM maps of the task output F_c on ``images`` (flattened), read where the scheme reads them."""
    task = fingerprints.task_adapter()
    layer = fingerprints.config.get("layer") or find_cam_layer(model, images[:1])
    pairs = fingerprints.tensors.get("pairs")
    with GradCAM(model, layer) as cam:
        cond = task.condition_on(model, fingerprints.labels[rows], None if pairs is None else pairs[rows])
        maps, _ = cam(images, lambda outputs: task.score(outputs, cond, logit=bool(fingerprints.config.get("cam_logit", True))))
    return normalise_maps(maps.detach(), "max").flatten(1)


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
    fingerprints = FingerprintSet.load(args.run / "fingerprints-0.safetensors")
    mode = fingerprints.tensors.get("mode")
    rows = torch.nonzero(mode == MODE_CODE[WHITE_BOX]).flatten() if mode is not None else torch.arange(len(fingerprints.samples))
    images = {"natural": fingerprints.tensors["originals"][rows], "fingerprints": fingerprints.samples[rows]}
    target = load_model(report["target"]["path"]).eval()
    target_maps = {kind: saliency_maps(target, x, fingerprints, rows) for kind, x in images.items()}

    zoo = json.loads((Path(report["config"].get("zoo_dir") or args.run / "zoo") / "manifest.json").read_text())
    white_box = {row["name"]: row["ms_white_box"] for row in report["suspects"]}
    suspects = []
    for record in zoo["suspects"]:
        model = load_model(record["path"]).eval()
        row = {"name": record["name"], "transform": record["transform"], "ms_white_box": white_box.get(record["name"])}
        row.update({kind: agreement(saliency_maps(model, x, fingerprints, rows), target_maps[kind]) for kind, x in images.items()})
        suspects.append(row)

    print(f"Grad-CAM agreement with the target ({args.run}, {len(rows)} white-box samples of set 0)")
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
    (args.run / "saliency_agreement.json").write_text(json.dumps({"samples": len(rows), "suspects": suspects}, indent=2))


if __name__ == "__main__":
    main()
