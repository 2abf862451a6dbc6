"""Inference requests read without trusting them: scanned before they are parsed, checked field by field after.

:func:`scan_json` bounds what :func:`json.loads` would build (nesting, arrays and objects, values, number lengths)
from the raw bytes; :func:`parse_infer_request` then parses and checks the request. Every refusal is a
:class:`~modelprint.serving.limits.BadRequest` *returned*, not raised: no traceback keeps a frame that holds the body,
so a refused body is freed as soon as the parser returns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .limits import MIB, TRIM_AFTER_BYTES, BadRequest, ServerLimits, release_memory

#: Commas allowed beyond the values of the largest batch (names, shape, parameters).
_COMMA_SLACK = 4096
#: Arrays and objects allowed beyond those of the largest batch nested as [N][C][H][W].
_CONTAINER_SLACK = 256
_SCAN_CHUNK = MIB
#: The longest run of digits accepted: no FP32 value needs more (the largest has 39 digits before the point, the
#: smallest written out in full about 50 after it).
MAX_DIGITS = 100
_DIGITS_TO_9 = bytes(ord("9") if ord("0") <= i <= ord("9") else ord(" ") for i in range(256))

_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_SPECIAL = _STEP != 0
_SPECIAL[ord('"')] = True
_QUOTE = ord('"')


@dataclass
class InferRequest:
    """A checked inference request: its id, the images (FP32, N x C x H x W) and the output it asks for."""

    id: str | None
    images: np.ndarray
    output: str | None


def scan_json(body: bytes | bytearray, *, max_depth: int, max_containers: int, max_commas: int) -> str | None:
    """Why a JSON text would cost too much to parse, or None: nesting, arrays and objects, values and number lengths,
    counted unparsed.

    Brackets inside strings are not counted. The scan reads the text as JSON's lexer does wherever the text is valid
    JSON, so it never under-counts what :func:`json.loads` would build before it stops at an error. Runs of more than
    :data:`MAX_DIGITS` digits are refused, in strings too: converting integers of thousands of digits is quadratic,
    and :func:`json.loads` holds the interpreter's lock (and so the server's event loop) while it runs.

    Args:
        body: the JSON text (UTF-8).
        max_depth: the deepest nesting allowed.
        max_containers: the most arrays and objects allowed.
        max_commas: the most commas allowed (a bound on the number of values; commas in strings count too).

    Returns:
        An error message, or None when the text is within the limits.
    """
    commas, opens = _count_bytes(body)
    if commas > max_commas:
        return f"request body holds more values than the largest batch needs ({commas} commas, at most {max_commas})"
    if _longest_digits_above(body, MAX_DIGITS):
        return f"request body holds a number (or a run of digits) longer than {MAX_DIGITS} digits"
    if opens <= max_depth and opens <= max_containers:
        return None  # nothing can nest deeper than the brackets there are
    if b"\\" in body:  # escaped backslashes, then escaped quotes, never end a string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = np.frombuffer(body, dtype=np.uint8)
    depth, in_string, containers = 0, 0, 0
    for start in range(0, len(text), _SCAN_CHUNK):
        chunk = text[start:start + _SCAN_CHUNK]
        kinds = chunk[np.flatnonzero(_SPECIAL[chunk])]
        if kinds.size == 0:
            continue
        quotes = kinds == _QUOTE
        inside = ((np.cumsum(quotes, dtype=np.int64) + in_string) & 1).astype(bool)
        steps = np.where(inside, 0, _STEP[kinds]).astype(np.int64)
        levels = depth + np.cumsum(steps)
        if int(levels.max()) > max_depth:
            return f"request body nests JSON deeper than {max_depth} levels"
        containers += int(np.count_nonzero(steps > 0))
        if containers > max_containers:
            return f"request body holds more than {max_containers} JSON arrays and objects"
        depth, in_string = int(levels[-1]), (in_string + int(quotes.sum())) & 1
    return None


def _count_bytes(body: bytes | bytearray) -> tuple[int, int]:
    """The commas, and the opening brackets and braces, in ``body`` (in 4 MiB pieces: bounded temporary memory)."""
    text, commas, opens = np.frombuffer(body, dtype=np.uint8), 0, 0
    for start in range(0, len(text), 4 * MIB):
        piece = text[start:start + 4 * MIB]
        commas += int(np.count_nonzero(piece == ord(",")))
        opens += int(np.count_nonzero(piece == ord("["))) + int(np.count_nonzero(piece == ord("{")))
    return commas, opens


def _longest_digits_above(body: bytes | bytearray, limit: int) -> bool:
    """Whether ``body`` holds more than ``limit`` digits in a row (read in 4 MiB pieces: no copy of the whole body)."""
    run, piece = b"9" * (limit + 1), 4 * MIB
    for start in range(0, len(body), piece):
        if body[start:start + piece + limit].translate(_DIGITS_TO_9).find(run) >= 0:
            return True
    return False


def parse_infer_request(body: bytes | bytearray, *, input_name: str, input_shape: tuple[int, ...],
                        limits: ServerLimits) -> InferRequest | BadRequest:
    """A checked inference request, or the :class:`BadRequest` saying what is wrong (returned, not raised).

    Args:
        body: the request body (JSON).
        input_name: the model's input name.
        input_shape: the shape of one input, (C, H, W).
        limits: batch size and nesting limits.

    Returns:
        The request, or the error to answer.
    """
    parsed = _parse(body, input_name, input_shape, limits)
    if len(body) >= TRIM_AFTER_BYTES:
        release_memory()
    return parsed


def _parse(body: bytes | bytearray, input_name: str, input_shape: tuple[int, ...],
           limits: ServerLimits) -> InferRequest | BadRequest:
    values = limits.max_batch * math.prod(input_shape)
    containers = 1 + limits.max_batch * (1 + input_shape[0] * (1 + input_shape[1])) + _CONTAINER_SLACK
    problem = scan_json(body, max_depth=limits.max_depth, max_containers=containers, max_commas=values + _COMMA_SLACK)
    if problem is not None:
        return BadRequest(problem)
    try:
        text = body.decode("utf-8-sig")  # a leading byte order mark is ignored, as RFC 8259 allows
    except UnicodeDecodeError:
        return BadRequest("request body is not UTF-8 text")
    try:
        request = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a number of too many digits, nesting
        problem = f"request body is not JSON this server reads ({_clip(str(exc).split(';')[0], 200)})"
    del text
    if problem is not None:
        return BadRequest(problem)
    return _check_request(request, input_name, input_shape, limits.max_batch)


def _check_request(request: Any, input_name: str, input_shape: tuple[int, ...], max_batch: int) -> InferRequest | BadRequest:
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        return BadRequest(f"expected a JSON object with 'inputs': a list of one tensor named {input_name!r}")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict):
        return BadRequest("each input must be an object with name, shape, datatype and data")
    if tensor.get("name") != input_name:
        return BadRequest(f"unexpected input {_show(tensor.get('name'))}; the model's input is {input_name!r}")
    if tensor.get("datatype") != "FP32":
        return BadRequest(f"input datatype must be FP32, got {_show(tensor.get('datatype'))}")
    shape = tensor.get("shape")
    expected = [-1, *input_shape]
    if not (isinstance(shape, list) and len(shape) == len(expected) and all(type(v) is int for v in shape)
            and shape[1:] == expected[1:]):
        return BadRequest(f"input shape must be {expected}, got {_show(shape)}")
    if not 1 <= shape[0] <= max_batch:
        return BadRequest(f"batch size must be 1 to {max_batch}, got {shape[0]}")
    request_id = request.get("id")
    if request_id is not None and not (isinstance(request_id, str) and len(request_id) <= 256 and request_id.isprintable()):
        return BadRequest(f"'id' must be a string of at most 256 printable characters, got {_show(request_id)}")
    outputs, wanted = request.get("outputs"), None
    if outputs is not None:
        if not (isinstance(outputs, list) and len(outputs) == 1 and isinstance(outputs[0], dict)
                and isinstance(outputs[0].get("name"), str)):
            return BadRequest("'outputs' must be a list of one object naming the requested output")
        wanted = outputs[0]["name"]
    images = _numbers(tensor.get("data"), shape)
    if isinstance(images, BadRequest):
        return images
    return InferRequest(request_id, images, wanted)


_JSON_TYPES = {str: "strings", bool: "true/false", type(None): "null", dict: "objects", list: "unevenly nested lists"}


def _numbers(data: Any, shape: list[int]) -> np.ndarray | BadRequest:
    """The data as an FP32 array of ``shape``, or why it is not one: only JSON numbers, finite in FP32."""
    if not isinstance(data, list):
        return BadRequest("input data must be a list of numbers (flat or nested)")
    if not data or type(data[0]) is not list:
        cells: Any = data  # flat, as clients send it: a list within it is caught by the type check below
    else:
        try:
            cells = np.array(data, dtype=object).reshape(-1)  # uneven nesting stays as list cells, caught below
        except ValueError:
            return BadRequest("input data must be a list of numbers (flat or nested) of one shape")
    if len(cells) != math.prod(shape):
        return BadRequest(f"input data has {len(cells)} values, shape {shape} needs {math.prod(shape)}")
    kinds = set(map(type, cells)) - {float, int}
    if kinds:
        return BadRequest("input data must be numbers, found " + ", ".join(sorted(_JSON_TYPES.get(k, k.__name__) for k in kinds)))
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            images = np.asarray(cells, dtype=np.float32).reshape(shape)
    except OverflowError:
        images = None
    if images is None or not np.isfinite(images).all():
        return BadRequest("input data contains NaN, infinite values or values outside FP32's range")
    return images


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: Any) -> str:
    """A short repr of what a client sent (error messages never echo a whole body)."""
    return _clip(repr(value), 80)
