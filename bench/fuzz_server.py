"""Hostile clients against ``modelprint serve`` on loopback, then its throughput under 8 concurrent clients. Not a test.

Starts ``modelprint serve`` in its own process on a small untrained model (ResNet-18, width 4, 32x32, saved to a
temporary folder), on 127.0.0.1 only, then:

1. sends every malformed request of ``bench/fuzz_cases.py`` (HTTP_CASES with httpx, RAW_CASES on raw sockets, the
   stalled ones left open to see when the server cuts them) and counts the answers by status;
2. sends bodies of exactly the size limit that parse (nearly) whole and are refused, and two over the limit;
3. times 8 concurrent clients x 150 requests of 16 images (bodies encoded once per client beforehand).

Throughout, a poller asks ``/v2/health/live`` every 0.25 s. Reported: answers with status 5xx (goal 0), tracebacks
in the server's log, the server process's RSS (VmRSS, VmHWM from /proc/PID/status) before and after each phase,
health latency (goal: every answer within 1 s), images/s and p50/p99 request latency. Every request has a timeout
and a watchdog stops the server and this script after ``--max-seconds``.

    python bench/fuzz_server.py            # 20 bodies of 64 MiB, 8 x 150 requests
    python bench/fuzz_server.py --quick    # 5 bodies of 16 MiB, 8 x 30 requests

Run it alone: other work on the same cores slows the server and lengthens every latency.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from fuzz_cases import HTTP_CASES, INFER, MODEL, RAW_CASES, large_bodies
from modelprint.models import build_model, save_model

MIB = 2**20
STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


class HealthPoller(threading.Thread):
    """Asks /v2/health/live every ``interval`` seconds until stopped; keeps each latency (None: no answer in 5 s)."""

    def __init__(self, url: str, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.interval, self.latencies = url, interval, []
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stopped.is_set():
                began = time.perf_counter()
                try:
                    ok = client.get(self.url + "/v2/health/live").status_code == 200
                    self.latencies.append(time.perf_counter() - began if ok else None)
                except httpx.HTTPError:
                    self.latencies.append(None)
                self.stopped.wait(self.interval)


def raw_exchange(port: int, payload: bytes, wait: float) -> tuple[list[int], float, str]:
    """Writes ``payload`` to a new connection, reads until the server closes it or ``wait`` s pass.

    Returns:
        The statuses of the answers read, the seconds until the server closed the connection, and how it ended.
    """
    began, received, ending = time.monotonic(), b"", "closed by server"
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(payload)
            while chunk := sock.recv(65536):
                received += chunk
        except socket.timeout:
            ending = f"still open after {wait:g} s"
        except OSError as exc:
            ending = f"reset ({type(exc).__name__})"
    return [int(code) for code in STATUS.findall(received)], time.monotonic() - began, ending


def run_malformed(url: str, port: int, tally: collections.Counter, rows: list) -> list[threading.Thread]:
    """Sends every case; stalled raw cases run in threads (returned) that wait for the server to close them."""
    def raw(name: str, payload: bytes, wait: float) -> None:
        statuses, seconds, ending = raw_exchange(port, payload, wait)
        tally.update(statuses)
        rows.append((name, ",".join(map(str, statuses)) or "-", f"{ending} after {seconds:.1f} s"))

    stalled = [threading.Thread(target=raw, args=(name, payload, 60.0), daemon=True)
               for name, payload, stalls in RAW_CASES if stalls]
    for thread in stalled:
        thread.start()
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, method, path, body, headers in HTTP_CASES:
            try:
                answer = client.request(method, path, content=body, headers=headers)
                tally[answer.status_code] += 1
                rows.append((name, str(answer.status_code), answer.text[:70].replace("\n", " ")))
            except httpx.HTTPError as exc:
                tally["no answer"] += 1
                rows.append((name, "-", f"{type(exc).__name__}: {exc}"[:70]))
    for name, payload, stalls in RAW_CASES:
        if not stalls:
            raw(name, payload, 15.0)
    return stalled


def run_large(url: str, limit: int, count: int, pid: int, tally: collections.Counter) -> list[tuple[int, float, float]]:
    """Sends ``count`` refused bodies of ``limit`` bytes, then one declared and one streamed just over it."""
    bodies, seen = large_bodies(limit, count), []
    with httpx.Client(base_url=url, timeout=120) as client:
        for body in bodies:
            began = time.perf_counter()
            status = client.post(INFER, content=body).status_code
            tally[status] += 1
            seen.append((status, time.perf_counter() - began, memory(pid)["VmRSS"]))
        del bodies
        over = b"[" + b" " * limit + b"]"
        tally[client.post(INFER, content=over).status_code] += 1
        streamed = (over[i:i + MIB] for i in range(0, len(over), MIB))  # chunked: no Content-Length to refuse early
        try:
            tally[client.post(INFER, content=streamed).status_code] += 1
        except httpx.HTTPError:
            tally["no answer"] += 1
    return seen


def run_throughput(url: str, clients: int, requests: int, images: int, tally: collections.Counter) -> tuple[float, list[float]]:
    """Images per second and every request's latency of ``clients`` threads each sending ``requests`` requests."""
    def body(seed: int) -> bytes:
        x = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        tensor = {"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}
        return httpx.Request("POST", url, json={"inputs": [tensor]}).read()

    bodies = [body(seed) for seed in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as http:
            for _ in range(requests):
                began = time.perf_counter()
                status = http.post(INFER, content=bodies[seed]).status_code
                with lock:
                    latencies.append(time.perf_counter() - began)
                    tally[status] += 1

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * requests * images / (time.perf_counter() - began), latencies


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 bodies of 16 MiB and 8 x 30 requests")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="watchdog: everything stops after this")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--images", type=int, default=16, help="images per throughput request")
    args = parser.parse_args()
    body_mb, large, requests = (16, 5, 30) if args.quick else (64, 20, 150)

    folder = Path(tempfile.mkdtemp(prefix="fuzz-server-"))
    torch.manual_seed(0)
    save_model(build_model("resnet18", num_outputs=10, width=4), folder / "m.safetensors")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "modelprint.cli", "serve", "--model", str(folder / "m.safetensors"),
                               "--name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--max-body-mb", str(body_mb)],
                              stdout=log, stderr=subprocess.STDOUT)

    def give_up() -> None:
        print(f"watchdog: {args.max_seconds:g} s passed, stopping", flush=True)
        server.kill()
        os._exit(3)

    watchdog = threading.Timer(args.max_seconds, give_up)
    watchdog.daemon = True
    watchdog.start()
    began = time.monotonic()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("modelprint serve did not start; see " + str(folder / "server.log"))
            time.sleep(0.2)
        x = torch.rand(1, 3, 32, 32).reshape(-1).tolist()
        tensor = {"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": x}
        warm = httpx.post(url + INFER, json={"inputs": [tensor]})
        assert warm.status_code == 200, warm.text
        health = HealthPoller(url)
        health.start()
        rss = {"start": memory(server.pid)}

        malformed, rows = collections.Counter(), []
        stalled = run_malformed(url, port, malformed, rows)
        rss["after malformed"] = memory(server.pid)
        large_tally = collections.Counter()
        seen = run_large(url, body_mb * MIB, large, server.pid, large_tally)
        rss["after large bodies"] = memory(server.pid)
        for thread in stalled:
            thread.join(timeout=max(1.0, 70 - (time.monotonic() - began)))
        rss["after stalled connections"] = memory(server.pid)
        busy = collections.Counter()
        rate, latencies = run_throughput(url, args.clients, requests, args.images, busy)
        rss["after throughput"] = memory(server.pid)
        health.stopped.set()
        health.join()
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        watchdog.cancel()

    text = (folder / "server.log").read_text(errors="replace")
    tracebacks = text.count("Traceback")
    if tracebacks:
        print(f"the server's log, with its tracebacks, is kept in {folder / 'server.log'}")
    else:
        shutil.rmtree(folder)
    kinds = len(HTTP_CASES) + len(RAW_CASES)
    print(f"{'case':40s} {'status':8s} answer / outcome")
    for name, status, detail in rows:
        print(f"{name:40s} {status:8s} {detail}")
    fives = sum(n for code, n in (malformed + large_tally + busy).items() if isinstance(code, int) and code >= 500)
    print(f"\nmalformed kinds sent: {kinds} ({len(HTTP_CASES)} over httpx, {len(RAW_CASES)} on raw sockets); "
          f"answers by status: {dict(sorted(malformed.items(), key=str))}")
    print(f"bodies at the limit ({body_mb} MiB): {large}, answers {dict(large_tally)}; "
          f"seconds each: {min(s for _, s, _ in seen):.2f}-{max(s for _, s, _ in seen):.2f}; "
          f"server RSS after each: {min(r for *_, r in seen):.0f}-{max(r for *_, r in seen):.0f} MiB")
    print(f"answers 5xx over every phase: {fives}; tracebacks in the server log: {tracebacks}")
    for phase, values in rss.items():
        print(f"server RSS {phase:26s} {values['VmRSS']:7.0f} MiB (peak so far {values['VmHWM']:.0f} MiB)")
    growth = rss["after large bodies"]["VmRSS"] - rss["after malformed"]["VmRSS"]
    print(f"RSS growth over the {large} bodies at the limit: {growth:+.0f} MiB; over the whole run: "
          f"{rss['after throughput']['VmRSS'] - rss['start']['VmRSS']:+.0f} MiB")
    answered = [t for t in health.latencies if t is not None]
    print(f"health: {len(health.latencies)} polls, {len(health.latencies) - len(answered)} unanswered within 5 s, "
          f"max {max(answered):.3f} s, p99 {quantile(answered, 0.99):.3f} s, over 1 s: {sum(t > 1 for t in answered)}")
    print(f"throughput: {args.clients} clients x {requests} requests x {args.images} images: {rate:.0f} images/s, "
          f"latency p50 {1000 * quantile(latencies, 0.5):.0f} ms, p99 {1000 * quantile(latencies, 0.99):.0f} ms, "
          f"answers {dict(busy)}")
    print(f"total {time.monotonic() - began:.0f} s; torch threads in this client {torch.get_num_threads()}, cores {os.cpu_count()}")


if __name__ == "__main__":
    main()
