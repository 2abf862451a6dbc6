"""Checks of a model file before anything is built: the declared architecture against the weights' header.

A model file's metadata names an architecture and its arguments; its header lists every tensor's name, dtype and
shape. :func:`check_spec_values` checks the arguments' types and ranges, :func:`compare_layout` compares the tensors
the architecture would have (built on the ``meta`` device, which allocates nothing) with those the header declares,
and :func:`check_finite_weights` refuses NaN or infinite weights. A file that declares a huge network but holds a
few bytes is thus refused before a single parameter is allocated. Each failure is one :class:`InputError` line.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping

import torch

from ..errors import InputError

#: name -> (dtype, shape).
Layout = dict[str, tuple[torch.dtype, tuple[int, ...]]]

#: safetensors dtype codes -> torch dtypes (the ones a model file may hold).
HEADER_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}

#: Architecture arguments that must be whole numbers >= 1.
POSITIVE_INTS = ("num_outputs", "in_channels", "width", "input_size")


def check_spec_values(spec: Any, builder: Callable[..., Any], where: str) -> None:
    """The architecture's arguments and the preprocessing a :class:`~modelprint.models.ModelSpec` declares.

    Args:
        spec: the model spec read from the file.
        builder: the architecture's class (its signature names the arguments it takes).
        where: the file, for messages.
    """
    kwargs = spec.arch_kwargs
    if not isinstance(kwargs, dict):
        raise InputError(f"{where}: arch_kwargs must be a JSON object, got {type(kwargs).__name__}")
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InputError(f"{where}: architecture {spec.arch} takes no argument {', '.join(unknown)} (it takes {', '.join(sorted(accepted))})")
    for name in POSITIVE_INTS:
        if name in kwargs:
            _positive_int(kwargs[name], f"{where}: arch_kwargs {name}")
    channels = _positive_int(spec.channels, f"{where}: channels")
    if kwargs.get("in_channels", channels) != channels:
        raise InputError(f"{where}: channels {channels} but arch_kwargs in_channels {kwargs['in_channels']}")
    size = spec.input_size
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise InputError(f"{where}: input_size must be [height, width], got {size!r}")
    for side in size:
        _positive_int(side, f"{where}: input_size")
    least = int(getattr(builder, "min_input_size", 1))
    if min(size) < least:
        raise InputError(f"{where}: architecture {spec.arch} needs inputs of at least {least}x{least}, got {size[0]}x{size[1]}")
    for name in ("mean", "std"):
        values = getattr(spec, name)
        if not isinstance(values, (tuple, list)) or len(values) != channels:
            raise InputError(f"{where}: {name} must hold one number per channel ({channels}), got {values!r}")
        for value in values:
            _finite(value, f"{where}: {name}")
    if any(v <= 0 for v in spec.std):
        raise InputError(f"{where}: std must be > 0 for every channel, got {list(spec.std)}")
    _finite(spec.output_shift, f"{where}: output_shift")
    if _finite(spec.output_scale, f"{where}: output_scale") == 0:
        raise InputError(f"{where}: output_scale must not be 0")
    if not isinstance(spec.task, str) or not isinstance(spec.info, dict):
        raise InputError(f"{where}: task must be a string and info a JSON object")


def header_layout(handle: Any, where: str, *, error: type[Exception] = InputError) -> Layout:
    """The tensors a safetensors file declares (an open ``safe_open`` handle), without reading any.

    Args:
        handle: the open file.
        where: prefix of messages (the file), or "".
        error: the exception raised for a dtype modelprint never writes.
    """
    layout: Layout = {}
    for name in handle.keys():
        part = handle.get_slice(name)
        code = part.get_dtype()
        if code not in HEADER_DTYPES:
            raise error(f"{where + ': ' if where else ''}tensor {name!r} has dtype {code}, which modelprint never writes")
        layout[name] = (HEADER_DTYPES[code], tuple(int(d) for d in part.get_shape()))
    return layout


def compare_layout(expected: Layout, stored: Layout, where: str, what: str) -> None:
    """Refuse unless the stored tensors are exactly those the architecture has: names, shapes and dtypes.

    Args:
        expected: the architecture's state dict layout (built on the ``meta`` device).
        stored: the file header's layout.
        where: the file, for messages.
        what: the architecture and its arguments, for messages.
    """
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    problem = ""
    if missing:
        problem = f"{len(missing)} of its {len(expected)} tensors are missing ({missing[0]}{', ...' if len(missing) > 1 else ''})"
    elif unexpected:
        problem = f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
    else:
        for name in sorted(expected):
            (want_dtype, want_shape), (dtype, shape) = expected[name], stored[name]
            if want_shape != shape or want_dtype != dtype:
                problem = f"{name} is stored as {_describe(dtype, shape)}, the architecture has {_describe(want_dtype, want_shape)}"
                break
    if problem:
        raise InputError(f"{where}: weights do not fit architecture {what}: {problem}")


def check_finite_weights(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse NaN or infinite values in floating-point weights and buffers."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{where}: weight {name} holds NaN or infinite values; the model cannot be used")


def _describe(dtype: torch.dtype, shape: tuple[int, ...]) -> str:
    return f"{list(shape)} {str(dtype).replace('torch.', '')}"


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)
