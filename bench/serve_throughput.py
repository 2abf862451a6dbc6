"""Images per second of black-box verification through `modelprint serve` on loopback. Not a test.

Starts ``modelprint serve`` as its own process (as a user would), then times ``BlackBox.http`` answering a batch of
images at several request sizes, a whole black-box verification of a fingerprint set (2N images), and, for
reference, the same model answering in-process without HTTP.

    python bench/serve_throughput.py --model runs/paper/target.safetensors --fingerprints runs/paper/saliency/fingerprints-0.safetensors

Run it alone: another heavy process on the same cores makes the figures meaningless.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import time

import httpx
import torch

from modelprint import BlackBox, FingerprintSet, WhiteBox, load_model, scheme_for
from modelprint.tasks import task_from_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("modelprint serve exited while starting")
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("modelprint serve did not start in 60 s")


def best_rate(fn, images: torch.Tensor, repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn(images)
        best = min(best, time.perf_counter() - began)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--fingerprints", help="a fingerprint set of the model's input shape: times a whole verification")
    parser.add_argument("--n", type=int, default=512, help="images per timed run")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model(args.model)
    spec = model.spec
    images = torch.rand(args.n, spec.channels, *spec.input_size, generator=torch.Generator().manual_seed(0))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([shutil.which("modelprint"), "serve", "--model", args.model, "--name", "suspect", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict = {"model": args.model, "n": args.n, "machine": platform.processor() or platform.machine(),
                     "torch": torch.__version__, "threads": torch.get_num_threads(), "http": {}}
    try:
        wait_until_ready(url, process)
        for batch_size in args.batch_sizes:
            box = BlackBox.http(url, "suspect", batch_size=batch_size)
            n = min(args.n, 64 * batch_size)  # batch size 1 on all images would take minutes to say the same
            results["http"][batch_size] = best_rate(box.predict, images[:n], args.repeats)
        if args.fingerprints:
            fingerprints = FingerprintSet.load(args.fingerprints)
            scheme = scheme_for(fingerprints)
            began = time.perf_counter()
            result = scheme.verify(BlackBox.http(url, "suspect", batch_size=64), fingerprints)
            seconds = time.perf_counter() - began
            results["verification"] = {"queries": result.queries, "seconds": seconds, "images_per_s": result.queries / seconds}
    finally:
        process.terminate()
        process.wait(timeout=20)
    local = WhiteBox(model).black_box(task_from_config(spec.task), batch_size=256)
    results["in_process"] = best_rate(local.predict, images, args.repeats)

    print(json.dumps(results, indent=2))
    for batch_size, rate in results["http"].items():
        print(f"through the server, {batch_size:4d} images per request: {rate:8.1f} images/s")
    if "verification" in results:
        v = results["verification"]
        print(f"one black-box verification ({v['queries']} images, 64 per request): {v['seconds']:.2f} s, {v['images_per_s']:.1f} images/s")
    print(f"in-process, no HTTP: {results['in_process']:.1f} images/s")


if __name__ == "__main__":
    main()
