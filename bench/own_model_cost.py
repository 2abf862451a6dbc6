"""What fingerprinting an owner's model at a realistic input size costs on this machine: a timm model at 224x224.

    python bench/own_model_cost.py --arch timm:resnet50 --data runs/own/pets --out runs/cost --n 2,4

Imports a seeded model of the architecture (its weights saved as a PyTorch state dict, as an owner's would be),
then times ``modelprint generate`` (wall time and peak memory of the process, /usr/bin/time) for the saliency
`default` and IPGuard schemes at each N given, and projects 100 fingerprints from the fitted line (the time of a
set grows with N by a fixed cost per fingerprint). MetaV's generation needs a training zoo whose cost is training
models: one training step on a batch of 32 is timed, and the zoo's time projected from it (``--size 20 --epochs
15`` on the folder's training images). Prints the figures as a table. Not a test: a measurement; run nothing else
meanwhile.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import torch


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command."""
    done = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    seconds, kb = re.findall(r"TIME ([\d.]+) (\d+)", done.stderr)[-1]
    return float(seconds), int(kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="timm:resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", default="2,4", help="set sizes to time (comma-separated)")
    parser.add_argument("--schemes", default="saliency,ipguard")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from modelprint.architectures import architecture
    from modelprint.data import load_data

    classes = len(load_data(args.data, size=8).class_names)
    torch.manual_seed(0)
    net = architecture(args.arch)(num_outputs=classes, in_channels=3)
    torch.save(net.state_dict(), args.out / "weights.pt")
    target = args.out / "target.safetensors"
    seconds, peak = timed(["modelprint", "import", str(args.out / "weights.pt"), "--arch", args.arch, "--input-size", str(args.size), "--out", str(target)])
    rows = [("import", "-", seconds, peak)]
    sizes = [int(v) for v in args.n.split(",")]
    for scheme in args.schemes.split(","):
        measured = []
        for n in sizes:
            seconds, peak = timed(["modelprint", "generate", "--model", str(target), "--data", args.data, "--scheme", scheme, "--n", str(n),
                                   "--out", str(args.out / f"{scheme}-{n}.safetensors")])
            measured.append((n, seconds))
            rows.append((f"generate {scheme}", str(n), seconds, peak))
            print(rows[-1], flush=True)
        if len(measured) >= 2:
            (n0, t0), (n1, t1) = measured[0], measured[-1]
            per = (t1 - t0) / (n1 - n0)
            rows.append((f"generate {scheme}", "100 (projected)", t0 + per * (100 - n0), float("nan")))
    # MetaV: the training zoo is the cost. One SGD step on 32 images, the model in training mode, one thread as in a pool worker.
    torch.set_num_threads(1)
    net.train()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.rand(32, 3, args.size, args.size), torch.randint(0, classes, (32,))
    steps = []
    for _ in range(3):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps.append(time.perf_counter() - start)
    per_image = min(steps) / 32
    images = len(load_data(args.data, size=8).train)
    zoo = 20 * 15 * images * per_image / 2  # --size 20 models, --epochs 15 (pirated copies train fewer: an upper bound), 2 workers
    rows.append(("training step, 1 thread", "per image", per_image, float("nan")))
    rows.append(("MetaV training zoo --size 20 --epochs 15", f"{images} images (projected)", zoo, float("nan")))
    print(f"\n{args.arch} at {args.size}x{args.size}, {classes} classes, on this machine (torch {torch.__version__}):\n")
    print("| step | N | seconds | peak MiB |\n|---|---|---|---|")
    for step, n, seconds, peak in rows:
        print(f"| {step} | {n} | {seconds:.1f} | {'' if peak != peak else f'{peak:.0f}'} |")


if __name__ == "__main__":
    main()
