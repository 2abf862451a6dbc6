"""The command line end to end on tiny data, and its one-line errors (exit code 2) for bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelprint.models import build_model, save_model

from conftest import run_cli as run, write_npz_folder



@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny data set and a 1-epoch model made with the CLI, shared by the tests below."""
    base = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 64)
    images = rng.integers(0, 60, (64, 16, 16, 3), dtype=np.uint8)
    for i, label in enumerate(labels):  # a learnable signal: a bright quadrant per class
        r, c = divmod(int(label), 2)
        images[i, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 150
    write_npz_folder(base / "data", images=images, labels=labels)
    return base


def test_train_generate_verify(workdir, capsys):
    model = workdir / "model.safetensors"
    code, _, err = run(["train", "--data", str(workdir / "data"), "--width", "4", "--epochs", "3", "--out", str(model)], capsys)
    assert code == 0, err
    assert model.is_file()
    fp = workdir / "fp.safetensors"
    args = ["generate", "--model", str(model), "--data", str(workdir / "data"), "--n", "4", "--steps", "3", "--out", str(fp)]
    code, _, err = run(args, capsys)
    assert code == 0, err
    for mode, queries in (("white-box", 0), ("black-box", 8)):
        code, out, err = run(["verify", "--fingerprints", str(fp), "--suspect", str(model), "--mode", mode, "--json",
                              "--records", str(workdir / "records")], capsys)
        assert code == 0, err
        record = json.loads(out)
        assert set(record) == {"scheme", "mode", "matching_score", "n_samples", "queries", "threshold", "elapsed_s",
                               "sent", "pirated", "p_value", "record"}
        assert json.loads(Path(record["record"]).read_text())["matching_score"] == record["matching_score"]
        assert record["mode"] == mode and record["queries"] == queries and record["n_samples"] == 4
    code, _, err = run(["verify", "--fingerprints", str(fp), "--suspect", str(model), "--mode", "black-box", "--budget", "5",
                        "--records", str(workdir / "records"), "--fresh"], capsys)
    assert code == 2 and "query budget" in err


def one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(workdir, capsys):
    code, _, err = run(["verify", "--fingerprints", str(workdir / "nope.safetensors"), "--suspect", "x"], capsys)
    one_line_error(code, err, "no such fingerprint file")
    code, _, err = run(["generate", "--model", str(workdir / "nope.safetensors"), "--out", str(workdir / "o")], capsys)
    one_line_error(code, err, "no such model file")


def test_not_a_fingerprint_file(workdir, capsys):
    code, _, err = run(["verify", "--fingerprints", str(workdir / "model.safetensors"), "--suspect", str(workdir / "model.safetensors")], capsys)
    one_line_error(code, err, "not a modelprint fingerprint set")


def test_wrong_channel_count_and_shape(workdir, capsys):
    torch.manual_seed(0)
    gray = save_model(build_model("resnet18", num_outputs=4, width=4, channels=1, input_size=16), workdir / "gray.safetensors")
    code, _, err = run(["verify", "--fingerprints", str(workdir / "fp.safetensors"), "--suspect", str(gray)], capsys)
    one_line_error(code, err, "expects 1x16x16")
    big = save_model(build_model("resnet18", num_outputs=4, width=4, input_size=32), workdir / "big.safetensors")
    code, _, err = run(["verify", "--fingerprints", str(workdir / "fp.safetensors"), "--suspect", str(big), "--mode", "black-box"], capsys)
    one_line_error(code, err, "expects 3x32x32")


def test_labels_out_of_range(workdir, capsys):
    rng = np.random.default_rng(1)
    folder = write_npz_folder(workdir / "labels9", n=16, labels=np.full(16, 9), images=rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    code, _, err = run(["generate", "--model", str(workdir / "model.safetensors"), "--data", str(folder), "--n", "2", "--out", str(workdir / "o")], capsys)
    one_line_error(code, err, "labels out of range")


def test_nan_pixels(workdir, capsys):
    images = np.random.default_rng(2).random((8, 16, 16, 3)).astype(np.float32)
    images[3, 2, 2, 1] = np.nan
    folder = write_npz_folder(workdir / "nan", images=images, labels=np.zeros(8, dtype=np.int64))
    code, _, err = run(["generate", "--model", str(workdir / "model.safetensors"), "--data", str(folder), "--out", str(workdir / "o")], capsys)
    one_line_error(code, err, "NaN")


def test_model_of_another_architecture(workdir, capsys):
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(workdir / "model.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    spec = json.loads(meta["modelprint.model"])
    spec["arch"] = "mobilefacenet"
    save_file(load_file(str(workdir / "model.safetensors")), str(workdir / "liar.safetensors"), metadata={**meta, "modelprint.model": json.dumps(spec)})
    code, _, err = run(["verify", "--fingerprints", str(workdir / "fp.safetensors"), "--suspect", str(workdir / "liar.safetensors")], capsys)
    one_line_error(code, err, "do not fit architecture mobilefacenet")


def test_bad_pattern(workdir, capsys):
    code, _, err = run(["generate", "--model", str(workdir / "model.safetensors"), "--data", str(workdir / "data"), "--pattern", "a;b", "--out", str(workdir / "o")], capsys)
    one_line_error(code, err, "--pattern")
