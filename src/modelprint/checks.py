"""Checks of arguments that every entry point runs before any work: numbers, devices and output paths.

Each check raises :class:`~modelprint.errors.InputError` with one line that names the argument, so that the CLI
ends with that line and exit code 2, and a script gets the project's own exception, never a traceback from deep
inside training. The CLI calls the path and device checks first, before it loads data or trains anything: a run
must not train for minutes only to find that it cannot write its result.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import InputError


def number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    integer: bool = False,
) -> None:
    """Raise unless ``value`` is a finite number in range.

    Args:
        value: what was given.
        name: how the user named it (``--lr``, ``xi``, ...).
        minimum, maximum: inclusive bounds.
        above, below: exclusive bounds.
        integer: the value must be a whole number (``bool`` is never accepted as a number).

    Raises:
        InputError: not a number, NaN or infinite, or out of range.
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InputError(f"{name} must be {'a whole number' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    bounds = [
        (minimum is not None and value < minimum, f">= {minimum}"),
        (maximum is not None and value > maximum, f"<= {maximum}"),
        (above is not None and value <= above, f"> {above}"),
        (below is not None and value >= below, f"< {below}"),
    ]
    for failed, rule in bounds:
        if failed:
            raise InputError(f"{name} must be {rule}, got {value}")


def device(name: str) -> None:
    """Raise unless ``name`` is a torch device that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    try:
        parsed = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"--device {name!r}: not a device name ({str(exc).splitlines()[0]})") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"--device {name}: this machine has no CUDA device (use --device cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise InputError(f"--device {name}: this machine has {count} CUDA device(s), numbered from 0")
        return
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
        return
    raise InputError(f"--device {name}: modelprint runs on cpu, cuda or mps")


def _creatable(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` is a writable folder (so ``path``'s folders can be made)."""
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"{what} {path}: {ancestor} is a file, not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise InputError(f"{what} {path}: cannot write in {ancestor}")
            return


def output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Raise unless a file can be written at ``path`` (not a folder; its folder exists or can be made).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{what} {path}: the file exists and cannot be written")
    _creatable(path, what)
    return path


def output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Raise unless ``path`` is a folder, or can be made as one.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{what} {path}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{what} {path}: cannot write in this folder")
        return path
    _creatable(path, what)
    return path


_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def setting_types(settings: Any) -> None:
    """Raise unless every field of a settings dataclass holds a value of its annotated scalar type.

    Fields annotated ``int``, ``float``, ``str`` or ``bool`` (optionally ``| None``) are checked; numbers must be
    finite (``bool`` is not a number here). Other annotations (tuples, nested settings) are left to the class.

    Args:
        settings: a dataclass instance whose annotations are strings (``from __future__ import annotations``).

    Raises:
        InputError: naming the first setting of the wrong type or a NaN/infinite number.
    """
    from dataclasses import fields

    owner = type(settings).__name__
    for spec in fields(settings):
        annotation = str(spec.type).replace(" ", "")
        optional = annotation.endswith("|None")
        kinds = _SCALARS.get(annotation.removesuffix("|None"))
        value = getattr(settings, spec.name)
        if kinds is None or (optional and value is None):
            continue
        numeric = kinds[0] in (int, float)
        if not isinstance(value, kinds) or (numeric and isinstance(value, bool)):
            expected = annotation.replace("|", " or ")
            raise InputError(f"{owner}: setting {spec.name} must be {expected}, got {value!r}")
        if numeric and not math.isfinite(value):
            raise InputError(f"{owner}: setting {spec.name} must be a finite number, got {value}")


def rules(checks: list[tuple[bool, str]]) -> None:
    """Raise the message of the first ``(holds, message)`` pair that does not hold (a settings class's ranges)."""
    for holds, message in checks:
        if not holds:
            raise InputError(message)


def floats_as_floats(settings: Any) -> None:
    """Store whole numbers given for a frozen settings dataclass's ``float`` fields as floats, so that equal settings
    print the same ``repr`` (how an evaluation recognises a set it made)."""
    for name, spec in settings.__dataclass_fields__.items():
        value = getattr(settings, name)
        if spec.type in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(settings, name, float(value))


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["beta=1", "layer=net.layer3"]`` -> ``{"beta": 1, "layer": "net.layer3"}``: a value is read as JSON when it
    parses (numbers, booleans, lists, null), else as a string. The scheme then checks the names
    and types.

    Raises:
        InputError: an assignment without ``=``.
    """
    settings: dict[str, Any] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {text!r}: expected SETTING=VALUE")
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    return settings
