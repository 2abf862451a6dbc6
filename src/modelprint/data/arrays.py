"""Data sets stored as arrays: the embedded digits, folders of ``train.npz``/``test.npz`` and MedMNIST files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .sets import DataSplits, ImageDataset, adapt_images, labels_tensor, to_image_tensor

DIGITS = "digits"
MEDMNIST_PREFIX = "medmnist:"


def load_digits(*, size: int = 32, channels: int = 3, test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """scikit-learn's bundled 8x8 digits, resized and split (stratified, fixed seed). Needs no download."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    pixels = (bunch.images / 16.0).astype(np.float32)  # values 0..16 in the original
    index = np.arange(len(pixels))
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    images = adapt_images(to_image_tensor(pixels, what="digits"), channels=channels, size=size)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return DataSplits(
        train=ImageDataset(images[train_idx], labels[train_idx], name="digits/train"),
        test=ImageDataset(images[test_idx], labels[test_idx], name="digits/test"),
        name=DIGITS,
        class_names=[str(d) for d in range(10)],
        augment="crop",  # a mirrored digit is another glyph (or none)
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as exc:  # noqa: BLE001 - any failure to parse the user's file (BadZipFile, EOFError, zlib.error, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not a readable .npz file ({type(exc).__name__}: {first})") from None


def load_npz_folder(
    folder: str | os.PathLike, *, channels: int | None = None, size: int | None = None
) -> DataSplits:
    """A folder holding ``train.npz`` and ``test.npz``, each with ``images`` (N x H x W x C) and ``labels``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such data folder")
    splits: dict[str, ImageDataset] = {}
    class_names: list[str] = []
    for split in ("train", "test"):
        path = folder / f"{split}.npz"
        if not path.is_file():
            raise InputError(f"{folder}: missing {split}.npz (a data folder holds train.npz and test.npz)")
        arrays = _read_npz(path)
        for key in ("images", "labels"):
            if key not in arrays:
                raise InputError(f"{path}: no '{key}' array (found {sorted(arrays)})")
        if len(arrays["images"]) == 0:
            raise InputError(f"{path}: holds no images")
        images = adapt_images(to_image_tensor(arrays["images"], what=str(path)), channels=channels, size=size)
        splits[split] = ImageDataset(images, labels_tensor(arrays["labels"], what=str(path)), name=f"{folder.name}/{split}")
        if "class_names" in arrays:
            class_names = [str(c) for c in arrays["class_names"]]
    return DataSplits(splits["train"], splits["test"], name=str(folder), class_names=class_names)


def medmnist_root() -> Path:
    """Where MedMNIST files are looked for: ``$MEDMNIST_ROOT``, else ``~/.medmnist`` (the medmnist package's default)."""
    return Path(os.environ.get("MEDMNIST_ROOT", Path.home() / ".medmnist"))


def load_medmnist(
    flag: str,
    *,
    size: int | None = None,
    root: str | os.PathLike | None = None,
    channels: int | None = None,
    resize: int | None = None,
) -> DataSplits:
    """A MedMNIST data set from the ``.npz`` file the medmnist package stores (``{flag}.npz`` or ``{flag}_{size}.npz``).

    The file holds ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images`` and
    ``test_labels``; labels are N x 1. Validation images are added to the training split. Nothing is downloaded:
    place the file in ``root`` (default :func:`medmnist_root`).
    """
    root = Path(root) if root is not None else medmnist_root()
    filename = f"{flag}.npz" if size in (None, 28) else f"{flag}_{size}.npz"
    path = root / filename
    if not path.is_file():
        raise InputError(f"MedMNIST file {path} not found (modelprint never downloads: put {filename} there or set MEDMNIST_ROOT)")
    arrays = _read_npz(path)
    needed = [f"{s}_{k}" for s in ("train", "test") for k in ("images", "labels")]
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise InputError(f"{path}: not a MedMNIST file, missing {missing}")
    if arrays["train_labels"].ndim == 2 and arrays["train_labels"].shape[1] > 1:
        raise InputError(f"{path}: multi-label MedMNIST sets are not supported (labels have {arrays['train_labels'].shape[1]} columns)")

    def split(*names: str) -> ImageDataset:
        images = torch.cat([to_image_tensor(arrays[f"{n}_images"], what=f"{path}:{n}") for n in names])
        labels = torch.cat([labels_tensor(arrays[f"{n}_labels"], what=f"{path}:{n}") for n in names])
        return ImageDataset(adapt_images(images, channels=channels, size=resize), labels, name=f"{flag}/{'+'.join(names)}")

    train_names = ("train", "val") if "val_images" in arrays else ("train",)
    return DataSplits(split(*train_names), split("test"), name=f"{MEDMNIST_PREFIX}{flag}")


def _medmnist_spec(spec: str) -> tuple[str, int | None]:
    """``"medmnist:FLAG@SIZE"`` -> (FLAG, SIZE or None)."""
    flag, _, file_size = spec[len(MEDMNIST_PREFIX):].partition("@")
    if not flag:
        raise InputError(f"{spec!r}: expected medmnist:FLAG or medmnist:FLAG@SIZE")
    try:
        size = int(file_size) if file_size else None
    except ValueError:
        raise InputError(f"{spec!r}: the size after '@' must be a number") from None
    if size is not None and size < 1:
        raise InputError(f"{spec!r}: the size after '@' must be >= 1")
    return flag, size


def _npz_names(path: Path) -> list[str]:
    """The arrays an ``.npz`` file holds, from its zip directory (no array is read)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception as exc:  # noqa: BLE001 - any failure to parse the user's file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not a readable .npz file ({type(exc).__name__}: {first})") from None
