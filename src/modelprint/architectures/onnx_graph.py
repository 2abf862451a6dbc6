"""ONNX graphs as architectures: a graph converted to torch modules (onnx2torch), rebuilt from its weightless form.

A model imported from an ONNX file keeps its weights as tensors in the model file like any other; what the file
adds is the graph's *skeleton*: the ONNX graph with the data of its floating-point initializers removed (their
names, types and shapes kept; integer ones, which hold shapes and axes, kept whole). Its SHA-256 names the
architecture (``arch_kwargs["graph_sha256"]``); :func:`register_skeleton` makes it known to this process (loading a
model file does), and :class:`OnnxArchitecture` rebuilds the network from it with zeros for the weights, which the
model file's tensors then replace. A freshly initialised copy resets every module that has ``reset_parameters``.
"""

from __future__ import annotations

import hashlib

import torch.nn as nn

from ..errors import InputError
from .signature import keyword_signature

ONNX = "onnx"
#: Skeletons known to this process, by the SHA-256 of their bytes.
_SKELETONS: dict[str, bytes] = {}
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def onnx_modules():
    """``(onnx, onnx2torch)``, or one clear line when they are missing."""
    try:
        import onnx
        import onnx2torch
    except ImportError as exc:
        raise InputError(f"ONNX models need the onnx and onnx2torch packages ({exc}); "
                         f"install them with: pip install 'modelprint[ecosystem]'") from None
    return onnx, onnx2torch


def fold_identities(model) -> None:
    """Replace every ``Identity`` of an initializer by a copy of it, in place (exporters share equal weights that
    way, and onnx2torch reads a layer's weights only from initializers)."""
    onnx, _ = onnx_modules()
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            initializers[copy.name] = copy
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def skeleton(model) -> bytes:
    """The graph without the data of its floating-point initializers (names, types and shapes kept)."""
    onnx, _ = onnx_modules()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        if tensor.data_type in _FLOAT_TYPES:
            for field in ("raw_data", "float_data", "double_data", "int32_data"):
                tensor.ClearField(field)
    return copy.SerializeToString(deterministic=True)


def register_skeleton(data: bytes) -> str:
    """Make a skeleton known to this process; returns its SHA-256 (the ``graph_sha256`` that names it)."""
    digest = hashlib.sha256(data).hexdigest()
    _SKELETONS[digest] = bytes(data)
    return digest


def skeleton_bytes(digest: str) -> bytes | None:
    """The registered skeleton of that SHA-256, or None."""
    return _SKELETONS.get(digest)


def convert(model, where: str) -> nn.Module:
    """Convert an ONNX model (with its weights) to torch modules, or raise one line naming what is unsupported."""
    _, onnx2torch = onnx_modules()
    try:
        return onnx2torch.convert(model)
    except NotImplementedError as exc:
        raise InputError(f"{where}: the ONNX graph cannot be converted to torch ({exc}); "
                         f"import it with --runtime onnxruntime to verify it in black-box mode") from None
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{where}: the ONNX graph cannot be converted to torch ({type(exc).__name__}: {first}); "
                         f"import it with --runtime onnxruntime to verify it in black-box mode") from None


class OnnxArchitecture:
    """The builder of a registered ONNX skeleton: its modules with zero weights (a model file's tensors replace
    them; :func:`reset_weights` initialises them afresh)."""

    min_input_size = 1

    def __repr__(self) -> str:
        return "OnnxArchitecture()"

    __signature__ = keyword_signature("num_outputs", "in_channels", "graph_sha256")

    def __call__(self, *, num_outputs: int, in_channels: int, graph_sha256: str) -> nn.Module:
        data = skeleton_bytes(graph_sha256) if isinstance(graph_sha256, str) else None
        if data is None:
            raise InputError(f"the ONNX graph {str(graph_sha256)[:12]}... is not known to this process; load the model file that holds it")
        onnx, _ = onnx_modules()
        from onnx import numpy_helper
        import numpy as np

        model = onnx.load_from_string(data)
        for tensor in model.graph.initializer:
            if tensor.data_type in _FLOAT_TYPES:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
                tensor.CopyFrom(numpy_helper.from_array(np.zeros(tuple(tensor.dims), dtype=dtype), tensor.name))
        return convert(model, "the ONNX graph")


def reset_weights(net: nn.Module) -> nn.Module:
    """Initialise every module that has ``reset_parameters`` afresh (from torch's global generator), in place."""
    for module in net.modules():
        if module is not net and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return net
