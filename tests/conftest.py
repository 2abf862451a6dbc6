"""Shared fixtures: tiny seeded models and small data made on the spot (no downloads, no shared data sets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from modelprint.data import load_data
from modelprint.models import build_model
from modelprint.train import TrainConfig, train_supervised

torch.set_num_threads(min(2, torch.get_num_threads()))


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


@pytest.fixture(scope="session")
def digits_target(digits):
    """A small ResNet-18 (width 8) trained for a few epochs on digits: a real, if modest, target."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=10, width=8)
    result = train_supervised(model, digits.train, TrainConfig(epochs=4, seed=0, augment="crop"), test=digits.test, progress=False)
    model.spec.info["test_metric"] = result.test_metric
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
