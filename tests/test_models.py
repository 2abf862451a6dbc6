import json

import pytest
import torch
from safetensors.torch import save_file

from modelprint.errors import InputError
from modelprint.models import MODEL_META_KEY, build_model, clone_model, load_model, read_spec, save_model, state_sha256
from modelprint.gradcam import GradCAM, find_cam_layer


@pytest.mark.parametrize(
    "arch, kwargs, size, grid",
    [
        ("resnet18", {"width": 4}, 32, (4, 4)),
        ("vgg11_bn", {"width": 4}, 64, (4, 4)),
        ("mobilefacenet", {"width": 8}, 32, (4, 4)),
    ],
)
def test_architectures_forward_and_grid(arch, kwargs, size, grid):
    torch.manual_seed(0)
    model = build_model(arch, num_outputs=7, input_size=size, **kwargs).eval()
    x = torch.rand(2, 3, size, size)
    assert model(x).shape == (2, 7)
    layer = find_cam_layer(model, x)
    with GradCAM(model, layer) as cam:
        maps, _ = cam(x, lambda out: out[:, 0])
    assert tuple(maps.shape[1:]) == grid


def test_resnet18_width64_is_the_real_size():
    model = build_model("resnet18", num_outputs=10, width=64)
    params = sum(p.numel() for p in model.parameters())
    assert 11_000_000 < params < 11_300_000  # ResNet-18 for CIFAR: 11.17 M parameters


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", num_outputs=5, width=4, info={"note": "x"}).eval()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.spec.info["note"] == "x"
    assert loaded.spec.info["sha256"] == state_sha256(model)
    assert read_spec(path).arch == "resnet18"
    assert state_sha256(clone_model(model)) == state_sha256(model)


def test_model_of_another_architecture_is_refused(tmp_path):
    model = build_model("resnet18", num_outputs=5, width=4)
    path = save_model(model, tmp_path / "m.safetensors")
    # Claim a VGG in the metadata but keep the ResNet weights.
    spec = json.loads(json.dumps({**json.loads(model.spec.to_json()), "arch": "vgg11_bn"}))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={MODEL_META_KEY: json.dumps(spec)})
    with pytest.raises(InputError, match="do not fit architecture vgg11_bn"):
        load_model(tmp_path / "bad.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(InputError, match="not a modelprint model file"):
        load_model(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match="not a safetensors model file"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")
    assert load_model(path)  # the good one still loads


def test_unknown_architecture():
    with pytest.raises(InputError, match="unknown architecture"):
        build_model("alexnet", num_outputs=2)
