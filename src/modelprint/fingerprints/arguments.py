"""The types of the arguments of every scheme's entry points, checked once for all schemes.

Every fingerprint or watermark scheme class has its ``generate``, ``verify`` and ``embed`` wrapped when it is
defined (:func:`guard`, called by :class:`~.base.Scheme`), so that a Python list given for labels, a bare
``nn.Module`` given where an access object (``WhiteBox``/``BlackBox``) is expected, or None for a fingerprint set
is an :class:`~modelprint.errors.InputError` that names the argument, never an ``AttributeError`` from deep inside.
Values (ranges, shapes, finiteness) stay with the schemes' own checks.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping

import torch

from ..access import Access
from ..data import ImageDataset
from ..errors import InputError
from ..tasks import Task
from .sets import FingerprintSet

Check = Callable[[Any], str | None]


def _kind(value: Any) -> str:
    return type(value).__name__


def _tensor(value: Any) -> str | None:
    return None if isinstance(value, torch.Tensor) else f"a torch.Tensor, got {_kind(value)}"


def _optional_tensor(value: Any) -> str | None:
    return None if value is None else _tensor(value)


def _module(value: Any) -> str | None:
    return None if isinstance(value, torch.nn.Module) else f"a torch.nn.Module, got {_kind(value)}"


def _modules(value: Any) -> str | None:
    if isinstance(value, (str, bytes, torch.Tensor, torch.nn.Module)) or not hasattr(value, "__iter__"):
        return f"a sequence of torch.nn.Module, got {_kind(value)}"
    wrong = [_kind(v) for v in value if not isinstance(v, torch.nn.Module)]
    return f"a sequence of torch.nn.Module, got one of {wrong[0]}" if wrong else None


def _task(value: Any) -> str | None:
    return None if value is None or isinstance(value, Task) else f"a Task (modelprint.tasks) or None, got {_kind(value)}"


def _access(value: Any) -> str | None:
    if isinstance(value, Access):
        return None
    hint = " (wrap a model as WhiteBox(model), an API as BlackBox(function))" if isinstance(value, torch.nn.Module) or callable(value) else ""
    return f"an access object, WhiteBox or BlackBox, got {_kind(value)}{hint}"


def _set(value: Any) -> str | None:
    return None if isinstance(value, FingerprintSet) else f"a FingerprintSet (or WatermarkKey), got {_kind(value)}"


def _dataset(value: Any) -> str | None:
    return None if isinstance(value, ImageDataset) else f"an ImageDataset (e.g. load_data(...).train), got {_kind(value)}"


def _optional_count(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return f"a whole number >= 1 or None, got {value!r}"


#: Per entry point, the check of each argument by name.
RULES: Mapping[str, Mapping[str, Check]] = {
    "generate": {"model": _module, "images": _tensor, "labels": _tensor, "task": _task, "pairs": _optional_tensor,
                 "references": _modules, "surrogates": _modules, "calibration": _modules},
    "verify": {"access": _access, "fingerprints": _set, "key": _set},
    "embed": {"host": _module, "data": _dataset, "epochs": _optional_count},
}


def guard(cls: type) -> None:
    """Wrap the entry points ``cls`` defines itself (not inherited, not abstract) with the checks of :data:`RULES`.

    Args:
        cls: a scheme class, as it is being defined.
    """
    for method, rules in RULES.items():
        function = cls.__dict__.get(method)
        if not callable(function) or getattr(function, "__isabstractmethod__", False) or hasattr(function, "__guarded__"):
            continue
        setattr(cls, method, _guarded(function, rules, f"{cls.__name__}.{method}"))


def _guarded(function: Callable[..., Any], rules: Mapping[str, Check], where: str) -> Callable[..., Any]:
    signature = inspect.signature(function)

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InputError(f"{where}: {exc}") from None
        for name, value in bound.arguments.items():
            rule = rules.get(name)
            problem = rule(value) if rule is not None else None
            if problem is not None:
                raise InputError(f"{where}: {name} must be {problem}")
        return function(*args, **kwargs)

    checked.__guarded__ = True  # type: ignore[attr-defined]
    return checked
