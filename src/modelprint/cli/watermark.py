"""The ``modelprint watermark`` commands: mark a model (``embed``) and examine a suspect with the key (``verify``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import Mode, check_model_file, check_seed, check_verify_paths, console, input_files, print_verification, stdout
from ..errors import InputError

watermark_app = typer.Typer(no_args_is_help=True, help="Watermarks: mark the owner's model at training time, and verify suspects with the secret key.")


@watermark_app.command()
def embed(
    scheme: str = typer.Option("deepsigns", help="The watermark scheme (registered: deepsigns, backdoor, csp, usp)."),
    configuration: str = typer.Option("default", help="A named configuration of the scheme (backdoor: ftal, ftal_twl, fixll, fixll_twl, fixll_pfl = default, fixll_spl)."),
    model: Optional[Path] = typer.Option(None, help="The host model file to mark by fine-tuning (or give --arch to train a marked model from scratch)."),
    arch: Optional[str] = typer.Option(None, help="Train a marked model of this architecture from scratch instead of marking --model."),
    width: int = typer.Option(16, help="Width of --arch."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs of the embedding [default: the scheme's fine-tuning epochs; 15 from scratch]."),
    data: str = typer.Option("digits", help="Data spec: the owner's training data (its training split)."),
    out: Path = typer.Option(..., help="Where the marked model is written."),
    key: Path = typer.Option(..., help="Where the secret key is written (safetensors)."),
    seed: int = typer.Option(0, help="Draws the key (and the fresh model from scratch)."),
    setting: list[str] = typer.Option([], "--set", help="A setting of the scheme, SETTING=VALUE (JSON value), repeatable."),
    sign: Optional[Path] = typer.Option(None, help="Sign the key with this private key (as fingerprint sets are signed)."),
    plot: Optional[Path] = typer.Option(None, help="Write a PNG of the host's and the marked model's test images in the host's 2-D penultimate projection (with --model)."),
    device: str = typer.Option("cpu"),
) -> None:
    """Mark a model and write it and its secret key; prints what marking cost the host and what the key reads."""
    from .. import checks

    if (model is None) == (arch is None):
        raise InputError("give either --model HOST (mark it by fine-tuning) or --arch ARCH (train a marked model from scratch)")
    if model is not None and not model.is_file():
        raise InputError(f"--model {model}: no such model file")
    for path, what in ((out, "--out"), (key, "--key"), (plot, "--plot")):
        if path is not None:
            checks.output_file(path, what)
    if plot is not None and model is None:
        raise InputError("--plot draws the host beside the marked model: it needs --model HOST")
    checks.device(device)
    input_files((sign, "--sign"))
    if model is not None:
        check_model_file(model, "--model")
    check_seed(seed)
    checks.number(width, "--width", minimum=1, integer=True)
    from ..data import check_data_spec

    check_data_spec(data, "--data")
    if arch is not None:
        from ..architectures import ARCHITECTURES, ONNX, architecture

        if arch == ONNX:
            raise InputError("--arch onnx: an ONNX graph is imported (modelprint import), not trained from scratch")
        architecture(arch)
    from ..integrity.signing import load_private_key

    signing_key = load_private_key(sign) if sign is not None else None
    from ..watermarks import WATERMARKS, watermark_entry, watermark_named

    watermark_entry(f"{scheme}:{configuration}")  # an unknown scheme or configuration fails in one line
    maker = watermark_named(scheme, configuration, **{**WATERMARKS[scheme].parse_settings(setting), "seed": seed})
    from ..data import load_data
    from ..models import build_model, load_model, save_model
    from ..access import WhiteBox
    from ..watermarks.fidelity import fidelity, projection, read_test

    if model is not None:
        host = load_model(model, device=device)
        splits = load_data(data, channels=host.spec.channels, size=host.spec.input_size[0])
    else:
        splits = load_data(data)
        if splits.num_classes is None:
            raise InputError(f"{data}: a watermark marks a classifier; these labels are not classes")
        host = build_model(arch, num_outputs=splits.num_classes, channels=splits.train.channels, input_size=splits.train.image_size, width=width if arch in ARCHITECTURES else None).to(device)  # type: ignore[arg-type]
    marked, secret = maker.embed(host, splits.train, from_scratch=arch is not None, epochs=epochs or (15 if arch else None), progress=True,
                                  held_out=splits.test)
    save_model(marked, out)
    if signing_key is not None:
        secret.sign(signing_key)
    secret.save(key)
    if model is not None:
        before, after = read_test(host, splits), read_test(marked, splits)
        figures = fidelity(before, after, host.spec.task, models=(host, marked))
        stdout.print("fidelity: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))
        if plot is not None:
            from ..report.watermarks import plot_projection

            plot_projection(projection(before, after), title=f"{scheme} ({configuration})").savefig(plot, dpi=110)
            console.print(f"fidelity picture: {plot}")
    for mode in maker.modes:
        result = maker.verify(WhiteBox(marked), secret, mode=mode)
        stdout.print(f"the marked model, {mode}: score {result.matching_score:.3f} (p = {result.p_value:.3g})")
    console.print(f"marked model: {out}; key: {key} (SHA-256 {secret.sha256()[:16]}...)")


@watermark_app.command()
def verify(
    key: Path = typer.Option(..., help="The secret key written by 'watermark embed'."),
    suspect: Optional[Path] = typer.Option(None, help="The suspect model file (or give --url and --model-name)."),
    url: Optional[str] = typer.Option(None, help="Base URL of an Open Inference Protocol (KServe v2) server serving the suspect."),
    model_name: Optional[str] = typer.Option(None, help="The suspect's model name on that server."),
    mode: Optional[Mode] = typer.Option(None, help="white-box (reads the weights' signature) or black-box (asks the key inputs) [default: white-box for a file (black-box for a scheme without a white-box mode), black-box for a URL]."),
    budget: Optional[int] = typer.Option(None, help="Most key inputs a black-box verification may use (journal answers and images sent)."),
    batch_size: int = typer.Option(64, min=1, help="Images per request to the suspect."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for the server (connection and each answer)."),
    retries: int = typer.Option(3, min=0, help="Retries with exponential backoff on connection errors, timeouts and 5xx."),
    journal: Optional[Path] = typer.Option(None, help="Query log and resume journal [default: RECORDS/<verification id>.queries.jsonl]."),
    fresh: bool = typer.Option(False, help="Ask the suspect again instead of resuming from the journal of an earlier run."),
    records: Path = typer.Option(Path("modelprint-records"), help="Folder of evidence records and query journals."),
    record: Optional[Path] = typer.Option(None, help="Evidence record to write [default: RECORDS/<verification id>-<UTC time>.json]."),
    null: Optional[Path] = typer.Option(None, help="Scores of unmarked models for an empirical verdict instead of the scheme's binomial one."),
    alpha: float = typer.Option(0.05, help="False-positive rate of the verdict."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trusted_key: Optional[Path] = typer.Option(None, help="The owner's public key: refuse a key it did not sign, before anything is sent."),
    expect_sha256: Optional[str] = typer.Option(None, help="Refuse a key whose content SHA-256 is not this one."),
    target: Optional[Path] = typer.Option(None, help="The owner's target model file: refuse a set that names other weights (a set can name any SHA-256; this confirms it)."),
    sign: Optional[Path] = typer.Option(None, help="Sign the evidence record with this private key."),
    device: str = typer.Option("cpu"),
) -> None:
    """Verify a suspect with a watermark key, a model file or a model behind a prediction server, and write an
    evidence record whose verdict is the scheme's own (binomial) p-value unless --null is given."""
    check_verify_paths(key, "--key", suspect=suspect, null=null, trusted_key=trusted_key, sign=sign, records=records, record=record,
                       journal=journal, device=device)
    from ..evidence.verification import verify_suspect
    from ..watermarks import WatermarkKey

    done = verify_suspect(
        key, suspect=suspect, url=url, model_name=model_name, mode=mode.value if mode else None, budget=budget, batch_size=batch_size, records=records,
        journal=journal, fresh=fresh, record=record, null=null, alpha=alpha, device=device, trusted_key=trusted_key, expect_sha256=expect_sha256, target=target,
        sign=sign, kind=WatermarkKey, **({"timeout": timeout, "retries": retries} if url else {}),
    )
    print_verification(done, alpha=alpha, as_json=as_json)
