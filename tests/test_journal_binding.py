"""Query journals bound to what they answered for, budgets that count every image sent, bounded client answers and
strict, credential-free records."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch

from modelprint.access import BlackBox, default_spliced, probe_count
from modelprint.errors import InputError, QueryBudgetExceeded, RemoteError
from modelprint.evidence.record import file_identity, write_record
from modelprint.fingerprints import FingerprintSet, SaliencyFingerprint
from modelprint.models import build_model, save_model
from modelprint.serving.client import OipClient
from modelprint.serving.server import ServedModel, ServerThread, create_app
from modelprint.tasks import Classification
from modelprint.serving.urls import redact_text, redact_url
from modelprint.evidence.verification import verify_suspect

from conftest import free_ports, one_line, run_cli

N = 10
#: The sets here come from untrained targets (degenerate under the null-suspect check, tests/test_degenerate_sets.py):
#: what these tests examine is the journal, the budget and the record.
pytestmark = pytest.mark.usefixtures("untrained_sets_allowed")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Tiny untrained models on disk (the target, an independent model, a 3-class model), N fingerprints of the
    target and null scores that make any positive score PIRATED."""
    folder = tmp_path_factory.mktemp("binding")
    models = {}
    for name, seed, classes in (("target", 0, 10), ("other", 1, 10), ("three", 2, 3)):
        torch.manual_seed(seed)
        models[name] = build_model("resnet18", num_outputs=classes, width=4).eval()
        save_model(models[name], folder / f"{name}.safetensors")
    images = torch.rand(40, 3, 32, 32)
    labels = models["target"](images).argmax(dim=1).detach()
    SaliencyFingerprint(n=N, steps=3).generate(models["target"], images, labels).save(folder / "fp.safetensors")
    (folder / "null.json").write_text(json.dumps([0.0] * 19))
    return folder, models


class FakeServer:
    """An Open Inference Protocol server as an httpx transport handler: counts every image it receives (failed
    attempts included), can fail the first requests with 500 and can tamper with its answers."""

    def __init__(self, model, *, fail: int = 0, tamper=None, declared: int = 10, metadata: dict | None = None) -> None:
        self.model, self.fail, self.tamper = model, fail, tamper
        self.received = self.gets = 0
        self.metadata = metadata or {
            "name": "suspect", "platform": "pytorch",
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, declared]}],
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets += 1
            return httpx.Response(200, json=self.metadata)
        tensor = json.loads(request.content)["inputs"][0]
        x = torch.tensor(tensor["data"]).view(tensor["shape"])
        self.received += len(x)
        if self.fail > 0:
            self.fail -= 1
            return httpx.Response(500, json={"error": "overloaded"})
        with torch.no_grad():
            y = self.model(x).softmax(dim=1)
        data = y.reshape(-1).tolist()
        data = self.tamper(data) if self.tamper else data
        body = {"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": list(y.shape), "data": data}]}
        return httpx.Response(200, content=json.dumps(body).encode(), headers={"content-type": "application/json"})

    def client(self, **options) -> OipClient:
        return OipClient("http://api", "suspect", transport=httpx.MockTransport(self), backoff=0.0, **options)


def verify_args(folder: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["verify", "--fingerprints", str(folder / "fp.safetensors"), "--mode", "black-box", "--records",
            str(tmp_path / "records"), *extra]


def test_the_journal_of_one_model_file_is_refused_for_another(setting, tmp_path, capsys):
    folder, _ = setting
    journal = tmp_path / "j.queries.jsonl"
    args = verify_args(folder, tmp_path, "--journal", str(journal), "--null", str(folder / "null.json"))
    code, _, err = run_cli(args + ["--suspect", str(folder / "target.safetensors")], capsys)
    assert code == 0, err
    code, out, err = run_cli(args + ["--suspect", str(folder / "other.safetensors")], capsys)
    one_line(code, err, "is the query journal of the model file with SHA-256", "--new-journal")
    assert "PIRATED" not in out


def test_new_journal_sets_the_old_one_aside_and_starts_afresh(setting, tmp_path, capsys):
    folder, _ = setting
    journal = tmp_path / "j.queries.jsonl"
    args = verify_args(folder, tmp_path, "--journal", str(journal), "--json")
    assert run_cli(args + ["--suspect", str(folder / "target.safetensors")], capsys)[0] == 0
    before = journal.read_bytes()
    code, out, err = run_cli(args + ["--suspect", str(folder / "other.safetensors"), "--new-journal"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["sent"] == 2 * N  # nothing came from the target's journal
    aside = list(tmp_path.glob("j.queries.*.set-aside.jsonl"))
    assert len(aside) == 1 and aside[0].read_bytes() == before
    header = json.loads(journal.read_text().splitlines()[0])
    assert header["suspect"] == {"kind": "file", "sha256": file_identity(folder / "other.safetensors")["sha256"]}
    record = json.loads(Path(summary["record"]).read_text())
    assert record["queries"]["journal"]["set_aside"] == str(aside[0])
    assert record["queries"]["answered_from_journal"] == 0 and record["queries"]["journal"]["before_run"] is None


def test_a_restarted_server_serving_another_model_is_caught_by_the_probe(setting, tmp_path, capsys):
    folder, models = setting
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    args = verify_args(folder, tmp_path, "--url", url, "--model-name", "suspect", "--journal", str(tmp_path / "j.jsonl"), "--json")

    def serve(model):
        served = ServedModel("suspect", model, Classification(), (3, 32, 32))
        return served, ServerThread(create_app(served), port=port)

    served, server = serve(models["target"])
    with server:
        code, _, err = run_cli(args, capsys)
    assert code == 0 and served.inference_count == 2 * N, err
    served, server = serve(models["other"])  # same URL, same name, same metadata: only the probe can tell
    with server:
        code, _, err = run_cli(args, capsys)
    one_line(code, err, "no longer answers as the journal", "--new-journal", "noisy")
    probe = probe_count(2 * N, default_spliced(2 * N))  # a random sample of the journalled images, sized to catch a 10% splice
    assert served.inference_count == probe  # the probe, nothing more
    served, server = serve(models["target"])  # the journalled model again: the probe passes, the rest is replayed
    with server:
        code, out, err = run_cli(args, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert served.inference_count == probe and summary["sent"] == probe and summary["queries"] == 2 * N
    record = json.loads(Path(summary["record"]).read_text())
    assert record["queries"]["probe"]["max_difference"] <= 1e-4 and record["queries"]["answered_from_journal"] == 2 * N
    assert record["queries"]["probe"]["images"] == probe


def test_an_edited_journal_is_refused(setting, tmp_path, capsys):
    folder, _ = setting
    journal = tmp_path / "j.jsonl"
    args = verify_args(folder, tmp_path, "--journal", str(journal), "--suspect", str(folder / "target.safetensors"))
    assert run_cli(args, capsys)[0] == 0
    lines = journal.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if "outputs" in json.loads(line))
    entry = json.loads(lines[number])
    entry["outputs"][0][0] += 0.5  # still valid JSON, still a number
    lines[number] = json.dumps(entry)
    journal.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(args, capsys)
    one_line(code, err, f"line {number + 1}", "do not match their SHA-256", "edited")


def test_an_empty_object_as_journal_line_is_one_line(setting, tmp_path, capsys):
    folder, _ = setting
    journal = tmp_path / "j.jsonl"
    journal.write_text("{}\n")
    code, _, err = run_cli(verify_args(folder, tmp_path, "--journal", str(journal), "--suspect", str(folder / "target.safetensors")), capsys)
    one_line(code, err, "line 1 is not a query-journal header")


def test_a_journal_of_another_fingerprint_set_is_refused(setting, tmp_path, capsys):
    folder, _ = setting
    first = FingerprintSet.load(folder / "fp.safetensors")
    second = replace(first, stats={**first.stats, "copy": 2})  # the same samples in another set: the same image keys
    second.save(tmp_path / "fp2.safetensors")
    args = verify_args(folder, tmp_path, "--journal", str(tmp_path / "j.jsonl"), "--suspect", str(folder / "target.safetensors"))
    assert run_cli(args, capsys)[0] == 0
    args[args.index("--fingerprints") + 1] = str(tmp_path / "fp2.safetensors")
    one_line(*run_cli(args, capsys)[::2], f"with fingerprint set {first.sha256()[:12]}...", "--new-journal")


def test_the_budget_bounds_images_sent_retries_included(setting, tmp_path):
    folder, models = setting
    fingerprints = FingerprintSet.load(folder / "fp.safetensors")
    server = FakeServer(models["target"], fail=1)  # the first request fails once: its retry costs 5 more images
    box = BlackBox.http("http://api", "suspect", client=server.client(retries=3), budget=2 * N, batch_size=5, journal=tmp_path / "j.jsonl")
    with pytest.raises(QueryBudgetExceeded, match=r"retries included.*answers received so far are kept in .*j\.jsonl"):
        SaliencyFingerprint().verify(box, fingerprints)
    assert server.received <= 2 * N and box.sent == server.received and box.queries == server.received - 5


def test_two_runs_cannot_write_one_journal(setting, tmp_path, capsys):
    folder, models = setting
    journal = tmp_path / "j.jsonl"
    identity = file_identity(folder / "target.safetensors")
    first = BlackBox.from_model(models["target"], Classification(), journal=journal, identity=identity)
    with pytest.raises(InputError, match="in use by another verification"):
        BlackBox.from_model(models["target"], Classification(), journal=journal, identity=identity)
    args = verify_args(folder, tmp_path, "--journal", str(journal), "--suspect", str(folder / "target.safetensors"))
    one_line(*run_cli(args, capsys)[::2], "in use by another verification")
    first.close()
    assert run_cli(args, capsys)[0] == 0


@pytest.mark.parametrize("bad, words", [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"), (1e308, "float32 range")])
def test_nan_infinite_and_huge_answers_are_refused(setting, bad, words):
    _, models = setting
    box = BlackBox.http("http://api", "suspect", client=FakeServer(models["target"], tamper=lambda d: [bad] + d[1:]).client())
    with pytest.raises(RemoteError, match=words) as caught:
        box.predict(torch.rand(2, 3, 32, 32))
    assert "\n" not in str(caught.value)
    in_process = BlackBox(lambda x: torch.full((len(x), 10), bad, dtype=torch.float64))
    with pytest.raises(InputError, match="NaN or infinite"):
        in_process.predict(torch.rand(2, 3, 32, 32))


def test_a_three_class_answer_for_a_ten_class_set_is_one_line(setting, tmp_path, capsys):
    folder, models = setting
    three = str(folder / "three.safetensors")
    for mode in ("black-box", "white-box"):
        args = ["verify", "--fingerprints", str(folder / "fp.safetensors"), "--suspect", three, "--mode", mode, "--records", str(tmp_path / "r")]
        one_line(*run_cli(args, capsys)[::2], "answers 3 values per image", "10 classes")
    served = FakeServer(models["three"], declared=3)  # a server that declares what it answers: the scheme refuses
    fingerprints = FingerprintSet.load(folder / "fp.safetensors")
    with pytest.raises(InputError, match="answers 3 values per image, but the fingerprint set's target has 10 classes"):
        SaliencyFingerprint().verify(BlackBox.http("http://api", "suspect", client=served.client()), fingerprints)
    lying = FakeServer(models["three"], declared=10)  # one that declares 10 and answers 3: the client refuses
    with pytest.raises(RemoteError, match=r"shape \[3\] per image; its metadata declares \[10\]"):
        BlackBox.http("http://api", "suspect", client=lying.client()).predict(torch.rand(2, 3, 32, 32))


def test_records_are_strict_json_without_credentials(setting, tmp_path, capsys):
    folder, models = setting
    with ServerThread(create_app(ServedModel("suspect", models["target"], Classification(), (3, 32, 32)))) as server:
        secret_url = server.url.replace("http://", "http://alice:s3cret@")
        code, out, err = run_cli(verify_args(folder, tmp_path, "--url", secret_url, "--model-name", "suspect", "--json"), capsys)
    assert code == 0, err
    record_text = Path(json.loads(out)["record"]).read_text()
    record = json.loads(record_text, parse_constant=lambda name: pytest.fail(f"{name} in a record"))
    assert record["suspect"]["url"] == server.url
    journals = list((tmp_path / "records").glob("*.queries.jsonl"))
    for text in (record_text, journals[0].read_text(), out, err):
        assert "s3cret" not in text and "alice" not in text
    code, _, err = run_cli(verify_args(folder, tmp_path, "--url", "http://alice:s3cret@127.0.0.1:9", "--model-name", "m", "--retries", "0"), capsys)
    assert "s3cret" not in one_line(code, err, "did not answer")
    assert redact_url("https://u:p@host:8/base?token=x#f") == "https://host:8/base"
    assert redact_text("failed: http://u:p@h/x") == "failed: http://h/x"
    path = write_record({"values": [0.5, float("nan")], "score": float("inf")}, tmp_path / "r.json")
    written = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in a record"))
    assert written["values"] == [0.5, None] and written["non_finite_as_null"] == ["score", "values[1]"]


@pytest.mark.parametrize("where", ["records-is-a-file", "journal-under-a-file", "journal-is-a-folder"])
def test_unwritable_record_and_journal_paths_are_refused_before_anything_is_sent(setting, tmp_path, capsys, where):
    folder, models = setting
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (tmp_path / "folder").mkdir()
    paths = {"records-is-a-file": {"records": blocker},
             "journal-under-a-file": {"records": tmp_path / "r", "journal": blocker / "j.jsonl"},
             "journal-is-a-folder": {"records": tmp_path / "r", "journal": tmp_path / "folder"}}[where]
    server = FakeServer(models["target"])
    with pytest.raises(InputError):
        verify_suspect(folder / "fp.safetensors", url="http://api", model_name="suspect", transport=httpx.MockTransport(server), **paths)
    assert server.gets == 0 and server.received == 0
    args = ["verify", "--fingerprints", str(folder / "fp.safetensors"), "--suspect", str(folder / "target.safetensors"), "--mode", "black-box"]
    args += [part for key, value in paths.items() for part in (f"--{key}", str(value))]
    one_line(*run_cli(args, capsys)[::2], str(blocker if where != "journal-is-a-folder" else tmp_path / "folder"))


@pytest.mark.parametrize("metadata", [
    {"inputs": "images"},
    {"inputs": [{"name": "images", "shape": ["a", 3, 32, 32]}]},
    {"inputs": [{"name": "images", "shape": [-1, 3, 32, 32]}], "outputs": {"name": "p"}},
    {"inputs": [{"name": 7, "shape": [-1, 3, 32, 32]}]},
    {"inputs": [{"name": "images", "shape": [True, 3, 32, 32]}]},
])
def test_odd_metadata_is_a_remote_error(setting, metadata):
    _, models = setting
    with pytest.raises(RemoteError, match="its metadata declares"):
        FakeServer(models["target"], metadata=metadata).client()


class _Drip(httpx.SyncByteStream):
    def __iter__(self):
        for _ in range(20):
            time.sleep(0.05)
            yield b" "


def test_a_slow_drip_answer_is_given_up_at_the_deadline(setting):
    _, models = setting
    server = FakeServer(models["target"])

    def dripping(request: httpx.Request) -> httpx.Response:
        return server(request) if request.method == "GET" else httpx.Response(200, stream=_Drip())

    # every byte arrives well within the 0.1 s read timeout; the deadline (4 x timeout by default) ends the request
    client = OipClient("http://api", "suspect", transport=httpx.MockTransport(dripping), retries=0, timeout=0.1)
    began = time.monotonic()
    with pytest.raises(RemoteError, match="not complete within the 0.4 s deadline"):
        client(torch.rand(1, 3, 32, 32))
    assert time.monotonic() - began < 0.9


def test_an_oversized_answer_is_refused(setting):
    server = FakeServer(setting[1]["target"])
    with pytest.raises(RemoteError, match="more than 2000 bytes"):
        server.client(max_answer_bytes=2000)(torch.rand(20, 3, 32, 32))
