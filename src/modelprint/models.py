"""The model wrapper that owns normalisation, and safetensors model files (architectures: :mod:`.architectures`).

A model file is a safetensors file: the weights as tensors, and in its metadata a JSON :class:`ModelSpec` (the
architecture, its arguments, the preprocessing and the task) from which :func:`load_model` rebuilds the network.
Loading never unpickles anything.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .architectures import ONNX, ONNX_RUNTIME, architecture, is_architecture
from .architectures.onnx_graph import register_skeleton, reset_weights, skeleton_bytes
from .errors import InputError
from .integrity.hashing import tensors_sha256
from .checks.models import check_finite_weights, check_spec_values, compare_layout, header_layout

MODEL_META_KEY = "modelprint.model"
#: Metadata key of an ONNX architecture's weightless graph (base64), in the files of models imported from ONNX.
ONNX_GRAPH_KEY = "modelprint.onnx_graph"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# The wrapper that every scheme sees
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and feed it: stored as JSON in the model file.

    Attributes:
        arch: an architecture name (:func:`~modelprint.architectures.architecture`: ``resnet18``, ``timm:NAME``, ...).
        arch_kwargs: the architecture's keyword arguments (num_outputs, in_channels, width, ...).
        task: ``"classification"``, ``"regression"`` or ``"similarity"``.
        input_size: (H, W) the model expects.
        channels: image channels the model expects.
        mean, std: per-channel normalisation applied inside the model to inputs in [0, 1].
        output_shift, output_scale: the network's output is mapped to ``output * output_scale + output_shift``
            (a regressor learns standardised values and answers in the label's units, years say).
        info: free-form provenance (data set, seed, test metric, transform, parent hash, ...).
        answers: the post-processor a deployed classifier applies to its answers (:mod:`modelprint.answers`: its
            ``kind`` and settings; its tensors are among the weights), or None.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    task: str = "classification"
    input_size: tuple[int, int] = (32, 32)
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    output_shift: float = 0.0
    output_scale: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Any] | None = None

    @property
    def num_outputs(self) -> int:
        return int(self.arch_kwargs.get("num_outputs", 0))

    def to_json(self) -> str:
        fields = asdict(self)
        if fields["answers"] is None:
            del fields["answers"]  # a model without a post-processor has the spec it had before they existed
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        raw = json.loads(text)
        raw["input_size"] = tuple(raw["input_size"])
        raw["mean"], raw["std"] = tuple(raw["mean"]), tuple(raw["std"])
        return cls(**raw)


class ImageModel(nn.Module):
    """A network and its preprocessing: takes images in [0, 1], normalises them, returns the network's output.

    Schemes only ever see this convention (inputs in [0, 1]), so perturbation budgets mean the same for every model.

    Args:
        net: the network.
        spec: how it was built; ``spec.mean``/``spec.std`` are applied in :meth:`forward`.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))
        self.answers: nn.Module | None = None
        if spec.answers is not None:
            from .answers import build_answers

            if spec.task != "classification":
                raise InputError(f"an answer post-processor needs a classifier, not a {spec.task} model")
            self.answers = build_answers(spec.answers, spec.num_outputs, (spec.channels, *spec.input_size))

    @property
    def cam_layer(self) -> str | None:
        """Name of the Grad-CAM layer the architecture declares (relative to this wrapper), if any."""
        name = getattr(self.net, "cam_layer", None)
        return f"net.{name}" if name else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net((x - self.mean) / self.std)
        if self.spec.output_scale != 1.0 or self.spec.output_shift != 0.0:
            out = out * self.spec.output_scale + self.spec.output_shift
        if self.answers is not None:
            out = self.answers(x, out)
        return out


def build_model(
    arch: str,
    *,
    num_outputs: int,
    channels: int = 3,
    input_size: int | tuple[int, int] = 32,
    width: int | None = None,
    task: str = "classification",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    output_shift: float = 0.0,
    output_scale: float = 1.0,
    info: dict[str, Any] | None = None,
) -> ImageModel:
    """Build a freshly initialised :class:`ImageModel` (seed torch beforehand for a reproducible init).

    Args:
        arch: ``resnet18``, ``vgg11_bn``, ``mobilefacenet``, ``timm:NAME`` or ``torchvision:NAME``.
        num_outputs: classes, output values or embedding dimension.
        channels: input channels.
        input_size: input side (or (H, W)).
        width: the architecture's width parameter (its default when None).
        task: the task the model is trained for.
        mean, std: normalisation; by default 0.5 / 0.25 per channel.
        output_shift, output_scale: the output's affine map (see :class:`ModelSpec`).
        info: provenance stored in the model file.
    """
    builder = architecture(arch)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    kwargs: dict[str, Any] = {"num_outputs": int(num_outputs), "in_channels": int(channels)}
    if width is not None:
        kwargs["width"] = int(width)
    if arch == "mobilefacenet":
        kwargs["input_size"] = int(size[0])
    spec = ModelSpec(
        arch=arch,
        arch_kwargs=kwargs,
        task=task,
        input_size=size,  # type: ignore[arg-type]
        channels=int(channels),
        mean=tuple(mean) if mean is not None else (0.5,) * channels,
        std=tuple(std) if std is not None else (0.25,) * channels,
        output_shift=float(output_shift),
        output_scale=float(output_scale),
        info=dict(info or {}),
    )
    check_spec_values(spec, builder, "build_model")  # one line for a width of 0, say, not a torch error
    return ImageModel(builder(**kwargs), spec)


def clone_model(model: ImageModel) -> ImageModel:
    """A deep copy with its own parameters and an independent spec."""
    spec = ModelSpec.from_json(model.spec.to_json())
    copy = ImageModel(architecture(spec.arch)(**spec.arch_kwargs), spec)
    copy.load_state_dict(model.state_dict())
    return copy.to(device_of(model))


def fresh_like(model: ImageModel) -> ImageModel:
    """A newly initialised model of the same architecture and preprocessing (initialised from torch's global RNG;
    an ONNX graph's constants are kept and every module with ``reset_parameters`` is initialised afresh)."""
    spec = ModelSpec.from_json(model.spec.to_json())
    spec.info, spec.answers = {}, None
    if spec.arch == ONNX_RUNTIME:
        raise InputError("a model run by ONNX Runtime cannot be initialised afresh or trained (import a graph torch can convert)")
    if spec.arch == ONNX:
        return ImageModel(reset_weights(clone_model(model).net), spec).to(device_of(model))
    return ImageModel(architecture(spec.arch)(**spec.arch_kwargs), spec).to(device_of(model))


def with_answers(model: ImageModel, answers: nn.Module, settings: dict[str, Any]) -> ImageModel:
    """A copy of ``model`` that answers through ``answers`` (a post-processor of :mod:`modelprint.answers` with its
    tensors filled; ``settings`` its kind and settings, as the spec records them), with a copy of its network."""
    plain = clone_model(without_answers(model))
    spec = ModelSpec.from_json(plain.spec.to_json())
    spec.answers = dict(settings)
    marked = ImageModel(plain.net, spec)
    marked.answers.load_state_dict(answers.state_dict())  # type: ignore[union-attr]
    return marked.to(device_of(model))


def without_answers(model: ImageModel) -> ImageModel:
    """``model``'s network without its answer post-processor: what a thief who takes the weights has (``model``
    itself when it has none)."""
    if model.spec.answers is None:
        return model
    copy = clone_model(model)
    copy.answers, copy.spec.answers = None, None
    if "sha256" in copy.spec.info:  # the identity of these weights, not of the model with its post-processor
        copy.spec.info["sha256"] = state_sha256(copy)
    return copy


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of the parameters and buffers (names, dtypes, shapes and bytes): the identity of a model's weights."""
    return tensors_sha256(model.state_dict())


def save_model(model: ImageModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as a safetensors file with its :class:`ModelSpec` in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {MODEL_META_KEY: model.spec.to_json(), "format_version": str(FORMAT_VERSION)}
    if model.spec.arch == ONNX:
        graph = skeleton_bytes(str(model.spec.arch_kwargs.get("graph_sha256")))
        if graph is None:
            raise InputError("the model's ONNX graph is not known to this process (import or load it first)")
        metadata[ONNX_GRAPH_KEY] = base64.b64encode(graph).decode("ascii")
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # a crash mid-write never leaves a half-written model file under the real name
    return path


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """The :class:`ModelSpec` of a model file, without loading the weights."""
    return _read_metadata(path)[0]


def _read_metadata(path: str | os.PathLike) -> tuple[ModelSpec, dict[str, str]]:
    """A model file's spec and its whole metadata (nothing else is read)."""
    from .checks import path_argument

    path = path_argument(path, "model file")
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a safetensors model file ({exc})") from None
    if MODEL_META_KEY not in metadata:
        raise InputError(f"{path}: a safetensors file, but not a modelprint model file (no '{MODEL_META_KEY}' metadata)")
    try:
        return ModelSpec.from_json(metadata[MODEL_META_KEY]), metadata
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path}: unreadable model metadata ({exc})") from None


def _register_onnx_graph(spec: ModelSpec, metadata: dict[str, str], where: str) -> None:
    """Make the ONNX graph a model file carries known to this process; it must be the one its spec names."""
    try:
        digest = register_skeleton(base64.b64decode(metadata.get(ONNX_GRAPH_KEY, ""), validate=True))
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: its ONNX graph ('{ONNX_GRAPH_KEY}' metadata) is not base64") from None
    wanted = spec.arch_kwargs.get("graph_sha256") if isinstance(spec.arch_kwargs, dict) else None
    if ONNX_GRAPH_KEY not in metadata or digest != wanted:
        raise InputError(f"{where}: its spec names ONNX graph {str(wanted)[:12]}..., but the file "
                         + ("holds none" if ONNX_GRAPH_KEY not in metadata else f"holds {digest[:12]}..."))


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> ImageModel:
    """Rebuild a model written by :func:`save_model`, in eval mode.

    Args:
        path: the model file.
        device: where to put it.

    Returns:
        The model; its ``spec.info["sha256"]`` holds :func:`state_sha256` of the loaded weights.

    The file is checked before anything is built: the architecture's arguments (types and ranges), then the
    tensors it implies (computed on the ``meta`` device, allocating nothing) against the names, shapes and dtypes
    the file's header declares; then the weights are read and must be finite.

    Raises:
        InputError: a missing or foreign file, an unknown architecture, invalid arguments, weights that do not fit
            it, or NaN/infinite weights.
    """
    spec, metadata = _read_metadata(path)
    if not is_architecture(spec.arch):
        raise InputError(f"{path}: unknown architecture {spec.arch!r}")
    what = f"{spec.arch} {spec.arch_kwargs}" if spec.arch != ONNX else "of its ONNX graph"
    builder = architecture(spec.arch)
    check_spec_values(spec, builder, str(path))
    if spec.arch == ONNX:
        _register_onnx_graph(spec, metadata, str(path))
    try:
        # The architecture's tensors, without allocating them (a converted ONNX graph is built on the CPU: its
        # converter makes tensors of its own).
        with torch.device("meta") if spec.arch != ONNX else contextlib.nullcontext():
            model = ImageModel(builder(**spec.arch_kwargs), spec)
        with safe_open(str(path), framework="pt") as handle:
            stored = header_layout(handle, str(path))
        compare_layout({k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}, stored, str(path), what)
        state = load_file(str(path))
        check_finite_weights(state, str(path))
        model.load_state_dict(state, strict=True, assign=True)  # the loaded tensors become the parameters
    except (RuntimeError, TypeError, ValueError, OverflowError, SafetensorError, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{path}: weights do not fit architecture {what}: {first}") from None
    model.spec.info["sha256"] = state_sha256(model)
    return model.to(device).eval()


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")
