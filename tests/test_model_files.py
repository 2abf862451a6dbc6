"""Model files are checked against their header before anything is built (issue 17, item 3).

A file's metadata declares the architecture; its header declares the tensors. The architecture's tensors are
computed on the ``meta`` device and compared with the header's before a parameter is allocated, so a few hundred
bytes declaring a huge width cost no memory. NaN or infinite weights are refused at load, and ``generate`` refuses
a target whose outputs are not finite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from modelprint.errors import InputError
from modelprint.evidence.record import file_identity
from modelprint.fingerprints import SaliencyFingerprint
from modelprint.integrity.hashing import file_sha256
from modelprint.models import MODEL_META_KEY, build_model, load_model, save_model

#: Most the peak RSS may grow while a bomb is refused (a width-600 ResNet-18 would take about 4 GB).
PEAK_GROWTH_LIMIT_MB = 150


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_model("resnet18", num_outputs=3, width=2, input_size=16).eval()


def _spec_with(model, **arch_kwargs) -> dict:
    spec = json.loads(model.spec.to_json())
    spec["arch_kwargs"].update(arch_kwargs)
    return spec


def _write(path, spec, tensors):
    save_file(tensors, str(path), metadata={MODEL_META_KEY: json.dumps(spec), "format_version": "1"})
    return path


def test_width_bomb_is_refused_with_small_peak_memory(small, tmp_path):
    """A 764-byte file whose metadata declares width 600 (a ~4 GB ResNet-18) is refused before
    anything is built: the peak RSS of a fresh process grows by less than 150 MB over what importing torch and
    modelprint took (230 MB with torch's CPU build, 520 MB with its CUDA build)."""
    spec = _spec_with(small, width=600)
    for pad in range(400):  # the size of the file the issue measured: 764 bytes
        spec["info"] = {"note": "x" * pad}
        bomb = _write(tmp_path / "bomb.safetensors", spec, {"net.fc.bias": torch.zeros(3)})
        if bomb.stat().st_size >= 764:
            break
    assert bomb.stat().st_size == 764
    child = textwrap.dedent(
        f"""
        from modelprint.errors import InputError
        from modelprint.models import load_model
        print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
        try:
            load_model({str(bomb)!r})
            print("loaded")
        except InputError as exc:
            print("refused:", exc)
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
        print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines[1].startswith("refused:") and "width" in lines[1], done.stdout + done.stderr
    growth_mb = (int(lines[-1]) - int(lines[0])) / 1024  # VmHWM is in kB
    assert growth_mb < PEAK_GROWTH_LIMIT_MB, f"peak RSS grew by {growth_mb:.0f} MB"


def test_weights_that_do_not_fit_the_declared_architecture_are_refused_in_one_line(small, tmp_path):
    state = {k: v.contiguous() for k, v in small.state_dict().items()}
    wider = _write(tmp_path / "wider.safetensors", _spec_with(small, width=3), state)
    with pytest.raises(InputError, match="is stored as") as caught:
        load_model(wider)
    assert "\n" not in str(caught.value)
    half = {k: (v.half() if k == "net.fc.weight" else v) for k, v in state.items()}
    with pytest.raises(InputError, match="float16"):
        load_model(_write(tmp_path / "half.safetensors", _spec_with(small), half))
    extra = {**state, "net.spare": torch.zeros(2)}
    with pytest.raises(InputError, match="unexpected net.spare"):
        load_model(_write(tmp_path / "extra.safetensors", _spec_with(small), extra))


@pytest.mark.parametrize(
    "arch_kwargs,word",
    [
        ({"width": 0}, "arch_kwargs width must be a whole number >= 1"),
        ({"width": -3}, "arch_kwargs width must be a whole number >= 1"),
        ({"width": "16"}, "arch_kwargs width must be a whole number >= 1"),
        ({"width": True}, "arch_kwargs width must be a whole number >= 1"),
        ({"width": 2.5}, "arch_kwargs width must be a whole number >= 1"),
        ({"num_outputs": 0}, "arch_kwargs num_outputs must be a whole number >= 1"),
        ({"in_channels": 0}, "arch_kwargs in_channels must be a whole number >= 1"),
        ({"in_channels": 1}, "channels 3 but arch_kwargs in_channels 1"),
        ({"depth": 50}, "takes no argument depth"),
    ],
)
def test_bad_architecture_arguments_are_refused_before_building(small, tmp_path, arch_kwargs, word):
    state = {k: v.contiguous() for k, v in small.state_dict().items()}
    path = _write(tmp_path / "bad.safetensors", _spec_with(small, **arch_kwargs), state)
    with pytest.raises(InputError, match=word) as caught:
        load_model(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("field,value", [("std", [0.25, 0.0, 0.25]), ("mean", [0.5]), ("input_size", [16]), ("output_scale", None), ("channels", 0)])
def test_bad_preprocessing_is_refused(small, tmp_path, field, value):
    spec = _spec_with(small)
    spec[field] = value
    state = {k: v.contiguous() for k, v in small.state_dict().items()}
    with pytest.raises(InputError, match=field):
        load_model(_write(tmp_path / "bad.safetensors", spec, state))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused_at_load(small, tmp_path, bad):
    state = {k: v.clone().contiguous() for k, v in small.state_dict().items()}
    state["net.layer2.0.conv1.weight"].view(-1)[5] = bad
    with pytest.raises(InputError, match="net.layer2.0.conv1.weight holds NaN or infinite"):
        load_model(_write(tmp_path / "nan.safetensors", _spec_with(small), state))


def test_loaded_model_is_trainable_and_equal_to_the_saved_one(small, tmp_path):
    loaded = load_model(save_model(small, tmp_path / "m.safetensors"))
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), small(x))
    assert all(p.requires_grad and p.device.type == "cpu" for p in loaded.parameters())
    loaded(x).sum().backward()  # parameters are real, writable leaves
    assert loaded.net.fc.weight.grad is not None


def test_generate_refuses_a_target_with_non_finite_outputs(small):
    broken = build_model("resnet18", num_outputs=3, width=2, input_size=16).eval()
    broken.load_state_dict(small.state_dict())
    with torch.no_grad():
        broken.net.fc.bias.fill_(float("inf"))
    images = torch.rand(8, 3, 16, 16)
    with pytest.raises(InputError, match="NaN or infinite"):
        SaliencyFingerprint(n=2, steps=1).generate(broken, images, torch.zeros(8, dtype=torch.long))


def test_suspect_files_are_hashed_in_chunks(tmp_path, monkeypatch):
    import hashlib

    import modelprint.integrity.hashing as hashing

    monkeypatch.setattr(hashing, "CHUNK_BYTES", 7)
    data = bytes(range(256)) * 5
    (tmp_path / "f.bin").write_bytes(data)
    assert file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()
    assert file_identity(tmp_path / "f.bin")["sha256"] == hashlib.sha256(data).hexdigest()
