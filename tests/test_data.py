import numpy as np
import pytest
import torch

from modelprint.data import ImageDataset, adapt_images, load_data, load_medmnist, to_image_tensor
from modelprint.errors import InputError

from conftest import write_npz_folder


def test_digits_is_the_embedded_default():
    data = load_data("digits")
    assert data.train.images.shape[1:] == (3, 32, 32)
    assert len(data.train) + len(data.test) == 1797
    assert data.num_classes == 10
    assert 0.0 <= data.train.images.min() and data.train.images.max() <= 1.0
    again = load_data("digits")
    assert torch.equal(again.test.labels, data.test.labels)  # fixed split
    assert data.augment == "crop"  # mirrored digits are other glyphs


def test_npz_folder(tmp_path):
    folder = write_npz_folder(tmp_path / "set", n=10, size=12, channels=1, classes=3)
    data = load_data(str(folder), channels=3, size=16)
    assert data.train.images.shape == (10, 3, 16, 16)
    assert data.train.labels.dtype == torch.int64
    raw = load_data(str(folder), channels=None)
    assert raw.train.images.shape == (10, 1, 12, 12)
    with pytest.raises(InputError, match="no such data folder"):
        load_data(str(tmp_path / "missing"))


def test_regression_labels_stay_float(tmp_path):
    folder = write_npz_folder(tmp_path / "ages", n=6, labels=np.linspace(1, 60, 6).astype(np.float32))
    data = load_data(str(folder))
    assert data.train.is_regression and data.num_classes is None


def test_medmnist_layout(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 3), ("test", 5)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)  # grayscale: N x 28 x 28
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1))  # MedMNIST labels are N x 1
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path))
    data = load_data("medmnist:pneumoniamnist", channels=3, size=32)
    assert data.train.images.shape == (11, 3, 32, 32)  # train + val
    assert data.test.labels.shape == (5,)
    assert torch.equal(data.test.labels, torch.from_numpy(arrays["test_labels"][:, 0]))
    with pytest.raises(InputError, match="not found"):
        load_medmnist("dermamnist", size=64, root=tmp_path)


def test_bad_pixels_are_refused():
    bad = np.zeros((2, 4, 4, 3), dtype=np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        to_image_tensor(bad)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        to_image_tensor(np.full((1, 4, 4, 3), 2.0, dtype=np.float32))
    with pytest.raises(InputError, match="3 channels"):
        adapt_images(torch.rand(1, 3, 4, 4), channels=1)
    with pytest.raises(InputError, match="labels"):
        ImageDataset(torch.rand(2, 3, 4, 4), torch.zeros(3, dtype=torch.long))


def test_a_data_folder_named_by_another_path_is_the_same_recipe(tmp_path, monkeypatch):
    from modelprint.data import same_recipe

    folder = tmp_path / "shared" / "data" / "faces"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "shared")
    recipe = {"arch": "resnet18", "data": str(folder), "train": {"epochs": 3}}
    assert same_recipe(recipe, {**recipe, "data": "data/faces"})  # relative to the working folder
    assert same_recipe(recipe, {**recipe, "data": "../shared/data/./faces"})
    assert not same_recipe(recipe, {**recipe, "data": "data/other"})
    assert not same_recipe(recipe, {**recipe, "train": {"epochs": 4}})
    assert same_recipe({"data": "digits"}, {"data": "digits"}) and not same_recipe({"data": "digits"}, {"data": "mnist"})
    assert not same_recipe(None, recipe)
