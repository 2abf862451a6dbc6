"""Owners' own models and images: timm, torchvision and ONNX imports, and image folders."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import one_line, run_cli
from modelprint.data import load_data
from modelprint.errors import InputError
from modelprint.importer import import_model
from modelprint.models import fresh_like, load_model, save_model

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _images(n=4, size=32, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _timm_model(classes=5):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=classes).eval()
    with torch.no_grad():  # weights that are not an initialisation: every tensor counts in the comparison
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn_like(tensor))
    return model


def test_timm_weights_import_round_trip(tmp_path):
    original = _timm_model()
    torch.save(original.state_dict(), tmp_path / "weights.pt")
    model = import_model(tmp_path / "weights.pt", arch="timm:test_resnet", input_size=32, class_names=list("abcde"))
    x = _images()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.spec.mean, model.spec.std))  # timm's configuration's
    with torch.no_grad():
        expected = original((x - mean) / std)
        assert (model(x) - expected).abs().max() <= 1e-6
        save_model(model, tmp_path / "imported.safetensors")
        again = load_model(tmp_path / "imported.safetensors")
        assert (again(x) - expected).abs().max() <= 1e-6
        assert (fresh_like(again).eval()(x) - expected).abs().max() > 1e-3  # a fresh copy is another initialisation
    assert again.spec.arch == "timm:test_resnet" and again.spec.num_outputs == 5
    assert again.spec.info["class_names"] == list("abcde") and again.spec.info["imported_from"] == "weights.pt"


def test_torchvision_weights_import_round_trip(tmp_path):
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.mobilenet_v3_small(num_classes=3).eval()
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    model = import_model(tmp_path / "weights.safetensors", arch="torchvision:mobilenet_v3_small", input_size=64)
    x = _images(size=64)
    with torch.no_grad():
        assert (model(x) - original((x - IMAGENET_MEAN) / IMAGENET_STD)).abs().max() <= 1e-6
    assert model.spec.num_outputs == 3  # read from the weights' last linear layer


def _onnx_export(model, path, size=32):
    torch.onnx.export(model, (torch.rand(1, 3, size, size),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False, opset_version=18)


def test_onnx_import_round_trip_converted_and_run_as_it_is(tmp_path):
    original = _timm_model()
    _onnx_export(original, tmp_path / "model.onnx")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = _images()
    with torch.no_grad():
        expected = original((x - IMAGENET_MEAN) / IMAGENET_STD)
        converted = import_model(tmp_path / "model.onnx", mean=mean, std=std)
        assert converted.spec.arch == "onnx" and converted.spec.input_size == (32, 32)  # read from the graph
        assert (converted(x) - expected).abs().max() <= 1e-6
        save_model(converted, tmp_path / "converted.safetensors")
        again = load_model(tmp_path / "converted.safetensors")
        assert (again(x) - expected).abs().max() <= 1e-6
        assert (fresh_like(again).eval()(x) - expected).abs().max() > 1e-3
        run = import_model(tmp_path / "model.onnx", mean=mean, std=std, runtime="onnxruntime")
        save_model(run, tmp_path / "run.safetensors")
        assert (load_model(tmp_path / "run.safetensors")(x) - expected).abs().max() <= 1e-5
    with pytest.raises(InputError, match="cannot be initialised afresh"):
        fresh_like(run)


class _Payload:
    """Unpickling this writes a file: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_payload_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    state = dict(_timm_model().state_dict())
    state["extra"] = _Payload(str(marker))
    torch.save(state, tmp_path / "weights.pt")
    code, _, err = run_cli(["import", str(tmp_path / "weights.pt"), "--arch", "timm:test_resnet", "--input-size", "32",
                            "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line(code, err, "refused without running")
    assert not marker.exists() and not (tmp_path / "m.safetensors").exists()
    with open(tmp_path / "weights.pt", "rb") as handle:  # the file does carry the payload: plain pickle would run it
        assert b"payload-ran" in handle.read()


@pytest.mark.parametrize("argv, needle", [
    (["--arch", "timm:resnet18", "--input-size", "32"], "weights do not fit architecture timm:resnet18"),
    (["--arch", "timm:test_resnet"], "give the input size"),
    (["--arch", "timm:no_such_model", "--input-size", "32"], "timm has no model"),
    (["--input-size", "32"], "name the architecture"),
    (["--arch", "torchvision:resnet18", "--input-size", "32", "--channels", "1"], "takes 3-channel images"),
])
def test_bad_imports_are_one_line(tmp_path, capsys, argv, needle):
    torch.save(_timm_model().state_dict(), tmp_path / "weights.pt")
    code, _, err = run_cli(["import", str(tmp_path / "weights.pt"), *argv, "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line(code, err, needle)


def test_an_onnx_graph_without_a_converter_is_refused_in_one_line_and_runs_as_it_is(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    # A classifier whose graph needs an operator onnx2torch has no converter for (Hardmax).
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Hardmax", ["f"], ["y"])],
        "odd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "odd.onnx")
    argv = ["import", str(tmp_path / "odd.onnx"), "--mean", "0", "--std", "1", "--out", str(tmp_path / "m.safetensors")]
    code, _, err = run_cli(argv, capsys)
    one_line(code, err, "cannot be converted to torch", "Hardmax", "--runtime onnxruntime")
    code, out, err = run_cli([*argv, "--runtime", "onnxruntime"], capsys)
    assert code == 0 and "black-box only" in out, err
    model = load_model(tmp_path / "m.safetensors")
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3)


# --------------------------------------------------------------------------------------------------- image folders
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 200)}


def _write_class_folder(root, per_class=10, size=(20, 12), formats=("png", "jpg", "webp")):
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", size, colour).save(root / name / f"{i}.{formats[i % len(formats)]}")


def test_a_class_folder_loads_with_its_labels_and_a_seeded_split(tmp_path):
    _write_class_folder(tmp_path / "pets")
    splits = load_data(str(tmp_path / "pets"), size=16)
    assert splits.class_names == ["cat", "dog", "owl"]
    assert len(splits.train) == 24 and len(splits.test) == 6  # 20% of each class held out
    for part in (splits.train, splits.test):
        assert part.images.shape[1:] == (3, 16, 16)
        for image, label in zip(part.images, part.labels):
            colour = torch.tensor(COLOURS[splits.class_names[int(label)]]) / 255
            assert (image.mean(dim=(1, 2)) - colour).abs().max() < 0.05  # the label is the image's class folder
    assert torch.bincount(splits.test.labels).tolist() == [2, 2, 2]
    again = load_data(str(tmp_path / "pets"), size=16)
    assert torch.equal(again.test.images, splits.test.images)  # the split is seeded


def test_train_and_test_folders_are_kept_and_a_csv_gives_values(tmp_path):
    _write_class_folder(tmp_path / "pets" / "train", per_class=4)
    _write_class_folder(tmp_path / "pets" / "test", per_class=2)
    splits = load_data(str(tmp_path / "pets"), size=8, channels=1)
    assert (len(splits.train), len(splits.test), splits.train.images.shape[1]) == (12, 6, 1)
    rows = ["path,age"] + [f"pets/train/cat/{i}.{('png', 'jpg', 'webp')[i % 3]},{20 + i}" for i in range(4)]
    (tmp_path / "ages.csv").write_text("\n".join(rows) + "\n")
    values = load_data(str(tmp_path / "ages.csv"), size=8)
    assert values.train.is_regression and sorted(values.train.labels.tolist() + values.test.labels.tolist()) == [20, 21, 22, 23]


def test_image_sets_are_bounded(tmp_path, monkeypatch):
    _write_class_folder(tmp_path / "pets")
    monkeypatch.setenv("MODELPRINT_DATA_BUDGET_MB", "0.1")
    with pytest.raises(InputError, match=r"30 images of 3x64x64 would take .* GiB in memory, more than the budget"):
        load_data(str(tmp_path / "pets"), size=64)
    monkeypatch.delenv("MODELPRINT_DATA_BUDGET_MB")
    # A PNG whose header declares 8000 x 8000 pixels (64 M: above modelprint's 50 M, below the size at which Pillow
    # itself refuses a decompression bomb) is refused by modelprint from its header, before it is decoded.
    header = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    (tmp_path / "pets" / "cat" / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(InputError, match="bomb.png: 8000x8000 pixels, more than the 50,000,000 an image may have"):
        load_data(str(tmp_path / "pets"), size=16)


@pytest.mark.parametrize("make, needle", [
    (lambda root: (root / "only").mkdir(parents=True) or Image.new("RGB", (4, 4)).save(root / "only" / "a.png"), "1 class folder"),
    (lambda root: [(root / c).mkdir(parents=True) for c in "ab"] and [(root / c / f"{i}.png").write_bytes(b"not a png") for c in "ab" for i in range(5)], "not a readable image"),
])
def test_bad_image_folders_are_one_line(tmp_path, capsys, make, needle):
    make(tmp_path / "imgs")
    code, _, err = run_cli(["train", "--data", str(tmp_path / "imgs"), "--size", "8", "--epochs", "1", "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line(code, err, needle)
    assert not (tmp_path / "m.safetensors").exists()


def test_a_timm_architecture_trains_on_an_image_folder(tmp_path, capsys):
    _write_class_folder(tmp_path / "pets", per_class=6)
    code, out, err = run_cli(["train", "--data", str(tmp_path / "pets"), "--arch", "timm:test_resnet", "--size", "16",
                              "--epochs", "1", "--out", str(tmp_path / "m.safetensors")], capsys)
    assert code == 0, err
    model = load_model(tmp_path / "m.safetensors")
    assert model.spec.arch == "timm:test_resnet" and model.spec.num_outputs == 3 and model.spec.input_size == (16, 16)


def test_an_imported_model_is_served_and_asked_like_any_model_file(tmp_path):
    """`modelprint serve` takes an imported model file: what the Open Inference Protocol client reads back is the
    model's probabilities, for a timm model and a converted ONNX graph alike."""
    from modelprint.access import BlackBox
    from modelprint.serving.server import ServedModel, ServerThread, create_app
    from modelprint.tasks import Classification

    original = _timm_model()
    torch.save(original.state_dict(), tmp_path / "weights.pt")
    _onnx_export(original, tmp_path / "model.onnx")
    save_model(import_model(tmp_path / "weights.pt", arch="timm:test_resnet", input_size=32), tmp_path / "timm.safetensors")
    save_model(import_model(tmp_path / "model.onnx", mean=[0.5] * 3, std=[0.5] * 3), tmp_path / "onnx.safetensors")
    x = _images()
    for name in ("timm", "onnx"):
        model = load_model(tmp_path / f"{name}.safetensors")
        with ServerThread(create_app(ServedModel("suspect", model, Classification(), (3, 32, 32), []))) as server:
            box = BlackBox.http(server.url, "suspect")
            answers = box.predict(x)
        with torch.no_grad():
            assert torch.allclose(answers, torch.softmax(model(x), dim=1), atol=1e-6), name
        assert box.sent == len(x)


@pytest.mark.slow(60)
def test_every_command_that_rebuilds_a_model_works_on_an_imported_one(tmp_path, capsys):
    """An imported timm model (weights from a state dict) is a target like any other: the owner's helper models and
    a training zoo are fresh copies of its architecture trained on the owner's image folder, both watermarks mark it,
    and a fingerprint set made on it verifies its fine-tuned copy."""
    import json

    _write_class_folder(tmp_path / "pets", per_class=8, size=(16, 16), formats=("png",))
    torch.save(_timm_model(classes=3).state_dict(), tmp_path / "weights.pt")
    target = str(tmp_path / "target.safetensors")
    data = str(tmp_path / "pets")
    assert run_cli(["import", str(tmp_path / "weights.pt"), "--arch", "timm:test_resnet", "--input-size", "16", "--out", target], capsys)[0] == 0
    code, _, err = run_cli(["owner-models", "--target", target, "--data", data, "--references", "1", "--surrogates", "1", "--calibration", "0",
                            "--epochs", "1", "--executor", "inprocess", "--out", str(tmp_path / "owner")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["training-zoo", "--target", target, "--data", data, "--size", "2", "--epochs", "1", "--executor", "inprocess",
                            "--out", str(tmp_path / "tz")], capsys)
    assert code == 0, err
    for folder in ("owner", "tz"):
        manifest = json.loads((tmp_path / folder / "manifest.json").read_text())
        for record in manifest["suspects"]:
            model = load_model(record["path"])
            assert model.spec.arch == "timm:test_resnet" and model.spec.input_size == (16, 16) and model.spec.num_outputs == 3
    for scheme, settings in (("deepsigns", ["--set", "epochs=1", "--set", "keys=6", "--set", "bits=8"]), ("backdoor", ["--set", "epochs=1", "--set", "seeds=2"])):
        code, out, err = run_cli(["watermark", "embed", "--scheme", scheme, "--model", target, "--data", data, "--out", str(tmp_path / f"{scheme}.safetensors"),
                                  "--key", str(tmp_path / f"{scheme}.key"), *settings], capsys)
        assert code == 0 and "fidelity:" in out, err
        assert load_model(tmp_path / f"{scheme}.safetensors").spec.arch == "timm:test_resnet"
