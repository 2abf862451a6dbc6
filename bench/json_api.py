"""The same fingerprint sets, the same suspect: scores through a top-5 JSON API (LitServe) and in-process.

    python bench/json_api.py --suspect runs/own/timm-stolen.safetensors --sets runs/own/timm-fp-*.safetensors

Starts tests/servers/litserve_topk.py with the suspect (an uploaded PNG in, the five most probable classes out),
verifies every set in black-box mode in-process (full probabilities) and through the API (top-5 completed: the
named classes' probabilities, an equal share of the rest for the others), with each scheme allowed to read completed
scores for the measurement, and prints per set: both scores, the images the client sent and the images the server
counted. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from modelprint.access import BlackBox, WhiteBox
from modelprint.fingerprints import FingerprintSet, scheme_for
from modelprint.models import load_model
from modelprint.serving.json_api import ApiMapping, JsonApiClient

SERVER = Path(__file__).resolve().parents[1] / "tests" / "servers" / "litserve_topk.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suspect", type=Path, required=True)
    parser.add_argument("--sets", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    suspect = load_model(args.suspect)
    names = suspect.spec.info.get("class_names") or [str(i) for i in range(suspect.spec.num_outputs)]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    count = Path(tempfile.mkdtemp()) / "count.txt"
    process = subprocess.Popen([sys.executable, str(SERVER), str(args.suspect), str(port), str(count)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        print("| set | scheme | in-process black-box | top-5 API (PNG upload) | images sent | images the server answered |")
        print("|---|---|---|---|---|---|")
        for path in args.sets:
            fingerprints = FingerprintSet.load(path)
            scheme = scheme_for(fingerprints)
            type(scheme).partial_scores = True  # measured here, whatever the scheme's setting
            local = scheme.verify(WhiteBox(suspect), fingerprints, mode="black-box")
            before = len(count.read_text().splitlines()) if count.exists() else 0
            mapping = ApiMapping(send="multipart", field="file", answer="topk", answer_path="predictions", classes=tuple(names))
            box = BlackBox.json_api(JsonApiClient(url, mapping), batch_size=32)
            remote = scheme.verify(box, fingerprints, mode="black-box")
            served = len(count.read_text().splitlines()) - before
            print(f"| {path.name} | {scheme.name} | {local.matching_score:.3f} | {remote.matching_score:.3f} | {box.sent} | {served} |", flush=True)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
