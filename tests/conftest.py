"""Shared fixtures: tiny seeded models and small data made on the spot (no downloads, no shared data sets).

The suite runs on two pytest-xdist workers (pyproject's addopts: ``-n 2 --dist loadgroup``); each worker uses one
torch thread (two workers with two threads each on two cores slow each other down), a run without xdist keeps two.
The tests that use a module-scoped fixture of their module share an ``xdist_group`` (added below), so that one worker
builds it once; the slowest tests (``@pytest.mark.slow(seconds)``) are sent first; the session's trained digits
target is trained by one worker and read by the other (:func:`digits_target`)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from modelprint.data import load_data
from modelprint.models import build_model
from modelprint.train import TrainConfig, train_supervised

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1" under pytest-xdist, None without it
torch.set_num_threads(1 if XDIST_WORKER else min(2, torch.get_num_threads()))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``: a test that uses a module-scoped fixture of its own module joins its module's
    xdist group (unless it names a group), so that one worker builds that fixture once; then the slowest tests
    (``@pytest.mark.slow(seconds)``) and their groups go first, longest first, so that none starts last (xdist sends
    scopes in collection order with ``--no-loadscope-reorder``); before them the tests marked ``early`` (and their
    groups), which measure their own process and must meet it fresh."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _uses_a_module_fixture_of_its_module(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    scope = lambda item: tuple(sorted(str(m.args[0]) for m in item.iter_markers("xdist_group"))) or item.nodeid  # noqa: E731
    seconds: dict = {}
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is not None:
            seconds[scope(item)] = max(seconds.get(scope(item), 0), marker.args[0] if marker.args else 1)
    early = {scope(item) for item in items if item.get_closest_marker("early") is not None}
    items.sort(key=lambda item: (scope(item) not in early, -seconds.get(scope(item), 0)))  # stable: collection order otherwise


def _uses_a_module_fixture_of_its_module(item) -> bool:
    module = item.getparent(pytest.Module)
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return module is not None and any(
        d.scope == "module" and d.baseid == module.nodeid for name in item.fixturenames for d in definitions.get(name, ())
    )


class TinyCNN(nn.Module):
    """Two smooth conv layers and a linear head: small enough for float64 finite differences."""

    def __init__(self, channels: int = 3, classes: int = 3, activation: type[nn.Module] = nn.Tanh) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), activation(), nn.Conv2d(4, 5, 3, stride=2, padding=1), activation())
        self.head = nn.Linear(5, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def counted(monkeypatch):
    """Counts the images every black-box access is asked for (not those of the null suspects a set is checked with)."""
    from modelprint.access import BlackBox

    asked = []
    original = BlackBox.predict

    def predict(self, images):
        if self.identity.get("kind") != "null":
            asked.append(len(images))
        return original(self, images)

    monkeypatch.setattr(BlackBox, "predict", predict)
    return asked


def one_line(code: int, err: str, *needles: str) -> str:
    """The one error line of a refused command (exit code 2, no traceback), holding every needle."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def untrained_sets_allowed(monkeypatch):
    """Switches off the null-suspect check (tests/test_degenerate_sets.py) for tests whose sets come from an untrained
    target: a fresh model of its architecture matches them, so they are degenerate and would be refused before the
    behaviour the test is about (journals, servers, records, authenticity) is reached."""
    from modelprint.fingerprints import nulls

    monkeypatch.setattr(nulls, "check_not_degenerate", lambda *args, **kwargs: [])


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="session")
def digits():
    return load_data("digits")


def _train_digits_target(digits):
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=8)
    result = train_supervised(model, digits.train, TrainConfig(epochs=4, seed=0, augment="crop"), test=digits.test, progress=False)
    model.spec.info["test_metric"] = result.test_metric
    return model.eval()


@pytest.fixture(scope="session")
def digits_target(digits, tmp_path_factory):
    """A small ResNet-18 (width 8) trained for a few epochs on digits: a real, if modest, target.

    Under xdist the first worker that needs it trains it and writes its weights and spec to the run's shared
    temporary folder (under a file lock); the other worker waits for that file and rebuilds the same model from it
    (the same architecture, spec and weights, not :func:`load_model`, which would add the file's hash to the spec)."""
    if not XDIST_WORKER:
        return _train_digits_target(digits)
    from filelock import FileLock
    from safetensors.torch import load_file, save_file

    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every worker of this run
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "run")  # this run's, never a file an earlier run left there
    weights, spec_file = shared / f"digits_target-{run}.safetensors", shared / f"digits_target-{run}.json"
    with FileLock(str(shared / f"digits_target-{run}.lock")):
        if not spec_file.is_file():
            model = _train_digits_target(digits)
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
            spec_file.write_text(json.dumps({"info": model.spec.info}))
            return model
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=8)
    model.load_state_dict(load_file(str(weights)))
    model.spec.info.update(json.loads(spec_file.read_text())["info"])
    return model.eval()


def write_npz_folder(folder, *, n=40, size=16, channels=3, classes=4, seed=0, images=None, labels=None):
    """A data folder in the layout of every set modelprint reads (train.npz and test.npz)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        imgs = images if images is not None else rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
        labs = labels if labels is not None else rng.integers(0, classes, n)
        np.savez(folder / f"{split}.npz", images=imgs, labels=labs)
    return folder


def run_cli(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    from modelprint.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def free_ports(k: int = 1) -> list[int]:
    """k distinct TCP ports free on loopback right now (for servers a test starts in another process)."""
    import socket

    sockets = [socket.socket() for _ in range(k)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
