"""Image data sets as tensors: the embedded digits default, ``.npz`` folders, MedMNIST files, and folders of images.

Every loader returns images as float tensors in [0, 1] with shape N x C x H x W, so that the models (which hold
their own normalisation) and the fingerprint schemes all see the same convention. :func:`load_data` takes a data
spec: ``digits``, ``medmnist:FLAG[@SIZE]``, a folder with ``train.npz``/``test.npz`` (:mod:`.arrays`), a folder
of images with one sub-folder per class or a CSV of ``path,value`` rows (:mod:`.folders`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from .folders import is_image_folder, is_values_csv, load_image_folder, read_values_csv, scan_image_folder
from .arrays import DIGITS, MEDMNIST_PREFIX, _medmnist_spec, _npz_names, load_digits, load_medmnist, load_npz_folder, medmnist_root
from .sets import DataSplits, ImageDataset, adapt_images, check_images, labels_tensor, same_label_pairs, to_image_tensor

__all__ = ["DIGITS", "MEDMNIST_PREFIX", "DataSplits", "ImageDataset", "adapt_images", "check_data_spec", "check_images",
           "data_key", "is_data_spec", "labels_tensor", "load_data", "load_image_folder", "load_digits", "load_medmnist", "load_npz_folder",
           "medmnist_root", "same_label_pairs", "same_recipe", "to_image_tensor"]


def data_key(spec: str) -> str:
    """A data spec as recipes compare it: a folder or file, by whatever path it is named, is its resolved path; a
    built-in name (``digits``) is itself."""
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


def is_data_spec(spec: str) -> bool:
    """Whether ``spec`` names a data set :func:`load_data` can read (without reading it)."""
    return (spec == DIGITS or spec.startswith(MEDMNIST_PREFIX) or (Path(spec) / "train.npz").is_file()
            or is_values_csv(spec) or is_image_folder(spec))


def same_recipe(stored: Any, wanted: Any) -> bool:
    """Whether a model's stored recipe is ``wanted``, a data folder named by any path (``../shared/data/x`` and
    ``/work/shared/data/x`` are one folder, so one recipe): the recipe's ``data`` and, at any depth, a transform's
    ``transfer`` data."""
    return _paths_resolved(stored) == _paths_resolved(wanted)


def _paths_resolved(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: data_key(v) if k in ("data", "transfer") and isinstance(v, str) else _paths_resolved(v) for k, v in value.items()}


def load_data(spec: str, *, channels: int | None = 3, size: int | None = None) -> DataSplits:
    """Load a data set by spec.

    Args:
        spec: ``"digits"`` (the embedded default), a folder with ``train.npz``/``test.npz``, a folder with one
            sub-folder of images per class (or ``train/`` and ``test/`` holding them), a CSV of ``path,value`` rows, or
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
    if is_values_csv(spec) or not (Path(spec) / "train.npz").exists() and is_image_folder(spec):
        return load_image_folder(spec, channels=channels, size=size)
    return load_npz_folder(spec, channels=channels, size=size)


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
    from .. import checks

    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec:
        raise InputError(f"{what} must be a data spec ('digits', a folder, a CSV file or medmnist:FLAG), got {spec!r}")
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
        raise InputError(f"{spec}: no such data folder ('digits', a folder with train.npz/test.npz or class folders of images, "
                         "a CSV of path,value rows, or medmnist:FLAG)")
    if is_values_csv(spec):
        read_values_csv(checks.input_file(spec, what))
        return spec
    folder = checks.input_folder(spec, what)
    if not (folder / "train.npz").exists() and is_image_folder(spec):
        if channels is not None and channels not in (1, 3):
            raise InputError(f"{spec}: images are read as 1 (grayscale) or 3 (RGB) channels, not {channels}")
        scan_image_folder(folder)
        return spec
    for split in ("train", "test"):
        if not (folder / f"{split}.npz").exists():
            raise InputError(f"{folder}: missing {split}.npz (a data folder holds train.npz and test.npz, or one sub-folder of images per class)")
        path = checks.input_file(folder / f"{split}.npz", what)
        names = _npz_names(path)
        missing = [key for key in ("images", "labels") if key not in names]
        if missing:
            raise InputError(f"{path}: no '{missing[0]}' array (found {sorted(names)})")
    return spec
