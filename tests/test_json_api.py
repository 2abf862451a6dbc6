"""A suspect behind a JSON-over-HTTP API: a real LitServe server, started by the test, answering the top-5
probabilities of an uploaded image (tests/servers/litserve_topk.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from conftest import free_ports, run_cli
from modelprint.access import BlackBox, WhiteBox
from modelprint.errors import CapabilityError, InputError, RemoteError
from modelprint.fingerprints import TAFA, IPGuard, SaliencyFingerprint
from modelprint.models import save_model
from modelprint.serving.json_api import ApiMapping, JsonApiClient

SERVER = Path(__file__).parent / "servers" / "litserve_topk.py"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
pytestmark = pytest.mark.xdist_group("litserve")


@pytest.fixture(scope="module")
def api(digits_target, digits, tmp_path_factory):
    """The digits target behind LitServe (top-5 answers, class names), its file, and the file counting the
    images the server answered."""
    folder = tmp_path_factory.mktemp("litserve")
    digits_target.spec.info["class_names"] = NAMES
    save_model(digits_target, folder / "target.safetensors")
    count = folder / "count.txt"
    (port,) = free_ports()
    process = subprocess.Popen([sys.executable, str(SERVER), str(folder / "target.safetensors"), str(port), str(count)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("the LitServe server did not start within 90 s")
        yield url, folder, count, digits_target
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _served(count: Path) -> int:
    return len(count.read_text().splitlines()) if count.exists() else 0


def _completed_top5(probabilities: torch.Tensor) -> torch.Tensor:
    """What the client makes of a top-5 answer: the five probabilities, an equal share of the rest elsewhere."""
    top = torch.topk(probabilities, 5, dim=1)
    out = ((1 - top.values.sum(dim=1, keepdim=True)) / (probabilities.shape[1] - 5)).expand_as(probabilities).clone()
    return out.scatter(1, top.indices, top.values)


TOP5 = dict(answer="topk", answer_path="predictions", classes=tuple(NAMES))


def test_answers_are_the_models_top5_for_every_way_of_sending(api, digits):
    url, _, count, target = api
    images = digits.test.images[:6]
    with torch.no_grad():
        exact = _completed_top5(torch.softmax(target(images), dim=1))
        rounded = _completed_top5(torch.softmax(target((images * 255).round() / 255), dim=1))  # what an 8-bit image holds
    before = _served(count)
    for mapping, expected in ((ApiMapping(send="floats", field="pixels", **TOP5), exact),
                              (ApiMapping(send="multipart", field="file", **TOP5), rounded),
                              (ApiMapping(send="base64", field="image", **TOP5), rounded)):
        client = JsonApiClient(url, mapping)
        try:
            answers = client(images)
        finally:
            client.close()
        assert torch.allclose(answers, expected, atol=1e-5), (mapping.send, (answers - expected).abs().max())
    assert _served(count) - before == 3 * len(images)


def test_the_same_set_scores_the_same_through_the_api_and_in_process(api, digits):
    url, _, count, target = api
    images, labels = digits.test.images[:60], digits.test.labels[:60]
    fingerprints = IPGuard(n=12).generate(target, images, labels)
    local = IPGuard().verify(WhiteBox(target), fingerprints, mode="black-box")
    before = _served(count)
    box = BlackBox.json_api(JsonApiClient(url, ApiMapping(send="floats", field="pixels", **TOP5)), batch_size=5)
    remote = IPGuard().verify(box, fingerprints)
    assert remote.matching_score == local.matching_score and remote.values == local.values
    assert box.sent == len(fingerprints.samples) == _served(count) - before  # the server's count is the client's


def test_a_scheme_that_cannot_use_the_answers_is_refused_before_anything_is_sent(api, digits):
    url, _, count, target = api
    images = digits.test.images[:30]
    fingerprints = SaliencyFingerprint(n=4, steps=2).generate(target, images, target(images).argmax(dim=1).detach())
    before = _served(count)
    labels_only = BlackBox.json_api(JsonApiClient(url, ApiMapping(answer="label", answer_path="predictions.0", classes=tuple(NAMES))))
    with pytest.raises(CapabilityError, match="needs output scores"):
        SaliencyFingerprint().verify(labels_only, fingerprints)
    top5 = BlackBox.json_api(JsonApiClient(url, ApiMapping(**TOP5)))
    assert not TAFA.partial_scores  # not measured through a top-k API: refused there
    with pytest.raises(CapabilityError, match="needs output scores .* offers .*top-k"):
        TAFA().require(top5, "black-box")
    assert _served(count) == before


def test_verify_through_the_api_from_the_command_line(api, digits, tmp_path, capsys):
    url, folder, count, target = api
    images, labels = digits.test.images[:60], digits.test.labels[:60]
    IPGuard(n=10).generate(target, images, labels).save(tmp_path / "fp.safetensors")
    (tmp_path / "api.yaml").write_text("path: /predict\nsend: multipart\nfield: file\nanswer: topk\nanswer_path: predictions\n"
                                       f"classes: [{', '.join(NAMES)}]\n")
    before = _served(count)
    code, out, err = run_cli(["verify", "--fingerprints", str(tmp_path / "fp.safetensors"), "--url", url, "--api", str(tmp_path / "api.yaml"),
                              "--records", str(tmp_path / "records"), "--json"], capsys)
    assert code == 0, err
    import json

    summary = json.loads(out)
    assert summary["sent"] == 10 == _served(count) - before and summary["mode"] == "black-box"
    record = json.loads(Path(summary["record"]).read_text())
    assert record["suspect"]["kind"] == "http" and record["suspect"]["api"]["answer"] == "topk"
    # a third party replays the record: the suspect is asked again as the record's mapping says, every image
    before = _served(count)
    code, out, err = run_cli(["records", "check", summary["record"], "--replay", "--fingerprints", str(tmp_path / "fp.safetensors"),
                              "--url", url], capsys)
    assert code == 0 and _served(count) - before == 10, err


@pytest.mark.parametrize("mapping, needle", [
    (dict(answer="topk", answer_path="nowhere", classes=tuple(NAMES)), "answered no 'nowhere'"),
    (dict(answer="probabilities", answer_path="predictions"), "where a list of class scores is needed"),
    (dict(answer="topk", answer_path="predictions", classes=tuple(f"c{i}" for i in range(10))), "which the mapping's classes do not name"),
])
def test_answers_of_another_shape_are_one_line(api, digits, mapping, needle):
    url = api[0]
    client = JsonApiClient(url, ApiMapping(**mapping), retries=0)
    with pytest.raises(RemoteError, match=needle):
        client(digits.test.images[:1])


@pytest.mark.parametrize("settings, needle", [
    (dict(send="carrier pigeon"), "send must be one of"),
    (dict(path="predict"), "path must start with '/'"),
    (dict(per_request=0), "per_request must be"),
    (dict(classes=("a", "a")), "distinct"),
    (dict(colour="red"), "unknown setting"),
])
def test_bad_mappings_are_refused(settings, needle):
    with pytest.raises(InputError, match=needle):
        ApiMapping.from_dict(settings)


def test_a_retried_upload_sends_the_same_image_again():
    """A multipart request answered 503 is sent again whole (the image's bytes, not an exhausted stream)."""
    bodies = []

    def handler(request):
        bodies.append(request.read())
        return httpx.Response(503, json={"error": "busy"}) if len(bodies) == 1 else httpx.Response(200, json=[0.25, 0.75])

    client = JsonApiClient("http://api.test", ApiMapping(), transport=httpx.MockTransport(handler), backoff=0)
    assert client(torch.rand(1, 3, 8, 8)).tolist() == [[0.25, 0.75]]
    parts = [body.replace(body.split(b"\r\n", 1)[0], b"") for body in bodies]  # each request has its own boundary
    assert len(bodies) == 2 and parts[0] == parts[1] and b"image/png" in parts[0] and b"IEND" in parts[0]
