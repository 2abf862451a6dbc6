"""Images as owners keep them: a folder with one sub-folder of images per class, or a CSV of ``path,value`` rows.

A class folder holds JPEG, PNG or WebP files in one sub-folder per class (named by the class), either directly or
under ``train/`` and ``test/``; without those, a stratified split of :data:`TEST_FRACTION` is drawn with a fixed
seed. A CSV file lists ``path,value`` rows (a regression set; paths relative to the CSV file; a first row whose value
is not a number is a header), split the same way. Images are decoded with Pillow, converted to RGB (or grayscale for
one channel), their shorter side resized to the model's size and the centre cropped square (the usual evaluation
transform of timm and torchvision).

Decoding is bounded: an image of more than :data:`MAX_IMAGE_PIXELS` pixels is refused before it is decoded, and a
set whose tensors would exceed the memory budget (:func:`memory_budget`) is refused with the figure before any image
is decoded; nothing is streamed (docs/own-model.md).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .sets import DataSplits, ImageDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Share of each class held out as the test split when a folder has no ``train/`` and ``test/``.
TEST_FRACTION = 0.2
SPLIT_SEED = 0
#: Largest image accepted, in pixels (a decompression bomb is refused from its header, before decoding).
MAX_IMAGE_PIXELS = 50_000_000
#: Side images are brought to when no size is asked for and the folder's images differ in size.
DEFAULT_SIDE = 64


def memory_budget() -> int:
    """Most bytes a decoded set may take: ``$MODELPRINT_DATA_BUDGET_MB`` MiB, else half the machine's memory."""
    text = os.environ.get("MODELPRINT_DATA_BUDGET_MB")
    if text:
        try:
            return int(float(text) * 2**20)
        except ValueError:
            raise InputError(f"MODELPRINT_DATA_BUDGET_MB={text!r}: expected a number of MiB") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """Sub-folder name -> its image files, for the sub-folders that hold images."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = _images_in(sub)
        if images:
            classes[sub.name] = images
    return classes


def is_image_folder(spec: str) -> bool:
    """Whether ``spec`` is a folder of class sub-folders of images (directly or under ``train/``)."""
    folder = Path(spec)
    if not folder.is_dir():
        return False
    root = folder / "train" if (folder / "train").is_dir() and (folder / "test").is_dir() else folder
    try:
        return any(any(p.suffix.lower() in IMAGE_SUFFIXES for p in sub.iterdir()) for sub in root.iterdir() if sub.is_dir())
    except OSError:
        return False


def is_values_csv(spec: str) -> bool:
    """Whether ``spec`` is a CSV file (of ``path,value`` rows)."""
    return Path(spec).suffix.lower() == ".csv" and Path(spec).is_file()


def _split(labels: list, *, stratify: bool) -> tuple[list[int], list[int]]:
    """Indices of a seeded train/test split (stratified by label for classes), each class keeping >= 1 training image."""
    rng = np.random.default_rng(SPLIT_SEED)
    groups: dict[object, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label if stratify else 0, []).append(i)
    train, test = [], []
    for members in groups.values():
        order = rng.permutation(members).tolist()
        held = int(round(TEST_FRACTION * len(order))) if len(order) > 1 else 0
        test += order[:held]
        train += order[held:]
    if not test:
        raise InputError(f"too few images to hold out a test split ({len(labels)}); give train/ and test/ sub-folders")
    return sorted(train), sorted(test)


def scan_image_folder(folder: str | os.PathLike) -> tuple[dict[str, tuple[list[Path], list[int]]], list[str]]:
    """The files and labels of each split of a class folder, and the class names (sorted sub-folder names).

    Raises:
        InputError: fewer than two classes, a test class the training split lacks, or an unreadable folder.
    """
    folder = Path(folder)
    try:
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            parts = {split: _class_folders(folder / split) for split in ("train", "test")}
            names = sorted(parts["train"])
            unknown = sorted(set(parts["test"]) - set(names))
            if unknown:
                raise InputError(f"{folder}: test/ has classes that train/ lacks: {', '.join(unknown[:5])}")
            splits = {split: ([p for c in names if c in parts[split] for p in parts[split][c]],
                              [i for i, c in enumerate(names) if c in parts[split] for _ in parts[split][c]]) for split in parts}
        else:
            classes = _class_folders(folder)
            names = sorted(classes)
            if len(names) < 2:
                raise InputError(f"{folder}: {len(names)} class folder(s) with images; a classifier's folder has one sub-folder per class (two or more)")
            files = [p for c in names for p in classes[c]]
            labels = [i for i, c in enumerate(names) for _ in classes[c]]
            train, test = _split(labels, stratify=True)
            splits = {"train": ([files[i] for i in train], [labels[i] for i in train]),
                      "test": ([files[i] for i in test], [labels[i] for i in test])}
    except OSError as exc:
        raise InputError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    if len(names) < 2:
        raise InputError(f"{folder}: {len(names)} class folder(s) with images; a classifier's folder has one sub-folder per class (two or more)")
    for split, (files, _) in splits.items():
        if not files:
            raise InputError(f"{folder}: the {split} split holds no images")
    return splits, names


def read_values_csv(path: str | os.PathLike) -> dict[str, tuple[list[Path], list[float]]]:
    """The files and values of each split of a ``path,value`` CSV file (split with a fixed seed)."""
    path = Path(path)
    files, values = [], []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise InputError(f"{path}: line {number} has {len(row)} fields; expected path,value")
                try:
                    value = float(row[1])
                except ValueError:
                    if number == 1:
                        continue  # a header
                    raise InputError(f"{path}: line {number}: value {row[1]!r} is not a number") from None
                if not math.isfinite(value):
                    raise InputError(f"{path}: line {number}: value {row[1]!r} is not finite")
                image = (path.parent / row[0].strip()).resolve()
                if image.suffix.lower() not in IMAGE_SUFFIXES:
                    raise InputError(f"{path}: line {number}: {row[0]!r} is not a JPEG, PNG or WebP file")
                files.append(image)
                values.append(value)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from None
    if len(files) < 2:
        raise InputError(f"{path}: {len(files)} image row(s); a regression set needs path,value rows")
    train, test = _split(values, stratify=False)
    return {"train": ([files[i] for i in train], [values[i] for i in train]),
            "test": ([files[i] for i in test], [values[i] for i in test])}


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {str(exc)[:160]})") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} an image may have")
    return image


def decode_images(files: list[Path], *, channels: int, size: int, progress: bool = True, what: str = "images") -> torch.Tensor:
    """Decode, resize (shorter side to ``size``, centre crop) and stack images as uint8 N x C x size x size.

    Raises:
        InputError: an unreadable or oversized image.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    mode = "L" if channels == 1 else "RGB"
    if channels not in (1, 3):
        raise InputError(f"{what}: images are read as 1 (grayscale) or 3 (RGB) channels, not {channels}")
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc=f"decoding {what}", disable=not progress or len(files) < 500, leave=False)):
        with _open(path) as image:
            try:
                image.draft(mode, (size, size))  # JPEG: decode at a reduced scale when that suffices
                image = image.convert(mode)
                width, height = image.size
                scale = size / min(width, height)
                resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BILINEAR)
                left, top = (resized.width - size) // 2, (resized.height - size) // 2
                pixels = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot decode the image ({type(exc).__name__}: {str(exc)[:160]})") from None
        out[i] = pixels.reshape(size, size, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _side(files: list[Path], size: int | None) -> int:
    """``size``, or the side all images share (read from their headers), else :data:`DEFAULT_SIDE`."""
    if size is not None:
        return int(size)
    sizes = set()
    for path in files[:2000]:
        with _open(path) as image:
            sizes.add(image.size)
        if len(sizes) > 1:
            return DEFAULT_SIDE
    (width, height), = sizes
    return width if width == height else DEFAULT_SIDE


def load_image_folder(spec: str | os.PathLike, *, channels: int | None = 3, size: int | None = None, progress: bool = True) -> DataSplits:
    """A class folder or a ``path,value`` CSV as train and test splits of float images in [0, 1].

    Args:
        spec: the folder or the CSV file.
        channels: 3 (RGB) or 1 (grayscale) [None: 3].
        size: side of the square images [default: the images' own when they are square and share one, else
            :data:`DEFAULT_SIDE`].
        progress: show a progress bar while decoding (sets of 500 images or more).

    Raises:
        InputError: see :func:`scan_image_folder`, :func:`read_values_csv` and :func:`decode_images`; a set over the
            memory budget (:func:`memory_budget`), with the figure, before any image is decoded.
    """
    channels = 3 if channels is None else int(channels)
    if is_values_csv(str(spec)):
        splits, names = read_values_csv(spec), []
    else:
        splits, names = scan_image_folder(spec)  # type: ignore[assignment]
    side = _side(splits["train"][0], size)
    count = sum(len(files) for files, _ in splits.values())
    needed = count * channels * side * side * (4 + 1)  # the float32 tensors, and the uint8 ones they are made from
    budget = memory_budget()
    if needed > budget:
        raise InputError(f"{spec}: {count:,} images of {channels}x{side}x{side} would take {needed / 2**30:.1f} GiB in memory, more than "
                         f"the budget of {budget / 2**30:.1f} GiB (MODELPRINT_DATA_BUDGET_MB); use fewer or smaller images")
    made = {}
    for split, (files, labels) in splits.items():
        pixels = decode_images(files, channels=channels, size=side, progress=progress, what=f"{Path(spec).name}/{split}")
        target = torch.tensor(labels, dtype=torch.float32 if not names else torch.int64)
        made[split] = ImageDataset(pixels.float().div_(255.0), target, name=f"{Path(spec).name}/{split}")
    return DataSplits(made["train"], made["test"], name=str(spec), class_names=names)
