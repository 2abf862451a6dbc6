"""The ``modelprint import`` command: an owner's timm, torchvision or ONNX model as a modelprint model file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, stdout
from ..errors import InputError


def _numbers(text: Optional[str], what: str) -> Optional[list[float]]:
    """``"0.485,0.456,0.406"`` -> [0.485, 0.456, 0.406]; finite numbers only."""
    if text is None:
        return None
    from .. import checks

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise InputError(f"{what} {text!r}: expected comma-separated numbers")
    for value in values:
        checks.number(value, what)
    return values


def import_command(
    source: Path = typer.Argument(..., help="Weights of a timm or torchvision model (.safetensors, or a .pt/.pth state dict), or an ONNX file."),
    out: Path = typer.Option(..., help="Model file to write (.safetensors)."),
    arch: Optional[str] = typer.Option(None, help="Where the architecture comes from: timm:NAME or torchvision:NAME (not for ONNX files)."),
    input_size: Optional[int] = typer.Option(None, help="Side of the images the model takes (e.g. 224) [an ONNX graph of fixed size gives its own]."),
    num_classes: Optional[int] = typer.Option(None, help="Classes [default: read from the weights' last linear layer]."),
    channels: int = typer.Option(3, help="Image channels."),
    mean: Optional[str] = typer.Option(None, help="Per-channel mean the model subtracts from images in [0, 1], e.g. 0.485,0.456,0.406 [timm/torchvision: the library's]."),
    std: Optional[str] = typer.Option(None, help="Per-channel std it divides by, e.g. 0.229,0.224,0.225 [timm/torchvision: the library's]."),
    class_names: Optional[str] = typer.Option(None, help="Class names in output order, comma-separated, or @FILE with one per line (what an API's top-k answers name)."),
    runtime: str = typer.Option("torch", help="For an ONNX file: 'torch' (convert; white-box and black-box) or 'onnxruntime' (run as it is; black-box only)."),
) -> None:
    """Import an owner's model (timm, torchvision or ONNX) as a modelprint model file that every command can use."""
    from .. import checks
    from ..importer import import_model
    from ..models import save_model

    checks.output_file(out, "--out")  # before any work
    if input_size is not None:
        checks.number(input_size, "--input-size", minimum=1, integer=True)
    if num_classes is not None:
        checks.number(num_classes, "--num-classes", minimum=1, integer=True)
    checks.number(channels, "--channels", minimum=1, integer=True)
    names = None
    if class_names is not None:
        if class_names.startswith("@"):
            text = checks.input_file(class_names[1:], "--class-names").read_text(encoding="utf-8", errors="replace")
            names = [line.strip() for line in text.splitlines() if line.strip()]
        else:
            names = [c.strip() for c in class_names.split(",") if c.strip()]
    model = import_model(source, arch=arch, input_size=input_size, num_classes=num_classes, channels=channels,
                         mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"), class_names=names, runtime=runtime)
    save_model(model, out)
    spec = model.spec
    parameters = sum(p.numel() for p in model.parameters())
    extra = "; black-box only (run by ONNX Runtime)" if spec.arch == "onnxruntime" else ""
    difference = spec.info.get("conversion_max_difference")
    if difference is not None:
        console.print(f"converted graph answers within {difference:.2g} of ONNX Runtime")
    stdout.print(f"{spec.arch}: {spec.num_outputs} classes, {spec.channels}x{spec.input_size[0]}x{spec.input_size[1]} images, "
                 f"{parameters:,} parameters{extra} -> {out}")
