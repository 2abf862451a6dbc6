"""Image data sets as tensors: the embedded digits default, ``.npz`` folders and MedMNIST files.

Every loader returns images as float tensors in [0, 1] with shape N x C x H x W, so that the models (which hold
their own normalisation) and the fingerprint schemes all see the same convention.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

DIGITS = "digits"
MEDMNIST_PREFIX = "medmnist:"


@dataclass
class ImageDataset:
    """Images and their labels, held in memory.

    Attributes:
        images: float32 tensor N x C x H x W with values in [0, 1].
        labels: int64 class indices (classification) or float32 values (regression).
        name: where the data came from, for records.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""

    def __post_init__(self) -> None:
        check_images(self.images, what=f"images of {self.name or 'data set'}")
        if len(self.labels) != len(self.images):
            raise InputError(f"{self.name or 'data set'}: {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> "ImageDataset":
        index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, images=self.images[index], labels=self.labels[index])

    @property
    def is_regression(self) -> bool:
        return self.labels.is_floating_point()

    @property
    def num_classes(self) -> int | None:
        return None if self.is_regression else int(self.labels.max()) + 1

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])


@dataclass
class DataSplits:
    """A train and a test split of one data set, with what is known about it.

    Attributes:
        train, test: the splits.
        name: the spec the splits were loaded from.
        class_names: names of the classes, when the data set has them.
        augment: the augmentation that suits these images ("crop,flip" for natural images, "crop" where a mirror
            image changes the meaning, as for digits).
    """

    train: ImageDataset
    test: ImageDataset
    name: str
    class_names: list[str] = field(default_factory=list)
    augment: str = "crop,flip"

    @property
    def num_classes(self) -> int | None:
        if self.train.is_regression:
            return None
        return max(self.train.num_classes or 0, self.test.num_classes or 0, len(self.class_names))


def data_key(spec: str) -> str:
    """A data spec as recipes compare it: a folder or file, by whatever path it is named, is its resolved path; a
    built-in name (``digits``) is itself."""
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


def is_data_spec(spec: str) -> bool:
    """Whether ``spec`` names a data set :func:`load_data` can read (without reading it)."""
    return spec == DIGITS or spec.startswith(MEDMNIST_PREFIX) or (Path(spec) / "train.npz").is_file()


def same_recipe(stored: Any, wanted: Any) -> bool:
    """Whether a model's stored recipe is ``wanted``, a data folder named by any path (``../shared/data/x`` and
    ``/work/shared/data/x`` are one folder, so one recipe): the recipe's ``data`` and, at any depth, a transform's
    ``transfer`` data."""
    return _paths_resolved(stored) == _paths_resolved(wanted)


def _paths_resolved(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: data_key(v) if k in ("data", "transfer") and isinstance(v, str) else _paths_resolved(v) for k, v in value.items()}


def same_label_pairs(data: ImageDataset, *, seed: int = 0) -> tuple[ImageDataset, torch.Tensor]:
    """Pair every image with another image of the same label (identity), drawn with ``seed``; images whose label no
    other image has are left out.

    Returns:
        The images that have a partner (labels kept) and their partners' images, row-aligned.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = data.labels.long()
    keep, partners = [], []
    for i in range(len(labels)):
        others = torch.nonzero((labels == labels[i]) & (torch.arange(len(labels)) != i)).flatten()
        if len(others):
            keep.append(i)
            partners.append(int(others[torch.randint(len(others), (1,), generator=generator)]))
    if not keep:
        raise InputError(f"{data.name or 'data set'}: no two images share a label, so no pairs can be made")
    return data.subset(keep), data.images[torch.tensor(partners)]


def check_images(images: torch.Tensor, *, what: str = "images") -> None:
    """Raise :class:`InputError` unless ``images`` is a finite float tensor N x C x H x W with values in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{what}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise InputError(f"{what}: expected shape N x C x H x W, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"{what}: expected float values in [0, 1], got dtype {images.dtype}")
    if images.numel() and not torch.isfinite(images).all():
        raise InputError(f"{what}: contains NaN or infinite pixel values")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise InputError(
            f"{what}: pixel values must lie in [0, 1], found [{images.min().item():.3g}, {images.max().item():.3g}]"
        )


def to_image_tensor(array: np.ndarray, *, what: str = "images") -> torch.Tensor:
    """Turn N x H x W (x C) pixels (uint8 0-255, or float in [0, 1]) into a float tensor N x C x H x W."""
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise InputError(f"{what}: expected N x H x W x C pixels, got shape {array.shape}")
    if array.dtype == np.uint8:
        images = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif np.issubdtype(array.dtype, np.floating):
        images = torch.from_numpy(array.astype(np.float32))
    else:
        raise InputError(f"{what}: expected uint8 or float pixels, got dtype {array.dtype}")
    images = images.permute(0, 3, 1, 2).contiguous()
    check_images(images, what=what)
    return images


def adapt_images(images: torch.Tensor, *, channels: int | None = None, size: int | None = None) -> torch.Tensor:
    """Expand grayscale images to ``channels`` and resize to ``size`` x ``size`` (bilinear, antialiased)."""
    if channels is not None and channels != images.shape[1]:
        if images.shape[1] != 1:
            raise InputError(f"images have {images.shape[1]} channels, {channels} are expected (only grayscale is expanded)")
        images = images.expand(-1, channels, -1, -1).contiguous()
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp(0, 1)
    return images


def _labels_tensor(labels: np.ndarray, *, what: str) -> torch.Tensor:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(f"{what}: expected one label per image, got label shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.integer):
        if labels.size and labels.min() < 0:
            raise InputError(f"{what}: class labels must be >= 0, found {labels.min()}")
        return torch.from_numpy(labels.astype(np.int64))
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all():
            raise InputError(f"{what}: contains NaN or infinite labels")
        return torch.from_numpy(labels.astype(np.float32))
    raise InputError(f"{what}: labels must be integers (classes) or floats (values), got dtype {labels.dtype}")


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
        splits[split] = ImageDataset(images, _labels_tensor(arrays["labels"], what=str(path)), name=f"{folder.name}/{split}")
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
        labels = torch.cat([_labels_tensor(arrays[f"{n}_labels"], what=f"{path}:{n}") for n in names])
        return ImageDataset(adapt_images(images, channels=channels, size=resize), labels, name=f"{flag}/{'+'.join(names)}")

    train_names = ("train", "val") if "val_images" in arrays else ("train",)
    return DataSplits(split(*train_names), split("test"), name=f"{MEDMNIST_PREFIX}{flag}")


def load_data(spec: str, *, channels: int | None = 3, size: int | None = None) -> DataSplits:
    """Load a data set by spec.

    Args:
        spec: ``"digits"`` (the embedded default), a folder with ``train.npz``/``test.npz``, or
            ``"medmnist:FLAG"`` / ``"medmnist:FLAG@SIZE"`` (e.g. ``medmnist:dermamnist@64``).
        channels: number of channels the images are brought to (grayscale is expanded); None keeps them.
        size: side length the images are resized to; None keeps them (digits default to 32).

    Returns:
        The train and test splits.
    """
    spec = check_data_spec(spec, "data", channels=channels, size=size)
    if spec == DIGITS:
        return load_digits(size=size or 32, channels=channels or 3)
    if spec.startswith(MEDMNIST_PREFIX):
        flag, file_size = _medmnist_spec(spec)
        return load_medmnist(flag, size=file_size, channels=channels, resize=size)
    return load_npz_folder(spec, channels=channels, size=size)


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


def check_data_spec(spec: Any, what: str = "--data", *, channels: Any = None, size: Any = None) -> str:
    """The cheap checks of a data spec, before anything is read or trained: its type, the MedMNIST spec's form,
    a data folder that can be listed with ``train.npz`` and ``test.npz`` readable files, and ``channels``/``size``.

    Args:
        spec: the data spec (a str or a path).
        what: how the caller named it.
        channels, size: the channels and side the images are to be brought to (None: kept).

    Returns:
        The spec as a string.

    Raises:
        InputError: naming what is wrong.
    """
    from . import checks

    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec:
        raise InputError(f"{what} must be a data spec ('digits', a folder or medmnist:FLAG), got {spec!r}")
    for value, name in ((channels, "channels"), (size, "size")):
        if value is not None:
            checks.number(value, name, minimum=1, integer=True)
    if spec == DIGITS:
        return spec
    if spec.startswith(MEDMNIST_PREFIX):
        _medmnist_spec(spec)
        return spec
    checks.path_argument(spec, what)
    if not Path(spec).exists():
        raise InputError(f"{spec}: no such data folder ('digits', a folder with train.npz/test.npz, or medmnist:FLAG)")
    folder = checks.input_folder(spec, what)
    for split in ("train", "test"):
        if not (folder / f"{split}.npz").exists():
            raise InputError(f"{folder}: missing {split}.npz (a data folder holds train.npz and test.npz)")
        path = checks.input_file(folder / f"{split}.npz", what)
        names = _npz_names(path)
        missing = [key for key in ("images", "labels") if key not in names]
        if missing:
            raise InputError(f"{path}: no '{missing[0]}' array (found {sorted(names)})")
    return spec


def _npz_names(path: Path) -> list[str]:
    """The arrays an ``.npz`` file holds, from its zip directory (no array is read)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception as exc:  # noqa: BLE001 - any failure to parse the user's file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: not a readable .npz file ({type(exc).__name__}: {first})") from None
