"""Owners' models into modelprint model files: timm or torchvision weights, and ONNX files.

:func:`import_model` returns an :class:`~modelprint.models.ImageModel` whose spec names where its architecture comes
from (``timm:NAME``, ``torchvision:NAME``, ``onnx`` or ``onnxruntime``), so that every command can rebuild a fresh
copy of it; :func:`~modelprint.models.save_model` writes it. Weights are read without unpickling code: safetensors
files, or PyTorch files read with ``torch.load(weights_only=True)``, which refuses any object but tensors and plain
containers. Every failure is one :class:`~modelprint.errors.InputError` line.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .architectures import ONNX, ONNX_RUNTIME, architecture
from .architectures.hub import HUBS, HubArchitecture
from .errors import InputError
from .integrity.hashing import file_sha256
from .checks.models import check_finite_weights, check_spec_values, compare_layout
from .models import ImageModel, ModelSpec, state_sha256

#: Keys under which training scripts commonly nest the state dict in a checkpoint.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")
#: Largest difference allowed between a converted ONNX graph's outputs and ONNX Runtime's, relative to their scale.
CONVERSION_TOLERANCE = 1e-4


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a safetensors file, or a PyTorch file read with ``weights_only=True``.

    A checkpoint that nests the state dict (under ``state_dict``, ``model``, ...) is unwrapped, and a ``module.``
    prefix (DataParallel) removed.

    Raises:
        InputError: a missing or unreadable file, one that holds anything but tensors (a pickled payload is refused
            without running it), or a modelprint model file (already imported).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    from .checks import input_file
    from .models import MODEL_META_KEY

    path = input_file(path, "weights")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                if MODEL_META_KEY in (handle.metadata() or {}):
                    raise InputError(f"{path}: already a modelprint model file (nothing to import)")
            state: Any = load_file(str(path))
        except InputError:
            raise
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    else:
        with open(path, "rb") as handle:
            magic = handle.read(2)
        if not zipfile.is_zipfile(path) and magic[:1] != b"\x80":  # neither torch.save's zip format nor a pickle
            raise InputError(f"{path}: not a PyTorch weights file (torch.save writes a zip archive) nor a safetensors file")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" not in str(exc).lower():  # not a pickle at all
                raise InputError(f"{path}: not a readable PyTorch weights file (UnpicklingError: {_first_line(exc)[:120]})") from None
            raise InputError(f"{path}: holds objects other than tensors, refused without running them (torch.load with "
                             "weights_only=True); save the state dict (model.state_dict()) instead") from None
        except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, ImportError) as exc:
            raise InputError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {_first_line(exc)[:200]})") from None
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = next((state[k] for k in NESTED_KEYS if isinstance(state.get(k), dict)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, dict) or not state:
        raise InputError(f"{path}: expected a state dict (names -> tensors), found {type(state).__name__}")
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise InputError(f"{path}: entry {bad!r} is a {type(state[bad]).__name__}, not a tensor (expected a state dict)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _head_outputs(net: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """The number of outputs of a classifier's last linear layer, read from the weights (None when not found)."""
    last = None
    for name, module in net.named_modules():  # in order of definition: the head is defined last
        if isinstance(module, nn.Linear):
            last = name
    weight = state.get(f"{last}.weight") if last is not None else None
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _sides(input_size: int | Sequence[int] | None, where: str) -> tuple[int, int]:
    if input_size is None:
        raise InputError(f"{where}: give the input size the model takes (--input-size, e.g. 224)")
    sides = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(sides) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sides):
        raise InputError(f"{where}: the input size must be a whole number >= 1 (or two), got {input_size!r}")
    return sides  # type: ignore[return-value]


def _normalisation(values: Sequence[float] | None, channels: int, name: str, where: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise InputError(f"{where}: --{name} needs one number per channel ({channels}) or one for all, got {len(values)}")
    return values


def import_model(
    source: str | os.PathLike,
    *,
    arch: str | None = None,
    input_size: int | Sequence[int] | None = None,
    num_classes: int | None = None,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    runtime: str = "torch",
) -> ImageModel:
    """An owner's model as a modelprint model (save it with :func:`~modelprint.models.save_model`).

    Args:
        source: a weights file (``.safetensors``, or a PyTorch ``.pt``/``.pth`` state dict) of ``arch``, or an
            ONNX file (``.onnx``, ``arch`` then None or ``onnx``).
        arch: ``timm:NAME`` or ``torchvision:NAME``.
        input_size: side (or (H, W)) of the images the model takes; an ONNX graph with a fixed size gives its own.
        num_classes: the classifier's outputs [default: read from the weights' last linear layer].
        channels: image channels.
        mean, std: the normalisation the model expects of images in [0, 1] [default for timm/torchvision: the
            library's (ImageNet's); an ONNX file needs them given: 0 and 1 when the graph normalises itself].
        class_names: one name per class (an API's top-k answer names classes by them).
        runtime: for an ONNX file, ``torch`` (convert: white-box and black-box) or ``onnxruntime`` (run as it is:
            black-box only).

    Returns:
        The model in eval mode; ``spec.info`` records the source file's name and SHA-256 and the class names.

    Raises:
        InputError: weights that do not fit the architecture, a missing input size, an ONNX graph torch cannot
            convert (with ``runtime="torch"``), a file that is not what it claims.
    """
    from .checks import input_file

    path = input_file(source, "model to import")
    where = str(path)
    if runtime not in ("torch", ONNX_RUNTIME):
        raise InputError(f"runtime must be 'torch' or 'onnxruntime', got {runtime!r}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise InputError(f"{where}: channels must be a whole number >= 1, got {channels!r}")
    is_onnx = path.suffix.lower() == ".onnx"
    if is_onnx and arch not in (None, ONNX, ONNX_RUNTIME):
        raise InputError(f"{where}: an ONNX file carries its own architecture; leave out --arch ({arch})")
    if not is_onnx:
        if arch is None or arch.partition(":")[0] not in HUBS:
            given = f" ({arch!r} is neither)" if arch is not None else ""
            raise InputError(f"{where}: name the architecture the weights are for: --arch timm:NAME or --arch torchvision:NAME{given}")
    info: dict[str, Any] = {"imported_from": path.name, "source_sha256": file_sha256(path)}
    if is_onnx:
        net, spec = _onnx(path, input_size=input_size, channels=channels, mean=mean, std=std, runtime=runtime)
    else:
        net, spec = _hub(path, arch, input_size=input_size, num_classes=num_classes, channels=channels, mean=mean, std=std)  # type: ignore[arg-type]
    if class_names is not None:
        names = [str(c) for c in class_names]
        if len(names) != spec.num_outputs or len(set(names)) != len(names):
            raise InputError(f"{where}: {len(names)} class names (distinct: {len(set(names))}) for {spec.num_outputs} classes")
        info["class_names"] = names
    spec.info.update(info)
    model = ImageModel(net, spec).eval()
    _check_forward(model, where)
    model.spec.info["sha256"] = state_sha256(model)
    return model


def _hub(path: Path, arch: str, *, input_size: Any, num_classes: int | None, channels: int, mean: Any, std: Any) -> tuple[nn.Module, ModelSpec]:
    where = str(path)
    sides = _sides(input_size, where)
    state = read_state_dict(path)
    builder = architecture(arch)
    assert isinstance(builder, HubArchitecture)
    if num_classes is None:
        with torch.device("meta"):
            probe = builder(num_outputs=1000, in_channels=channels)
        num_classes = _head_outputs(probe, state)
        if num_classes is None:
            raise InputError(f"{where}: the number of classes cannot be read from the weights; give --num-classes")
    default_mean, default_std = builder.default_normalisation()
    mean = _normalisation(mean, channels, "mean", where) or (default_mean if channels == 3 else (0.5,) * channels)
    std = _normalisation(std, channels, "std", where) or (default_std if channels == 3 else (0.25,) * channels)
    spec = ModelSpec(arch=arch, arch_kwargs={"num_outputs": int(num_classes), "in_channels": channels}, input_size=sides,
                     channels=channels, mean=mean, std=std)
    check_spec_values(spec, builder, where)
    with torch.device("meta"):
        expected = {k: (v.dtype, tuple(v.shape)) for k, v in builder(**spec.arch_kwargs).state_dict().items()}
    for name, (dtype, shape) in expected.items():  # a counter some exporters leave out
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = torch.zeros(shape, dtype=dtype)
    compare_layout(expected, {k: (v.dtype, tuple(v.shape)) for k, v in state.items()}, where, f"{arch} with {num_classes} classes")
    check_finite_weights(state, where)
    net = builder(**spec.arch_kwargs)
    net.load_state_dict(state, strict=True)
    return net, spec


def _onnx(path: Path, *, input_size: Any, channels: int, mean: Any, std: Any, runtime: str) -> tuple[nn.Module, ModelSpec]:
    from .architectures.onnx_graph import convert, fold_identities, onnx_modules, register_skeleton, skeleton
    from .architectures.onnx_runtime import runtime_session

    where = str(path)
    onnx, _ = onnx_modules()
    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf and the checker raise many types for a damaged file
        raise InputError(f"{where}: not a valid ONNX model ({type(exc).__name__}: {_first_line(exc)[:200]})") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InputError(f"{where}: the graph takes {len(inputs)} inputs; an image classifier takes one (N x C x H x W)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise InputError(f"{where}: the graph's input has {len(dims)} dimensions; an image classifier takes N x C x H x W")
    if dims[1] is not None and dims[1] != channels:
        channels = dims[1]
    if input_size is None and dims[2] and dims[3]:
        input_size = (dims[2], dims[3])
    sides = _sides(input_size, where)
    if dims[2] and dims[3] and (dims[2], dims[3]) != sides:
        raise InputError(f"{where}: the graph takes {dims[2]}x{dims[3]} images, not {sides[0]}x{sides[1]}")
    if mean is None or std is None:
        raise InputError(f"{where}: give the normalisation the graph expects of images in [0, 1]: --mean and --std "
                         "(e.g. 0.485,0.456,0.406 and 0.229,0.224,0.225 for ImageNet; 0 and 1 when the graph normalises itself)")
    mean, std = _normalisation(mean, channels, "mean", where), _normalisation(std, channels, "std", where)
    session = runtime_session(data, where)
    probe = torch.rand(2, channels, *sides, generator=torch.Generator().manual_seed(0))
    reference = _run(session, (probe - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1), where)
    if reference.ndim != 2:
        raise InputError(f"{where}: the graph answers {tuple(reference.shape)} for a batch of 2; a classifier answers N x classes")
    num_outputs = int(reference.shape[1])
    if runtime == ONNX_RUNTIME:
        kwargs: dict[str, Any] = {"num_outputs": num_outputs, "in_channels": channels, "size_bytes": len(data)}
        net = architecture(ONNX_RUNTIME)(**kwargs)
        net.load_state_dict({"graph": torch.frombuffer(bytearray(data), dtype=torch.uint8)})
        return net, ModelSpec(arch=ONNX_RUNTIME, arch_kwargs=kwargs, input_size=sides, channels=channels, mean=mean, std=std)
    fold_identities(model)
    converted = convert(model, where)
    kwargs = {"num_outputs": num_outputs, "in_channels": channels, "graph_sha256": register_skeleton(skeleton(model))}
    net = architecture(ONNX)(**kwargs)  # rebuilt from the skeleton, as a model file is loaded
    try:
        net.load_state_dict(converted.state_dict(), strict=True)
    except RuntimeError as exc:
        raise InputError(f"{where}: the converted graph cannot be rebuilt from its weightless form ({_first_line(exc)[:200]}); "
                         "import it with --runtime onnxruntime (black-box only)") from None
    net.eval()
    with torch.no_grad():
        mine = net((probe - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1))
    difference = float((mine - reference).abs().max())
    if not difference <= CONVERSION_TOLERANCE * max(1.0, float(reference.abs().max())):
        raise InputError(f"{where}: the converted graph answers up to {difference:.3g} away from ONNX Runtime; "
                         "import it with --runtime onnxruntime (black-box only)")
    spec = ModelSpec(arch=ONNX, arch_kwargs=kwargs, input_size=sides, channels=channels, mean=mean, std=std,
                     info={"conversion_max_difference": difference})
    return net, spec


def _run(session: Any, x: torch.Tensor, where: str) -> torch.Tensor:
    import numpy as np

    try:
        out = session.run(None, {session.get_inputs()[0].name: x.numpy().astype(np.float32)})[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        raise InputError(f"{where}: ONNX Runtime cannot run the graph on {tuple(x.shape)} images ({_first_line(exc)[:200]})") from None
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


def _check_forward(model: ImageModel, where: str) -> None:
    """One forward pass on two images of the model's size: a classifier's N x classes finite outputs, or one line."""
    x = torch.rand(2, model.spec.channels, *model.spec.input_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        size = "x".join(map(str, model.spec.input_size))
        raise InputError(f"{where}: the model fails on {size} images with {model.spec.channels} channels ({_first_line(exc)[:200]})") from None
    if out.shape != (2, model.spec.num_outputs) or not bool(torch.isfinite(out).all()):
        raise InputError(f"{where}: the model answers {tuple(out.shape)} (finite: {bool(torch.isfinite(out).all())}) for 2 images, "
                         f"not 2 x {model.spec.num_outputs} finite scores")
