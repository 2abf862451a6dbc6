"""Image data held as tensors: :class:`ImageDataset`, :class:`DataSplits` and the checks and conversions of pixels.

Every loader returns images as float tensors in [0, 1] with shape N x C x H x W, so that the models (which hold
their own normalisation) and the fingerprint schemes all see the same convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError


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


def labels_tensor(labels: np.ndarray, *, what: str) -> torch.Tensor:
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
