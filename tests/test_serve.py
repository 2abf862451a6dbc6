"""The Open Inference Protocol server, the HTTP black-box client, the query journal and evidence records."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from modelprint.access import BlackBox, WhiteBox, default_spliced, probe_count
from modelprint.errors import CapabilityError, InputError, IntegrityError, QueryBudgetExceeded, RemoteError
from modelprint.evidence.record import read_null_scores
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint
from modelprint.journal import QueryJournal
from modelprint.models import build_model, save_model
from modelprint.serving.client import OipClient
from modelprint.serving.server import GaussianNoise, Rounding, ServedModel, ServerThread, TopLabel, create_app
from modelprint.tasks import Classification

from conftest import free_ports, run_cli

N = 12


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A small (untrained) target, a suspect, and fingerprints of the target: files on disk."""
    folder = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    target = build_model("resnet18", num_outputs=10, width=4).eval()
    torch.manual_seed(1)
    suspect = build_model("resnet18", num_outputs=10, width=4).eval()
    images = torch.rand(40, 3, 32, 32)
    labels = target(images).argmax(dim=1).detach()
    fingerprints = SaliencyFingerprint(n=N, steps=3).generate(target, images, labels)
    save_model(suspect, folder / "suspect.safetensors")
    fingerprints.save(folder / "fp.safetensors")
    return folder, suspect.eval(), fingerprints


def served(model, *filters) -> ServedModel:
    return ServedModel("suspect", model, Classification(), (3, 32, 32), list(filters))


def test_protocol_endpoints_and_metadata(setting):
    _, suspect, _ = setting
    model = served(suspect)
    with ServerThread(create_app(model)) as server:
        get = lambda path: httpx.get(server.url + path)  # noqa: E731
        assert get("/v2/health/live").json() == {"live": True}
        assert get("/v2/health/ready").json() == {"ready": True}
        assert get("/v2/models/suspect/ready").json()["ready"] is True
        meta = get("/v2/models/suspect").json()
        assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
        assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
        x = torch.rand(3, 3, 32, 32)
        body = {"id": "r1", "inputs": [{"name": "images", "datatype": "FP32", "shape": [3, 3, 32, 32], "data": x.reshape(-1).tolist()}]}
        answer = httpx.post(server.url + "/v2/models/suspect/infer", json=body).json()
        assert answer["id"] == "r1" and answer["outputs"][0]["shape"] == [3, 10]
        expected = suspect(x).softmax(dim=1).detach()
        assert torch.allclose(torch.tensor(answer["outputs"][0]["data"]).view(3, 10), expected, atol=1e-6)
        stats = get("/v2/models/suspect/stats").json()["model_stats"][0]
        assert (stats["inference_count"], stats["execution_count"]) == (3, 1)


def _infer_body(shape, data=None, **changes):
    tensor = {"name": "images", "datatype": "FP32", "shape": shape, "data": data if data is not None else [0.5] * max(1, int(torch.tensor(shape).prod()))}
    tensor.update(changes)
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "'inputs'"),
        (json.dumps({"inputs": []}).encode(), 400, "'inputs'"),
        (_infer_body([1, 3, 32, 32], name="x"), 400, "unexpected input"),
        (_infer_body([1, 3, 32, 32], datatype="INT8"), 400, "FP32"),
        (_infer_body([1, 3, 16, 16]), 400, "input shape"),
        (_infer_body([1, 3, 32, 32], data=[1.0, 2.0]), 400, "3072"),
        (_infer_body([1, 3, 32, 32], data=["a"] * 3072), 400, "numbers"),
        (_infer_body([1, 3, 32, 32], data=[float("nan")] * 3072), 400, "NaN"),
        (_infer_body([0, 3, 32, 32], data=[]), 400, "batch size"),
        pytest.param(b"x" * 70_000, 413, "limit", id="too-large"),
    ],
)
def test_malformed_requests_get_protocol_errors(setting, body, status, words):
    _, suspect, _ = setting
    with ServerThread(create_app(served(suspect), max_body_bytes=64 * 1024)) as server:
        response = httpx.post(server.url + "/v2/models/suspect/infer", content=body)
        assert response.status_code == status and words in response.json()["error"]
        # ... and the server still answers afterwards
        assert httpx.get(server.url + "/v2/health/live").status_code == 200


def test_unknown_model_and_route_get_404_with_error(setting):
    _, suspect, _ = setting
    with ServerThread(create_app(served(suspect))) as server:
        for response in (httpx.post(server.url + "/v2/models/other/infer", content=b"{}"), httpx.get(server.url + "/nowhere")):
            assert response.status_code == 404 and response.json()["error"]


def test_verification_through_the_server_equals_in_process_and_sends_2n(setting):
    _, suspect, fingerprints = setting
    scheme = SaliencyFingerprint()
    local = scheme.verify(WhiteBox(suspect), fingerprints, mode="black-box")
    model = served(suspect)
    with ServerThread(create_app(model)) as server:
        remote = scheme.verify(BlackBox.http(server.url, "suspect", batch_size=5), fingerprints)
    assert abs(remote.matching_score - local.matching_score) <= 1e-6
    assert torch.allclose(torch.tensor(remote.values), torch.tensor(local.values), atol=1e-6)
    assert remote.queries == 2 * N and model.inference_count == 2 * N


def test_labels_only_server_is_refused_before_any_image_is_sent(setting):
    _, suspect, fingerprints = setting
    model = served(suspect, TopLabel())
    with ServerThread(create_app(model)) as server:
        box = BlackBox.http(server.url, "suspect")
        with pytest.raises(CapabilityError, match="needs output scores .* offers .*top-1 labels"):
            SaliencyFingerprint().verify(box, fingerprints)
    assert model.inference_count == 0


def test_budget_is_never_exceeded(setting):
    _, suspect, fingerprints = setting
    model = served(suspect)
    with ServerThread(create_app(model)) as server:
        box = BlackBox.http(server.url, "suspect", budget=2 * N - 1)
        with pytest.raises(QueryBudgetExceeded):
            SaliencyFingerprint().verify(box, fingerprints)
    assert model.inference_count <= 2 * N - 1 and box.queries <= 2 * N - 1


def test_client_retries_5xx_with_backoff_but_not_4xx(setting):
    _, suspect, _ = setting
    with ServerThread(create_app(served(suspect))) as server, httpx.Client(base_url=server.url) as real:
        failures = {"left": 2}

        def overloaded_twice(request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and failures["left"] > 0:
                failures["left"] -= 1
                return httpx.Response(503, json={"error": "overloaded"})
            answer = real.request(request.method, request.url.path, content=request.content, headers={"content-type": "application/json"})
            return httpx.Response(answer.status_code, content=answer.content, headers={"content-type": "application/json"})

        client = OipClient("http://api", "suspect", transport=httpx.MockTransport(overloaded_twice), backoff=0.01, retries=3)
        assert client(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert (client.attempts, client.requests) == (1 + 3, 2)  # metadata, two 503s, the answer
        with pytest.raises(RemoteError, match="refused .*HTTP 400.*input shape"):
            client(torch.rand(2, 3, 16, 16))
        assert client.attempts == 5  # a 4xx is not retried


def test_rate_limit_spaces_requests(setting):
    _, suspect, _ = setting
    with ServerThread(create_app(served(suspect))) as server:
        client = OipClient(server.url, "suspect", rate_limit=20.0)
        began = time.monotonic()
        for _ in range(4):
            client(torch.rand(1, 3, 32, 32))
        assert time.monotonic() - began >= 3 / 20.0 * 0.95


def test_a_server_slower_than_the_timeout_is_retried_then_given_up(setting):
    _, suspect, _ = setting

    class Slow:
        labels = False

        def __call__(self, images, outputs):
            time.sleep(1.0)
            return outputs

    model = served(suspect, Slow())
    with ServerThread(create_app(model)) as server:
        client = OipClient(server.url, "suspect", timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(RemoteError, match="did not answer POST .* after 2 attempts .*ReadTimeout"):
            client(torch.rand(1, 3, 32, 32))
        assert client.attempts == 1 + 2


def test_unreachable_server_is_one_clear_error():
    with pytest.raises(RemoteError, match="did not answer .* after 2 attempts"):
        OipClient("http://127.0.0.1:9", "m", retries=1, backoff=0.01, timeout=2)


_DYING_SERVER = """
import os, sys, torch
from modelprint.models import load_model
from modelprint.serving.server import ServedModel, create_app, serve
from modelprint.tasks import Classification
model = load_model(sys.argv[1])
served = ServedModel("suspect", model, Classification(), (3, 32, 32))
answer, die_after = served.answer, int(sys.argv[3])
def answer_then_die(images):
    if served.execution_count >= die_after:
        os._exit(1)  # killed while a request is in flight
    return answer(images)
served.answer = answer_then_die
serve(served, port=int(sys.argv[2]))
"""


def _wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the test server died while starting"
        try:
            if httpx.get(url + "/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the test server did not start")


def test_killed_server_then_rerun_resumes_without_resending(setting, tmp_path, capsys, untrained_sets_allowed):
    folder, suspect, fingerprints = setting
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    script = tmp_path / "dying_server.py"
    script.write_text(_DYING_SERVER)
    process = subprocess.Popen([sys.executable, str(script), str(folder / "suspect.safetensors"), str(port), "2"])
    try:
        _wait_until_up(url, process)
        args = ["verify", "--fingerprints", str(folder / "fp.safetensors"), "--url", url, "--model-name", "suspect",
                "--batch-size", "5", "--retries", "1", "--timeout", "5", "--records", str(tmp_path / "records")]
        code, _, err = run_cli(args, capsys)
        error = err.strip().splitlines()
        assert code == 2 and len(error) == 1 and "did not answer" in error[0] and "run the same verification again to resume" in error[0]
    finally:
        process.kill()
        process.wait()
    answered_before = 10  # two batches of 5 were answered before the server died on the third
    journals = list((tmp_path / "records").glob("*.queries.jsonl"))
    assert len(journals) == 1 and len(QueryJournal(journals[0])) == answered_before

    model = served(suspect)
    with ServerThread(create_app(model), port=port):
        code, out, _ = run_cli(args + ["--json"], capsys)
    summary = json.loads(out)
    assert code == 0
    probe = probe_count(answered_before, default_spliced(answered_before))  # journalled images asked again at random: all 10 of so few
    assert model.inference_count == 2 * N - answered_before + probe  # none of the answered images was sent again
    assert summary["queries"] == 2 * N and summary["sent"] == 2 * N - answered_before + probe
    local = SaliencyFingerprint().verify(WhiteBox(suspect), fingerprints, mode="black-box")
    assert abs(summary["matching_score"] - local.matching_score) <= 1e-6
    record = json.loads(Path(summary["record"]).read_text())
    assert record["queries"]["answered_from_journal"] == answered_before
    assert record["queries"]["log"]["sha256"] == __import__("hashlib").sha256(journals[0].read_bytes()).hexdigest()


def test_evidence_record_of_a_file_suspect_with_a_calibrated_verdict(setting, tmp_path, capsys, untrained_sets_allowed):
    folder, suspect, fingerprints = setting
    null = tmp_path / "null.json"
    null.write_text(json.dumps([0.0] * 19))
    record_path = tmp_path / "record.json"
    code, _, _ = run_cli(["verify", "--fingerprints", str(folder / "fp.safetensors"), "--suspect", str(folder / "suspect.safetensors"),
                          "--mode", "black-box", "--null", str(null), "--record", str(record_path), "--records", str(tmp_path / "r")], capsys)
    assert code == 0
    record = json.loads(record_path.read_text())
    assert record["fingerprints"]["sha256"] == FingerprintSet.load(folder / "fp.safetensors").sha256()
    assert record["suspect"]["sha256"] == __import__("hashlib").sha256((folder / "suspect.safetensors").read_bytes()).hexdigest()
    assert len(record["values"]) == N and record["queries"]["answered"] == 2 * N
    score = record["matching_score"]
    # 19 null scores of 0: p = 1/20 when the score is above them all, else 20/20.
    assert record["verdict"]["p_value"] == pytest.approx(0.05 if score > 0 else 1.0)
    assert record["tool"]["name"] == "modelprint" and sum(b["batch_size"] for b in record["queries"]["log"]["batches"]) == 2 * N


def test_null_scores_from_an_evaluation_run_must_match_the_fingerprint_set(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"suspects": [{"name": "a", "kind": "positive"}, {"name": "b", "kind": "negative"}, {"name": "c", "kind": "negative"}]}))
    scores = {"a": {"ms_black_box": 0.9, "ms_white_box": 0.8}, "b": {"ms_black_box": 0.1, "ms_white_box": 0.2}, "c": {"ms_black_box": 0.3, "ms_white_box": 0.4}}
    (tmp_path / "verification-0.json").write_text(json.dumps({"fingerprints_sha256": "abc", "suspects": scores}))
    assert read_null_scores(tmp_path / "verification-0.json", mode="black-box", fingerprints_sha256="abc") == [0.1, 0.3]
    assert read_null_scores(tmp_path / "verification-0.json", mode="white-box", fingerprints_sha256="abc") == [0.2, 0.4]
    with pytest.raises(InputError, match="another fingerprint set"):
        read_null_scores(tmp_path / "verification-0.json", mode="black-box", fingerprints_sha256="def")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="expected a non-empty JSON list"):
        read_null_scores(tmp_path / "bad.json", mode="black-box", fingerprints_sha256="abc")


def test_journal_ignores_a_cut_last_line_and_refuses_a_damaged_one(tmp_path):
    journal = QueryJournal(tmp_path / "q.jsonl")
    images = torch.rand(3, 1, 4, 4)
    keys = [f"k{i}" for i in range(3)]
    journal.record(keys, images, torch.rand(3, 2), seconds=0.1)
    with open(journal.path, "a") as handle:
        handle.write('{"time": "2026-')  # a crash mid-write
    again = QueryJournal(journal.path)
    assert len(again) == 3 and again.lines == 1 and journal.path.read_text().endswith("\n")
    journal.path.write_text("garbage\n" + journal.path.read_text())
    with pytest.raises(IntegrityError, match="line 1"):
        QueryJournal(journal.path)


def test_noise_and_rounding_filters():
    outputs = torch.tensor([[0.12345, 0.87655]])
    assert torch.equal(Rounding(decimals=2)(None, outputs), torch.tensor([[0.12, 0.88]]))
    noisy = GaussianNoise(sigma=0.1, seed=0)(None, outputs)
    assert noisy.shape == outputs.shape and not torch.equal(noisy, outputs)
    assert torch.equal(GaussianNoise(sigma=0.1, seed=0)(None, outputs), noisy)  # seeded


def test_serve_cli_rejects_a_missing_model(tmp_path, capsys):
    code, _, err = run_cli(["serve", "--model", str(tmp_path / "none.safetensors")], capsys)
    assert code == 2 and err.count("\n") == 1


def test_verify_cli_needs_one_suspect(setting, capsys):
    folder, _, _ = setting
    code, _, err = run_cli(["verify", "--fingerprints", str(folder / "fp.safetensors")], capsys)
    assert code == 2 and "either --suspect" in err
