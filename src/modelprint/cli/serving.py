"""The ``modelprint serve`` command: a model file behind the Open Inference Protocol, as a thief's API would be."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import console


def serve(
    model: Path = typer.Option(..., help="The model file to serve."),
    name: Optional[str] = typer.Option(None, help="Model name in the URLs [default: the file's stem]."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (loopback by default)."),
    port: int = typer.Option(8000, min=0, max=65535),
    max_body_mb: float = typer.Option(64.0, help="Largest request body accepted, in MiB."),
    docs: bool = typer.Option(False, "--docs", help="Also serve /docs, /redoc and /openapi.json (/docs loads a script from a CDN)."),
    noise: Optional[float] = typer.Option(None, help="Imperfect API: add Gaussian noise of this std to every output."),
    round_to: Optional[int] = typer.Option(None, "--round", help="Imperfect API: round outputs to this many decimals."),
    labels_only: bool = typer.Option(False, help="Imperfect API: answer the top-1 label only."),
    guard_data: Optional[str] = typer.Option(None, help="Guarded API: a Feature Squeezing detector fitted on this data's test images answers random outputs to the inputs it flags."),
    guard_fpr: float = typer.Option(0.05, help="The guard's false-positive rate on clean images."),
    watermark: Optional[Path] = typer.Option(None, help="Answer through this watermark key's perturbation of the probabilities (a key of a watermark in the answers, csp or usp, made for --model): every top-1 label is kept."),
    device: str = typer.Option("cpu"),
) -> None:
    """Serve a model file over the Open Inference Protocol v2 REST (what a thief's prediction API speaks)."""
    from ..serving.limits import ServerLimits, is_loopback

    from .. import checks

    limits = ServerLimits.with_body_mib(max_body_mb)  # a bad --max-body-mb is refused before the model is loaded
    checks.device(device)
    if noise is not None:
        checks.number(noise, "--noise", minimum=0)
    if round_to is not None:
        checks.number(round_to, "--round", minimum=0, integer=True)
    checks.number(guard_fpr, "--guard-fpr", above=0, below=1)
    checks.input_file(model, "--model")
    if watermark is not None:
        checks.input_file(watermark, "--watermark")
    if guard_data is not None:
        from ..data import check_data_spec

        check_data_spec(guard_data, "--guard-data")
    if not is_loopback(host):
        print(f"modelprint: warning: --host {host} is not a loopback address: the server has no authentication, "
              "anyone who reaches it can query the model", file=sys.stderr)
    from ..models import load_model
    from ..serving.server import DetectorGuard, GaussianNoise, Rounding, ServedModel, TopLabel, serve as run_server

    network = load_model(model, device=device)
    if watermark is not None:
        from ..fingerprints import scheme_for
        from ..watermarks import WatermarkKey

        secret = WatermarkKey.load(watermark)
        network = scheme_for(secret).attach(network, secret)  # type: ignore[attr-defined]
    filters: list = []
    if guard_data is not None:
        from ..data import load_data
        from ..detectors import FeatureSqueezing

        spec = network.spec
        clean = load_data(guard_data, channels=spec.channels, size=spec.input_size[0]).test.images
        filters.append(DetectorGuard(detector=FeatureSqueezing(fpr=guard_fpr).fit(network, clean), model=network))
    if noise is not None:
        filters.append(GaussianNoise(sigma=noise))
    if round_to is not None:
        filters.append(Rounding(decimals=round_to))
    if labels_only:
        filters.append(TopLabel())
    served = ServedModel.of(network, name or model.stem, filters=filters)
    if watermark is not None:
        console.print(f"answers perturbed by the {secret.scheme} watermark key {watermark} (SHA-256 {secret.sha256()[:16]}...)")
    console.print(f"serving {model} as {served.name!r} on http://{host}:{port}/v2/models/{served.name} (Ctrl+C stops)")
    run_server(served, host=host, port=port, limits=limits, docs=docs)
