"""Checks of a fingerprint set's content against what its scheme reads, each failing with one line.

A set is checked in two steps. Its *layout* (tensor names, dtypes and shapes) is read from a file's header before
any tensor is materialised; its *values* (finite, in range, labels that exist, settings of the right types, a known
task) once the tensors are loaded. The generic checks live here and in :class:`~.base.FingerprintScheme`; a scheme
adds its own by overriding ``check_layout`` and ``validate``. Every failure is an :class:`IntegrityError` whose
message says what is wrong (the caller prefixes the file).
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ..checks import fits
from ..errors import IntegrityError
from ..checks.models import Layout, header_layout as _header_layout
from ..tasks import TASKS, Task, task_from_config

if TYPE_CHECKING:
    from .base import FingerprintSet

#: The parts of a set's metadata and their JSON types.
META_TYPES = {"scheme": str, "config": dict, "task": dict, "thresholds": dict, "target": dict, "stats": dict}


def layout_of(tensors: Mapping[str, torch.Tensor]) -> Layout:
    """The layout of tensors in memory."""
    return {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}


def header_layout(handle: Any) -> Layout:
    """The layout (name -> dtype, shape) a safetensors file declares, from an open ``safe_open`` handle, without
    reading any tensor.

    Raises:
        IntegrityError: a tensor of a dtype modelprint never writes.
    """
    return _header_layout(handle, "", error=IntegrityError)


def check_meta(meta: Any) -> dict[str, Any]:
    """The metadata of a set (the parsed JSON): an object with known parts of the right JSON types.

    Returns:
        The metadata, ready for ``FingerprintSet(**meta)``.
    """
    if not isinstance(meta, dict):
        raise IntegrityError("the set's metadata is not a JSON object")
    unknown = sorted(set(meta) - set(META_TYPES))
    if unknown:
        raise IntegrityError(f"the set's metadata has unknown parts: {', '.join(unknown)}")
    for key in ("scheme", "config", "task"):
        if key not in meta:
            raise IntegrityError(f"the set's metadata has no {key!r}")
    for key, kind in META_TYPES.items():
        if key in meta and not isinstance(meta[key], kind):
            raise IntegrityError(f"the set's {key!r} must be a JSON {kind.__name__}, got {type(meta[key]).__name__}")
    return meta


def require(
    layout: Layout,
    name: str,
    *,
    kind: str,
    ndim: int | None = None,
    rows: int | None = None,
    shape: tuple[int, ...] | None = None,
    why: str = "",
) -> tuple[int, ...]:
    """Check one tensor of a layout; returns its shape.

    Args:
        layout: the set's layout.
        name: the tensor.
        kind: ``"float"``, ``"integer"`` or ``"number"`` (float or integer, not bool).
        ndim: its number of dimensions.
        rows: its length along the first dimension.
        shape: its exact shape.
        why: what reads it, for the message when it is missing.
    """
    if name not in layout:
        raise IntegrityError(f"the set has no {name!r} tensor" + (f" ({why})" if why else ""))
    dtype, found = layout[name]
    floating = dtype.is_floating_point
    integer = not floating and dtype != torch.bool and not dtype.is_complex
    if (kind == "float" and not floating) or (kind == "integer" and not integer) or (kind == "number" and not (floating or integer)):
        raise IntegrityError(f"tensor {name!r} must hold {kind} values, got dtype {str(dtype).replace('torch.', '')}")
    if ndim is not None and len(found) != ndim:
        raise IntegrityError(f"tensor {name!r} must have {ndim} dimension(s), got shape {list(found)}")
    if rows is not None and (not found or found[0] != rows):
        raise IntegrityError(f"tensor {name!r} must have {rows} rows (one per sample), got shape {list(found)}")
    if shape is not None and found != shape:
        raise IntegrityError(f"tensor {name!r} must have shape {list(shape)}, got {list(found)}")
    return found


#: The kind of a set's labels per task, as every scheme's generation writes them: classes (integers); values
#: (floats: a regression label or the target's first output); similarity: identities (saliency) or the target's first
#: output (TAFA, MetaV).
LABEL_KINDS = {"classification": "integer", "regression": "float", "similarity": "number"}


def check_common_layout(layout: Layout, task_name: str) -> int:
    """Samples N x C x H x W (float, N >= 1) and N labels of the task's kind (:data:`LABEL_KINDS`); returns N."""
    shape = require(layout, "samples", kind="float", ndim=4, why="the fingerprint images")
    if min(shape) < 1:
        raise IntegrityError(f"tensor 'samples' must be N x C x H x W with every size >= 1, got shape {list(shape)}")
    n = shape[0]
    kind = LABEL_KINDS.get(task_name, "number")
    if "labels" in layout and kind == "float" and not layout["labels"][0].is_floating_point:
        raise IntegrityError(f"tensor 'labels' holds integers, but a {task_name} set's labels are float values (integers are a classifier's classes)")
    require(layout, "labels", kind=kind, ndim=1, rows=n, why="one label per sample")
    return n


def check_scheme_task(scheme: str, tasks: tuple[str, ...], task_name: str) -> None:
    """The set's task is one its scheme protects (a set relabelled for another task is refused)."""
    if task_name not in tasks:
        raise IntegrityError(f"the set's task is {task_name!r}, but the {scheme} scheme protects {' and '.join(tasks)} models only")


#: A weights' SHA-256 as :func:`~modelprint.models.state_sha256` writes it.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_target(target: Mapping[str, Any], samples: tuple[int, ...], task_name: str, *, required: bool = False) -> None:
    """The target identity a set records (:func:`~.base.target_identity`) is one a model could have: a well-formed
    SHA-256; for a modelprint model a known architecture with arguments it takes, the input size and channels of
    the samples, the set's task, and outputs that task reads (a classifier 2 or more classes, a regressor one value).

    It cannot say that the named weights exist: ``verify --target FILE`` confirms the hash against a model file.

    Args:
        target: the set's ``target``.
        samples: the samples' shape, N x C x H x W.
        task_name: the set's task.
        required: the SHA-256 must be there (a set read from a file: every writer records it).
    """
    digest = target.get("sha256")
    if (digest is not None or required) and not (isinstance(digest, str) and SHA256_HEX.fullmatch(digest)):
        raise IntegrityError(f"the set's target SHA-256 {digest!r} is not a SHA-256 digest (64 lowercase hex digits)")
    recorded = target.get("task")
    if recorded is not None and recorded != task_name:
        raise IntegrityError(f"the set's task is {task_name!r}, but its target is a {recorded!r} model")
    if "arch" not in target and "arch_kwargs" not in target:
        return  # a model of another library: only its hash is recorded
    from ..architectures import architecture, is_architecture, known_names
    from ..errors import InputError
    from ..checks.models import check_spec_values
    from ..models import ModelSpec

    arch, kwargs, size = target.get("arch"), target.get("arch_kwargs"), target.get("input_size", list(samples[2:]))
    if not is_architecture(arch):
        raise IntegrityError(f"the set's target architecture {arch!r} is not one modelprint knows ({known_names()})")
    if not isinstance(size, list) or [*size] != [*samples[2:]]:
        raise IntegrityError(f"the set's target takes {size!r} images, but the samples are {samples[2]}x{samples[3]}")
    spec = ModelSpec(arch=arch, arch_kwargs=kwargs, task=task_name, input_size=tuple(size), channels=samples[1],  # type: ignore[arg-type]
                     mean=(0.5,) * samples[1], std=(0.25,) * samples[1])
    try:
        check_spec_values(spec, architecture(arch), "the set's target")
    except InputError as exc:
        raise IntegrityError(str(exc)) from None
    outputs = num_classes(target)
    if outputs is not None and ((task_name == "classification" and outputs < 2) or (task_name == "regression" and outputs != 1)):
        raise IntegrityError(f"the set's target has {outputs} output(s), which a {task_name} model never has "
                             f"({'2 or more classes' if task_name == 'classification' else 'one value'})")


def check_images(tensor: torch.Tensor, name: str) -> None:
    """Finite pixel values in [0, 1]."""
    values = tensor.float()
    if not torch.isfinite(values).all():
        raise IntegrityError(f"tensor {name!r} holds NaN or infinite pixel values")
    if values.min() < 0 or values.max() > 1:
        raise IntegrityError(f"tensor {name!r} has pixel values outside [0, 1] ([{values.min().item():.3g}, {values.max().item():.3g}])")


def check_finite(tensor: torch.Tensor, name: str, *, low: float | None = None, high: float | None = None) -> None:
    """Finite values, within [low, high] when given."""
    values = tensor.double()
    if not torch.isfinite(values).all():
        raise IntegrityError(f"tensor {name!r} holds NaN or infinite values")
    if values.numel() and ((low is not None and values.min() < low) or (high is not None and values.max() > high)):
        span = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        raise IntegrityError(f"tensor {name!r} has values outside {span} ([{values.min().item():.4g}, {values.max().item():.4g}])")


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None) -> float:
    """A finite JSON number (not a bool) within [low, high] when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise IntegrityError(f"{name} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise IntegrityError(f"{name} must lie in [{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}], got {value!r}")
    return float(value)


def check_task(config: Mapping[str, Any]) -> Task:
    """A known task with valid settings; returns its adapter."""
    name = config.get("name")
    if name not in TASKS:
        raise IntegrityError(f"the set's task {name!r} is not one of {', '.join(sorted(TASKS))}")
    tolerance = config.get("tolerance")
    if tolerance is not None:
        check_number(tolerance, "the task's tolerance", low=0.0)
    try:
        return task_from_config(dict(config))
    except (TypeError, ValueError) as exc:
        raise IntegrityError(f"the set's task {name!r} has invalid settings ({exc})") from None


def num_classes(target: Mapping[str, Any]) -> int | None:
    """The target's number of outputs, when the set recorded it (a modelprint model's ``arch_kwargs``)."""
    kwargs = target.get("arch_kwargs")
    value = kwargs.get("num_outputs") if isinstance(kwargs, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise IntegrityError(f"the set's target records num_outputs {value!r}; expected an integer >= 1")
    return value


def check_labels(fingerprints: "FingerprintSet", task: Task) -> None:
    """Finite labels; for classification, class indices the target has."""
    labels = fingerprints.labels
    if labels.is_floating_point():
        check_finite(labels, "labels")
    if task.name == "classification" and labels.numel():
        classes = num_classes(fingerprints.target)
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or (classes is not None and high >= classes):
            bound = f"[0, {classes})" if classes is not None else "[0, classes)"
            raise IntegrityError(f"tensor 'labels' holds classes {low}..{high}; the target's classes are {bound}")


def check_settings(cls: type, config: Mapping[str, Any]) -> None:
    """Each setting of a scheme (a dataclass) in ``config`` has the JSON type its field declares."""
    declared = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
    for name, value in config.items():
        if name in declared and not matches(value, declared[name]):
            raise IntegrityError(f"setting {name}={value!r} is not of type {declared[name]}")


def matches(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a type annotation written as a string (``"float | None"``,
    ``"tuple[tuple[int, int], ...]"``, ``"Any"``); tuples are JSON lists, floats must be finite, a mapping must be a
    JSON object (:func:`modelprint.checks.fits`, which the settings given to a scheme pass too)."""
    if annotation.strip().partition("[")[0].strip() in ("dict", "Mapping"):
        return isinstance(value, dict)
    return fits(value, annotation)


