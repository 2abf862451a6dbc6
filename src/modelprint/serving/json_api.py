"""A client of any JSON-over-HTTP prediction API, by a declared mapping: how an image is sent and where the answer is.

Most APIs a thief would put up (LitServe, BentoML, a hand-written FastAPI app) take an uploaded image or a base64
string and answer a label or a top-k dictionary of class -> probability in a JSON shape of their own.
:class:`ApiMapping` declares that shape (from CLI options or a small YAML/JSON file); :class:`JsonApiClient` is a
prediction function for :class:`~modelprint.access.BlackBox`, with the transport of
:class:`~modelprint.serving.http.HttpPredictor` (retries, rate limit, deadline, answer size cap).

Answers become what the schemes read: full probabilities (N x C), labels (N), or, from a top-k answer, a *partial*
distribution: the named classes get their probability and every class the answer does not name an equal share of
the probability left (``(1 - sum of the named) / (C - k)``, never below 0). The argmax of that vector is the API's
top-1 label; which schemes accept the completed scores is each scheme's ``partial_scores`` (docs/own-model.md).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, RemoteError
from .http import HttpPredictor

SENDS = ("multipart", "base64", "floats")
ANSWERS = ("probabilities", "topk", "label")
FORMATS = ("png", "jpeg")
_NAME_KEYS = ("label", "class", "class_name", "name", "category")
_SCORE_KEYS = ("score", "probability", "prob", "confidence", "p")


@dataclass(frozen=True, kw_only=True)
class ApiMapping:
    """How to ask one JSON-over-HTTP prediction API.

    Attributes:
        path: the URL path requests are POSTed to (``/predict``).
        send: ``multipart`` (an image file upload), ``base64`` (an encoded image in a JSON field) or ``floats``
            (the image as nested lists C x H x W of floats in [0, 1] in a JSON field).
        field: the form field or JSON key that carries the image (a list of them when ``per_request`` > 1).
        image_format: ``png`` (lossless; pixels rounded to 8 bits) or ``jpeg`` (lossy), for multipart and base64.
        per_request: images per request.
        batched: the answer holds a list with one entry per image [default: when ``per_request`` > 1].
        answer: ``probabilities`` (a list of C numbers), ``topk`` (class -> probability, as an object or a list of
            ``{"label": ..., "score": ...}``) or ``label`` (a class name or index).
        answer_path: where the answer is in the JSON, as dotted keys and list indices (``predictions``,
            ``output.0``); empty: the whole answer.
        classes: the class names in output order (what top-k keys and labels name); without them keys must be
            class indices.
        num_classes: the number of classes [default: ``len(classes)``]; needed to complete a top-k answer.
    """

    path: str = "/predict"
    send: str = "multipart"
    field: str = "file"
    image_format: str = "png"
    per_request: int = 1
    batched: bool | None = None
    answer: str = "probabilities"
    answer_path: str = ""
    classes: tuple[str, ...] = ()
    num_classes: int | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("send", self.send, SENDS), ("answer", self.answer, ANSWERS), ("image_format", self.image_format, FORMATS)):
            if value not in allowed:
                raise InputError(f"API mapping: {name} must be one of {', '.join(allowed)}, got {value!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise InputError(f"API mapping: path must start with '/', got {self.path!r}")
        if not isinstance(self.field, str) or not self.field:
            raise InputError(f"API mapping: field must be a non-empty name, got {self.field!r}")
        if isinstance(self.per_request, bool) or not isinstance(self.per_request, int) or not 1 <= self.per_request <= 1024:
            raise InputError(f"API mapping: per_request must be a whole number in [1, 1024], got {self.per_request!r}")
        if not isinstance(self.answer_path, str):
            raise InputError(f"API mapping: answer_path must be a string of dotted keys, got {self.answer_path!r}")
        classes = tuple(self.classes)
        if not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
            raise InputError("API mapping: classes must be distinct non-empty names")
        object.__setattr__(self, "classes", classes)
        count = self.num_classes if self.num_classes is not None else (len(classes) or None)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 2):
            raise InputError(f"API mapping: num_classes must be a whole number >= 2, got {count!r}")
        if classes and count != len(classes):
            raise InputError(f"API mapping: {len(classes)} classes named but num_classes is {count}")
        object.__setattr__(self, "num_classes", count)

    @property
    def is_batched(self) -> bool:
        return self.per_request > 1 if self.batched is None else bool(self.batched)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "API mapping") -> "ApiMapping":
        if not isinstance(raw, dict):
            raise InputError(f"{where}: expected an object of settings, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"{where}: unknown setting(s) {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})")
        raw = dict(raw)
        if "classes" in raw:
            if not isinstance(raw["classes"], (list, tuple)):
                raise InputError(f"{where}: classes must be a list of names")
            raw["classes"] = tuple(str(c) for c in raw["classes"])
        try:
            return cls(**raw)
        except TypeError as exc:
            raise InputError(f"{where}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "ApiMapping":
        """A mapping from a YAML or JSON file of its settings."""
        import yaml

        from ..checks import input_file

        path = input_file(path, "--api")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a YAML or JSON file ({type(exc).__name__})") from None
        return cls.from_dict(raw, str(path))


def encode_image(image: torch.Tensor, image_format: str) -> bytes:
    """One C x H x W image in [0, 1] as PNG or JPEG bytes (8 bits per channel)."""
    from PIL import Image

    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG" if image_format == "png" else "JPEG", quality=95)
    return buffer.getvalue()


class JsonApiClient(HttpPredictor):
    """Asks a JSON-over-HTTP prediction API by an :class:`ApiMapping`.

    Args:
        url: the server's base URL (``http://host:port``); the mapping's path is appended.
        mapping: how images are sent and where the answer is.
        **options: timeout, deadline, max_answer_bytes, retries, backoff, rate_limit, headers, transport (see
            :class:`~modelprint.serving.http.HttpPredictor`).

    Attributes:
        labels_only: the API answers labels (the mapping's answer is ``label``).
        partial: the API names only some classes per answer (``topk``); scores are completed (see the module).
    """

    def __init__(self, url: str, mapping: ApiMapping, **options: Any) -> None:
        if not isinstance(mapping, ApiMapping):
            raise InputError(f"mapping must be an ApiMapping, got {type(mapping).__name__}")
        if mapping.answer == "topk" and mapping.num_classes is None:
            raise InputError("API mapping: a top-k answer needs the classes (or num_classes) to complete the distribution")
        super().__init__(url, **options)
        self.mapping = mapping
        self.labels_only = mapping.answer == "label"
        self.partial = mapping.answer == "topk"

    def _where(self) -> str:
        return f"the API at {self.url}{self.mapping.path}"

    def identity(self) -> dict[str, Any]:
        """What the suspect is, for records and journals: the URL (without credentials) and the mapping."""
        return {"kind": "http", "url": self.url, "api": self.mapping.to_dict()}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The API's answers on ``images`` (N x C x H x W in [0, 1]): N x classes scores, or N labels."""
        answers: list[torch.Tensor] = []
        for start in range(0, len(images), self.mapping.per_request):
            chunk = images[start : start + self.mapping.per_request]
            body = self._call("POST", self.mapping.path, images=len(chunk), **self._request(chunk))
            answers += self._read(body, len(chunk))
        return torch.stack(answers) if answers else torch.empty(0)

    # ------------------------------------------------------------------------------------------------ requests
    def _request(self, chunk: torch.Tensor) -> dict[str, Any]:
        m = self.mapping
        one = len(chunk) == 1 and m.per_request == 1
        if m.send == "floats":
            values = [x.detach().float().cpu().tolist() for x in chunk]
            return {"json": {m.field: values[0] if one else values}}
        encoded = [encode_image(x, m.image_format) for x in chunk]
        if m.send == "base64":
            texts = [base64.b64encode(b).decode("ascii") for b in encoded]
            return {"json": {m.field: texts[0] if one else texts}}
        mime = "image/png" if m.image_format == "png" else "image/jpeg"
        files = [(m.field, (f"image{i}.{m.image_format}", data, mime)) for i, data in enumerate(encoded)]
        return {"files": files}  # bytes: httpx builds the multipart body again for every attempt

    # ------------------------------------------------------------------------------------------------- answers
    def _read(self, body: Any, n: int) -> list[torch.Tensor]:
        value = self._at_path(body)
        if self.mapping.is_batched:
            if not isinstance(value, list) or len(value) != n:
                raise RemoteError(f"{self._where()} answered {len(value) if isinstance(value, list) else 'no list of'} "
                                  f"answers at {self.mapping.answer_path or 'the top'} for {n} images")
            values = value
        elif n == 1:
            values = [value]
        else:
            raise RemoteError(f"{self._where()}: {n} images in one request need a batched answer (set batched)")
        read = {"probabilities": self._probabilities, "topk": self._topk, "label": self._label}[self.mapping.answer]
        return [read(v) for v in values]

    def _at_path(self, body: Any) -> Any:
        value = body
        for part in [p for p in self.mapping.answer_path.split(".") if p]:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
                value = value[int(part)]
            else:
                raise RemoteError(f"{self._where()} answered no {part!r} at {self.mapping.answer_path!r} "
                                  f"(found {type(value).__name__}{': ' + ', '.join(map(str, list(value)[:5])) if isinstance(value, dict) else ''})")
        return value

    def _class_index(self, name: Any) -> int:
        m = self.mapping
        if isinstance(name, str) and name in m.classes:
            return m.classes.index(name)
        if isinstance(name, bool) or not isinstance(name, (int, str)):
            raise RemoteError(f"{self._where()} answered the class {str(name)[:40]!r}, which is no class name or index")
        if isinstance(name, str) and not name.strip().isdigit():
            raise RemoteError(f"{self._where()} answered the class {name[:40]!r}, which the mapping's classes do not name")
        index = int(name)
        if m.num_classes is not None and not 0 <= index < m.num_classes:
            raise RemoteError(f"{self._where()} answered class {index}, outside the {m.num_classes} classes")
        return index

    def _number(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > 3.4e38:
            raise RemoteError(f"{self._where()} answered {str(value)[:40]!r} where a finite number is needed")
        return float(value)

    def _probabilities(self, value: Any) -> torch.Tensor:
        if not isinstance(value, list) or len(value) < 2 or any(isinstance(v, (dict, list, str)) for v in value):
            what = f"a list of {type(value[0]).__name__}" if isinstance(value, list) and value else type(value).__name__
            raise RemoteError(f"{self._where()} answered {what} where a list of class scores is needed")
        if self.mapping.num_classes is not None and len(value) != self.mapping.num_classes:
            raise RemoteError(f"{self._where()} answered {len(value)} scores for {self.mapping.num_classes} classes")
        return torch.tensor([self._number(v) for v in value], dtype=torch.float32)

    def _topk(self, value: Any) -> torch.Tensor:
        pairs: list[tuple[Any, Any]]
        if isinstance(value, dict):
            pairs = list(value.items())
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            pairs = []
            for entry in value:
                name = next((entry[k] for k in _NAME_KEYS if k in entry), None)
                score = next((entry[k] for k in _SCORE_KEYS if k in entry), None)
                if name is None or score is None:
                    raise RemoteError(f"{self._where()} answered a top-k entry without a class and a score: {str(entry)[:80]}")
                pairs.append((name, score))
        else:
            raise RemoteError(f"{self._where()} answered {type(value).__name__} where a top-k dictionary is needed")
        count = int(self.mapping.num_classes)  # type: ignore[arg-type]
        if not pairs or len(pairs) > count:
            raise RemoteError(f"{self._where()} answered {len(pairs)} classes in a top-k answer of {count} classes")
        out = torch.full((count,), float("nan"))
        for name, score in pairs:
            index, p = self._class_index(name), self._number(score)
            if not -1e-6 <= p <= 1 + 1e-6 or not math.isnan(float(out[index])):
                raise RemoteError(f"{self._where()} answered a top-k probability {p!r} for class {name!r} (repeated or outside [0, 1])")
            out[index] = p
        named = ~torch.isnan(out)
        left = max(0.0, 1.0 - float(out[named].sum()))
        if int((~named).sum()):
            out[~named] = left / int((~named).sum())
        return out

    def _label(self, value: Any) -> torch.Tensor:
        if isinstance(value, dict):
            value = next((value[k] for k in _NAME_KEYS if k in value), value)
        return torch.tensor(self._class_index(value), dtype=torch.int64)


def mapping_from_options(api: str | Path | None, **options: Any) -> ApiMapping:
    """A mapping from a file (``api``), with CLI options given (not None) taking precedence over it."""
    raw: dict[str, Any] = ApiMapping.from_file(api).to_dict() if api is not None else {}
    raw.update({k: v for k, v in options.items() if v is not None})
    if isinstance(raw.get("classes"), str):
        raw["classes"] = [c.strip() for c in raw["classes"].split(",") if c.strip()]
    return ApiMapping.from_dict(raw, str(api) if api is not None else "API options")

