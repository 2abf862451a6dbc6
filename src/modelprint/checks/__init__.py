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

from ..errors import InputError


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


def path_argument(value: Any, what: str) -> Path:
    """``value`` as a :class:`~pathlib.Path`, refusing what is not a path (None, a number, an empty string).

    Args:
        value: what was given for a file or folder.
        what: how the caller named it (``--out``, ``path``, ...).

    Returns:
        The path.

    Raises:
        InputError: not a ``str`` or ``os.PathLike``, empty, or holding a NUL character.
    """
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise InputError(f"{what} must be a file path (str or os.PathLike), got {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise InputError(f"{what} {text!r}: not a usable path")
    try:
        os.stat(text)  # a name too long, a loop of links, a folder it may not enter: one line, not an OSError later
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InputError(f"{what} {text[:120]}{'...' if len(text) > 120 else ''}: cannot be reached ({reason})") from None
    return Path(text)


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _probe(folder: Path, path: Path, what: str, *, make_folder: bool) -> None:
    """Create and remove a temporary file (or folder) in the existing ``folder``: the only sure test that something
    can be written there (permissions, read-only file systems, /proc, a root user for whom ``os.access`` says yes)."""
    import tempfile

    try:
        if make_folder:
            os.rmdir(tempfile.mkdtemp(prefix=".modelprint-probe-", dir=folder))
        else:
            handle, name = tempfile.mkstemp(prefix=".modelprint-probe-", dir=folder)
            os.close(handle)
            os.unlink(name)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write in {folder} ({exc.strerror or type(exc).__name__})") from None


def _creatable(path: Path, what: str) -> None:
    """``path`` can be made: its nearest existing ancestor is a folder in which a probe file (or, when folders
    must be made first, a probe folder) can be created, and no part of the name is too long."""
    path = path.absolute()
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"{what} {path}: {ancestor} is a file, not a folder")
            longest = max((len(os.fsencode(part)) for part in path.relative_to(ancestor).parts), default=0)
            if longest > _name_max(ancestor):
                raise InputError(f"{what} {path}: a name in it is longer than the file system allows ({longest} bytes)")
            _probe(ancestor, path, what, make_folder=ancestor != path.parent)
            return


def output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Raise unless a file can be written at ``path`` (not a folder; its folder exists or can be made), checked by
    writing a probe file beside it, before any work.

    Args:
        path: the file to be written.
        what: how the user named it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: not a path, a folder, an existing file that cannot be opened for writing, or a folder where
            nothing can be written.
    """
    path = path_argument(path, what)
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder; give a file name")
    if path.exists():
        if not path.is_file():
            raise InputError(f"{what} {path}: exists and is not a regular file")
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise InputError(f"{what} {path}: the file exists and cannot be written ({exc.strerror or type(exc).__name__})") from None
    _creatable(path, what)
    return path


def output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Raise unless ``path`` is a folder in which files can be written, or can be made as one (probed by writing).

    Args:
        path: the folder.
        what: how the user named it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: not a path, a file, or a place where nothing can be written.
    """
    path = path_argument(path, what)
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{what} {path}: is a file, not a folder")
        _probe(path, path, what, make_folder=False)
        return path
    _creatable(path, what)
    return path


def input_file(path: str | os.PathLike, what: str, kind: str = "file") -> Path:
    """Raise unless ``path`` is a regular file that can be opened and read (checked by reading its first byte).

    Args:
        path: the file.
        what: how the user named it.
        kind: what the file is, for the message when it is missing ("model file", ...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: not a path, missing, a folder or device, or unreadable.
    """
    path = path_argument(path, what)
    if not path.exists():
        raise InputError(f"{what} {path}: no such {kind}")
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder, not a file")
    if not path.is_file():
        raise InputError(f"{what} {path}: not a regular file")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    return path


def input_folder(path: str | os.PathLike, what: str) -> Path:
    """Raise unless ``path`` is a folder whose entries can be listed.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: not a path, missing, a file, or unreadable.
    """
    path = path_argument(path, what)
    if not path.is_dir():
        raise InputError(f"{what} {path}: {'is a file, not a folder' if path.exists() else 'no such folder'}")
    try:
        os.listdir(path)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    return path


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a UTF-8 file the user named, failing in one line (missing, unreadable, binary).

    Raises:
        InputError: naming the file and what is wrong.
    """
    path = input_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path}: not a UTF-8 text file (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot be read ({exc.strerror or type(exc).__name__})") from None



def setting_types(settings: Any) -> None:
    """Raise unless every field of a settings dataclass holds a value of its annotated type and shape.

    Scalars (``int``, ``float``, ``str``, ``bool``, optionally ``| None``) are checked exactly, numbers finite
    (``bool`` is not a number here); tuples (``tuple[tuple[int, int], ...]``, taken as JSON lists too) element by
    element and by length; a tuple of ``(str, value)`` pairs also takes a mapping. Annotations this check does not
    know (nested settings objects) are left to the class.

    Args:
        settings: a dataclass instance whose annotations are strings (``from __future__ import annotations``).

    Raises:
        InputError: naming the first setting of the wrong type or shape, or a NaN/infinite number.
    """
    from dataclasses import fields

    owner = type(settings).__name__
    for spec in fields(settings):
        if spec.name.startswith("_"):
            continue
        annotation = " ".join(str(spec.type).split())
        value = getattr(settings, spec.name)
        if not fits(value, annotation):
            finite = not isinstance(value, float) or math.isfinite(value)
            problem = f"must be {annotation.replace(' | ', ' or ')}" if finite else "must be a finite number"
            raise InputError(f"{owner}: setting {spec.name} {problem}, got {_shown(value)}")
        if spec.name == "seed" and isinstance(value, int) and not 0 <= value < 2**63:
            raise InputError(f"{owner}: setting seed must lie in [0, 2**63), got {value}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fits(value: Any, annotation: str) -> bool:
    """Whether ``value`` fits a type annotation written as a string (``"float | None"``,
    ``"tuple[tuple[int, int], ...]"``): tuples may be lists, floats must be finite, ``bool`` is no number; a type
    it does not know fits anything.

    Args:
        value: the value given.
        annotation: the field's annotation as text.

    Returns:
        True when it fits.
    """
    alternatives = _split_top(annotation, "|")
    if len(alternatives) > 1:
        return any(fits(value, a) for a in alternatives)
    base, _, inner = annotation.strip().partition("[")
    base = base.strip()
    if base == "None":
        return value is None
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if base == "str":
        return isinstance(value, str)
    if base not in ("tuple", "list", "Sequence"):
        return True  # Any, a mapping, a nested settings object: the class checks it
    args = _split_top(inner[:-1], ",") if inner else []
    if isinstance(value, dict) and len(args) == 2 and args[1] == "..." and args[0].startswith("tuple[str,"):
        value = list(value.items())  # a mapping given for (name, value) pairs
    if not isinstance(value, (list, tuple)):
        return False
    if not args or (len(args) == 2 and args[1] == "..."):
        return not args or all(fits(v, args[0]) for v in value)
    return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))


def _split_top(text: str, separator: str) -> list[str]:
    """Split ``text`` at ``separator`` outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in parts + [current]]


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
