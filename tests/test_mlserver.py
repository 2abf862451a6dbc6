"""The client against an Open Inference Protocol server modelprint did not write: MLServer with its scikit-learn runtime.

MLServer (Seldon) is installed from PyPI with the test extras and started here as its own process on loopback,
serving a scikit-learn logistic regression on the 8x8 digits that declares flat inputs ``[-1, 64]``; the client
reads that metadata and flattens the images. The same fingerprints verified in-process and through MLServer must
give the same matching score.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest
import torch

from modelprint.access import BlackBox
from modelprint.data import load_data
from modelprint.fingerprints import SaliencyFingerprint

from conftest import TinyCNN, free_ports

pytestmark = pytest.mark.skipif(shutil.which("mlserver") is None, reason="MLServer is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    """MLServer serving a scikit-learn classifier of 8x8 digits; yields (url, the classifier)."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("mlserver")
    digits = load_data("digits", channels=1, size=8)
    classifier = LogisticRegression(max_iter=500).fit(digits.train.images.reshape(len(digits.train.images), -1).numpy(), digits.train.labels.numpy())
    (folder / "digits").mkdir()
    joblib.dump(classifier, folder / "digits" / "model.joblib")
    (folder / "digits" / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": "mlserver_sklearn.SKLearnModel",
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "predict_proba", "datatype": "FP64", "shape": [-1, 10]}],
        "parameters": {"uri": "./model.joblib"},
    }))
    http, grpc, metrics = free_ports(3)
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics, "parallel_workers": 0,
    }))
    log = open(folder / "mlserver.log", "w")
    process = subprocess.Popen([shutil.which("mlserver"), "start", str(folder)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"MLServer exited: {(folder / 'mlserver.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/models/digits/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("MLServer did not become ready in 120 s")
            time.sleep(0.5)
        yield url, classifier, digits
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_client_against_mlserver_equals_in_process(mlserver):
    url, classifier, digits = mlserver
    torch.manual_seed(0)
    network = TinyCNN(channels=1, classes=10).eval()  # only makes 1x8x8 fingerprints; the suspect is MLServer's model
    candidates = digits.train.images[:200]
    labels = network(candidates).argmax(dim=1).detach()
    fingerprints = SaliencyFingerprint(n=10, steps=3).generate(network, candidates, labels)

    def in_process(images: torch.Tensor) -> torch.Tensor:
        flat = images.reshape(len(images), -1).numpy().astype(np.float32)
        return torch.from_numpy(classifier.predict_proba(flat))

    remote_box = BlackBox.http(url, "digits", output="predict_proba", batch_size=7)
    assert remote_box.input_shape is None and remote_box.identity["metadata"]["inputs"][0]["shape"] == [-1, 64]
    remote = SaliencyFingerprint().verify(remote_box, fingerprints)
    local = SaliencyFingerprint().verify(BlackBox(in_process), fingerprints)
    assert remote.queries == 2 * len(fingerprints)
    assert abs(remote.matching_score - local.matching_score) <= 1e-6
    assert np.allclose(remote.values, local.values, atol=1e-6)
