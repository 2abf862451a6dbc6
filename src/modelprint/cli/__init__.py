"""The ``modelprint`` command line: every command is one call into the library.

Bad input ends with one line on stderr and exit code 2, never a traceback. An interrupted command ends with one
line on stderr and the shell's code for the signal: 130 for SIGINT (Ctrl+C), 143 for SIGTERM; the processes it
started end with it, and the commands that resume (``evaluate``, ``owner-models``, ``training-zoo``, ``demo``)
continue from what was finished when started again.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from ..checks import parse_assignments
from .importing import import_command
from .kit import check, protect, scan
from .common import TASK_HELP, Mode, SimilarityMetric, TaskName, check_model_file, check_seed, check_verify_paths, console, input_files, print_verification, stdout
from .protocol import evaluate, owner_models, training_zoo
from .serving import serve
from .signing import keys_app, records_app
from .watermark import watermark_app
from ..errors import InputError, ModelprintError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Prove that a suspect model was stolen from yours.")
app.add_typer(keys_app, name="keys")
app.add_typer(records_app, name="records")
app.add_typer(watermark_app, name="watermark")


def _parse_pattern(text: str | None) -> tuple[tuple[int, int], ...] | None:
    """``"0,0;0,1"`` -> ((0, 0), (0, 1))."""
    if not text:
        return None
    try:
        cells = tuple(tuple(int(v) for v in cell.split(",")) for cell in text.split(";") if cell.strip())
    except ValueError:
        raise InputError(f"--pattern {text!r}: expected cells as 'row,col;row,col'") from None
    if not cells or any(len(c) != 2 for c in cells):
        raise InputError(f"--pattern {text!r}: expected cells as 'row,col;row,col'")
    return cells  # type: ignore[return-value]


@app.command()
def train(
    out: Path = typer.Option(..., help="Model file to write (.safetensors)."),
    data: str = typer.Option("digits", help="'digits', a folder with train.npz/test.npz, or medmnist:FLAG[@SIZE]."),
    task: TaskName = typer.Option(TaskName.classification, help=TASK_HELP),
    arch: str = typer.Option("resnet18", help="resnet18, vgg11_bn or mobilefacenet."),
    width: Optional[int] = typer.Option(None, help="Width of modelprint's own architectures (ResNet-18: 64 is the original, 16 [default] the CPU default); timm and torchvision architectures take none."),
    embedding_dim: int = typer.Option(128, min=1, help="Embedding size of a similarity model."),
    epochs: int = typer.Option(15, min=0),
    seed: int = typer.Option(0),
    lr: float = typer.Option(0.1, help="Peak learning rate."),
    batch_size: int = typer.Option(128, min=1),
    augment: Optional[str] = typer.Option(None, help="'crop', 'flip', 'crop,flip' or ''; the data set's own choice when omitted."),
    size: Optional[int] = typer.Option(None, help="Resize images to SIZE x SIZE."),
    channels: int = typer.Option(3, help="Input channels (grayscale is expanded)."),
    bf16: bool = typer.Option(False, help="bfloat16 autocast (measure it: slower on CPUs without bf16 instructions)."),
    device: str = typer.Option("cpu"),
) -> None:
    """Train a model for a task and write it as a model file."""
    from .. import checks

    checks.output_file(out)
    checks.device(device)
    if width is not None:
        checks.number(width, "--width", minimum=1, integer=True)
    checks.number(channels, "--channels", minimum=1, integer=True)
    check_seed(seed)
    from dataclasses import replace

    from ..architectures import ARCHITECTURES, HUBS, ONNX, architecture
    from ..data import check_data_spec, load_data
    from ..models import save_model
    from ..train import TrainConfig, train_new_model

    if arch == ONNX or not isinstance(arch, str):
        names = ", ".join([*sorted(ARCHITECTURES), *(f"{hub}:NAME" for hub in HUBS)])
        raise InputError(f"--arch {arch!r}: choose one of {names} (an ONNX graph is imported: modelprint import)")
    builder = architecture(arch)
    if width is None and arch in ARCHITECTURES:
        width = 16
    elif width is not None and arch not in ARCHITECTURES:
        raise InputError(f"--width: {arch} takes no width (only modelprint's own architectures do)")
    if size is not None:
        checks.number(size, "--size", minimum=getattr(builder, "min_input_size", 1), integer=True)
    check_data_spec(data, "--data", channels=channels, size=size)
    from ..train import CROP_PAD

    if size is not None and size <= CROP_PAD and (augment is None or "crop" in augment):
        raise InputError(f"--size {size}: too small for the 'crop' augmentation ({CROP_PAD}-pixel padding); give --size > {CROP_PAD} or --augment flip or ''")
    config = TrainConfig(epochs=epochs, seed=seed, lr=lr, batch_size=batch_size, bf16=bf16, device=device, augment=augment or "")  # checked now
    splits = load_data(data, channels=channels, size=size)
    config = replace(config, augment=splits.augment if augment is None else augment)
    model, result = train_new_model(splits, arch=arch, width=width, config=config, task_name=task.value, embedding_dim=embedding_dim)
    save_model(model, out)
    console.print(f"test {result.metric_name}: {result.test_metric:.4f}  ({result.seconds:.1f} s)  -> {out}")


@app.command()
def generate(
    model: Path = typer.Option(..., help="The target model file."),
    out: Path = typer.Option(..., help="Fingerprint file to write (.safetensors)."),
    data: str = typer.Option("digits", help="Data whose training split supplies the candidate images."),
    scheme: str = typer.Option("saliency", help="The fingerprint scheme, by its registered name (e.g. saliency, ipguard, conferae)."),
    configuration: Optional[str] = typer.Option(None, "--configuration", "--preset", help="The scheme's named configuration (saliency: default, paper or owner; 'owner' reads helper models: --owner-models) [default: the scheme's for the task; saliency: default for classification, owner for regression and similarity]."),
    setting: list[str] = typer.Option([], "--set", help="A setting on top of the configuration, SETTING=VALUE (JSON value), repeatable."),
    owner_models_dir: Optional[Path] = typer.Option(None, "--owner-models", help="The owner's helper models made by 'modelprint owner-models', for a configuration that reads them."),
    training_zoo_dir: Optional[Path] = typer.Option(None, "--training-zoo", help="The owner's training zoo made by 'modelprint training-zoo', for a scheme that learns from one (metav)."),
    task: Optional[TaskName] = typer.Option(None, help="The target's task [default: the one its model file records]."),
    similarity: SimilarityMetric = typer.Option(SimilarityMetric.l2, help="F_c of the similarity task: l2 distance (eq. 7) or cosine similarity (eq. 8) to the pair image."),
    n: int = typer.Option(100, min=1, help="Number of fingerprint samples."),
    seed: int = typer.Option(0),
    tolerance: Optional[float] = typer.Option(None, help="Saliency: how far a regression or similarity output may move (output units) [default: t_bb / 2]."),
    xi: Optional[float] = typer.Option(None, help="Saliency: perturbation budget [default: the configuration's]."),
    norm: Optional[str] = typer.Option(None, help="Saliency: linf or l2 [default: the configuration's]."),
    lam: Optional[float] = typer.Option(None, help="Saliency: weight of the prediction-keeping loss."),
    steps: Optional[int] = typer.Option(None, min=0, help="Optimisation steps [default: the configuration's]."),
    pattern: Optional[str] = typer.Option(None, help="Saliency: cells of P on the saliency grid, 'row,col;row,col' (default top-left)."),
    device: str = typer.Option("cpu"),
    sign: Optional[Path] = typer.Option(None, help="Sign the set with this private key (from 'keys new'): verifiers pin the public key with --trusted-key."),
) -> None:
    """Generate fingerprints of a target model with any registered scheme."""
    from .. import checks

    checks.output_file(out)
    checks.device(device)
    check_model_file(model, "--model")
    input_files((sign, "--sign"))
    for folder, what in ((owner_models_dir, "--owner-models"), (training_zoo_dir, "--training-zoo")):
        if folder is not None:
            checks.input_folder(folder, what)
    check_seed(seed)
    from ..data import check_data_spec

    check_data_spec(data, "--data")
    if tolerance is not None:
        checks.number(tolerance, "--tolerance", above=0)
    settings = parse_assignments(setting)
    named = dict(tolerance=tolerance, xi=xi, norm=norm, lam=lam, steps=steps, pattern=_parse_pattern(pattern))
    settings.update({k: v for k, v in named.items() if v is not None}, n=n, seed=seed)
    from ..protocol.generate import describe, generate_set
    from ..integrity.signing import load_private_key

    signing_key = load_private_key(sign) if sign is not None else None  # a bad key fails before any work
    fingerprints = generate_set(model, data=data, scheme=scheme, configuration=configuration, settings=settings,
                                task=task.value if task else None, similarity=similarity.value, owner_models_dir=owner_models_dir,
                                training_zoo_dir=training_zoo_dir, device=device)
    if signing_key is not None:
        fingerprints.sign(signing_key)
    fingerprints.save(out)
    console.print(describe(fingerprints, out))


@app.command()
def verify(
    fingerprints: Path = typer.Option(..., help="Fingerprint file made by 'generate'."),
    suspect: Optional[Path] = typer.Option(None, help="The suspect model file (or give --url and --model-name)."),
    url: Optional[str] = typer.Option(None, help="Base URL of an Open Inference Protocol (KServe v2) server serving the suspect."),
    model_name: Optional[str] = typer.Option(None, help="The suspect's model name on that server."),
    mode: Optional[Mode] = typer.Option(None, help="white-box (reads saliency) or black-box (outputs only) [default: white-box for a file, black-box for a URL]."),
    task: Optional[TaskName] = typer.Option(None, help="Check that the fingerprint set protects a model of this task (it records its task)."),
    budget: Optional[int] = typer.Option(None, help="Most images a black-box verification may use: answers taken from the journal plus images sent, every retry and the resume probe included."),
    batch_size: int = typer.Option(64, min=1, help="Images per request to the suspect."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for the server (connection and each answer)."),
    retries: int = typer.Option(3, min=0, help="Retries with exponential backoff on connection errors, timeouts and 5xx."),
    rate_limit: Optional[float] = typer.Option(None, help="Most requests per second."),
    output: Optional[str] = typer.Option(None, help="Output to request from the server (e.g. predict_proba); its first output when omitted."),
    journal: Optional[Path] = typer.Option(None, help="Query log and resume journal [default: RECORDS/<verification id>.queries.jsonl]."),
    fresh: bool = typer.Option(False, help="Ask the suspect again instead of resuming from the journal of an earlier run (as --new-journal)."),
    new_journal: bool = typer.Option(False, "--new-journal", help="Set an existing journal aside (renamed NAME.<UTC>.set-aside.jsonl) and start a new one, e.g. for a journal of another suspect or a damaged one."),
    probe_tolerance: Optional[float] = typer.Option(None, min=0, help="When a server's journal is resumed, a random sample of journalled images is asked again: largest difference allowed between their answers [default: 1e-4, or the set's cap, a quarter of its black-box threshold, when lower; a larger value than the cap is refused]."),
    records: Path = typer.Option(Path("modelprint-records"), help="Folder of evidence records and query journals."),
    record: Optional[Path] = typer.Option(None, help="Evidence record to write [default: RECORDS/<verification id>-<UTC time>.json]."),
    null: Optional[Path] = typer.Option(None, help="Matching scores of independent models, for a calibrated verdict with p-value: a JSON list, or the verification-K.json of an evaluation run made with this fingerprint set."),
    alpha: float = typer.Option(0.05, help="False-positive rate of the calibrated verdict."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: str = typer.Option("cpu"),
    trusted_key: Optional[Path] = typer.Option(None, help="The owner's public key: refuse a fingerprint set it did not sign, before anything is sent to the suspect."),
    expect_sha256: Optional[str] = typer.Option(None, help="Refuse a fingerprint set whose content SHA-256 is not this one (published beforehand)."),
    target: Optional[Path] = typer.Option(None, help="The owner's target model file: refuse a set that names other weights (a set can name any SHA-256; this confirms it)."),
    sign: Optional[Path] = typer.Option(None, help="Sign the evidence record with this private key (check it with 'modelprint records check')."),
    api: Optional[Path] = typer.Option(None, help="The suspect is a JSON-over-HTTP API at --url: a YAML/JSON file of how to ask it (path, send, field, answer, answer_path, classes, ...; docs/own-model.md); --api-* options override it."),
    api_path: Optional[str] = typer.Option(None, help="JSON API: the path requests are POSTed to [/predict]."),
    api_send: Optional[str] = typer.Option(None, help="JSON API: multipart (file upload) [default], base64 (an encoded PNG/JPEG in a JSON field) or floats."),
    api_field: Optional[str] = typer.Option(None, help="JSON API: the form field or JSON key of the image [file]."),
    api_answer: Optional[str] = typer.Option(None, help="JSON API: probabilities (a list of scores) [default], topk (class -> probability) or label."),
    api_answer_path: Optional[str] = typer.Option(None, help="JSON API: dotted path to the answer in the JSON (e.g. predictions or output.0) [the whole answer]."),
    api_classes: Optional[str] = typer.Option(None, help="JSON API: class names in output order, comma-separated (what top-k keys and labels name)."),
    api_per_request: Optional[int] = typer.Option(None, help="JSON API: images per request [1]."),
) -> None:
    """Verify a suspect, a model file or a model behind a prediction server, and write an evidence record."""
    check_verify_paths(fingerprints, "--fingerprints", suspect=suspect, null=null, trusted_key=trusted_key, sign=sign, records=records,
                       record=record, journal=journal, device=device)
    from ..evidence.verification import verify_suspect

    inline = dict(path=api_path, send=api_send, field=api_field, answer=api_answer, answer_path=api_answer_path, classes=api_classes, per_request=api_per_request)
    mapping = None
    if api is not None or any(v is not None for v in inline.values()):
        from ..serving.json_api import mapping_from_options

        mapping = mapping_from_options(api, **inline)

    done = verify_suspect(
        fingerprints, task=task.value if task else None, suspect=suspect, url=url, model_name=model_name, mode=mode.value if mode else None, budget=budget,
        batch_size=batch_size, records=records, journal=journal, fresh=fresh, new_journal=new_journal, probe_tolerance=probe_tolerance, record=record, null=null, alpha=alpha,
        device=device, trusted_key=trusted_key, expect_sha256=expect_sha256, target=target, sign=sign, api=mapping, **({"timeout": timeout, "retries": retries, "rate_limit": rate_limit, "output": output} if url else {}),
    )
    print_verification(done, alpha=alpha, as_json=as_json)


@app.command()
def demo(
    out: Path = typer.Option(Path("modelprint-demo"), help="Folder for models, the kit, the checks and summary.json."),
    epochs: int = typer.Option(6, min=1, help="Training epochs of the target, the independent model and the kit's null models."),
    n: int = typer.Option(100, min=1, help="Fingerprints per set."),
    device: str = typer.Option("cpu"),
) -> None:
    """Protect a digits model, then check four suspects with its kit as files and two of them served as an API: the owner's workflow."""
    from .. import checks

    checks.output_folder(out)
    checks.device(device)
    from ..demo import run_demo, summary_lines

    summary = run_demo(out, epochs=epochs, n=n, device=device, log=lambda line: console.print(line))
    from ..report.verdict import write_bundle_page

    for row in summary["checks"]:  # each check's page beside its bundle
        write_bundle_page(row["bundle"])
    for line in summary_lines(summary):
        stdout.print(line, highlight=False)
    stdout.print(f"total {summary['timings_s']['total_s']:.0f} s; summary: {out / 'summary.json'}")
    stdout.print(f"each check's page: {out / 'checks'}/*/verdict.html", highlight=False)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that clean-ups run (pool workers are stopped) as on Ctrl+C."""


def _terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler of :func:`main`.

    Args:
        signum: the signal's number.
        frame: unused.

    Raises:
        Terminated: always.
    """
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: a bad input of any kind ends with one line on stderr and exit code 2;
    SIGINT and SIGTERM end it with one line and code 130 or 143."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        _main(argv)
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _main(argv: list[str] | None) -> None:
    """:func:`main` with SIGTERM already turned into :class:`Terminated`."""
    from typer._click import exceptions as click_errors

    try:
        code = app(args=argv, prog_name="modelprint", standalone_mode=False)
    except click_errors.NoArgsIsHelpError:  # a bare command: its help was shown
        raise SystemExit(2) from None
    except click_errors.UsageError as exc:  # malformed options: one line that names the command and the problem
        command = exc.ctx.command_path if exc.ctx is not None else "modelprint"
        message = " ".join(exc.format_message().split())
        print(f"modelprint: error: {message} (see '{command} --help')", file=sys.stderr)
        raise SystemExit(2) from None
    except click_errors.ClickException as exc:
        print(f"modelprint: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ModelprintError, FileNotFoundError) as exc:
        print(f"modelprint: error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("modelprint: interrupted (SIGINT)", file=sys.stderr)
        raise SystemExit(130) from None
    except Terminated:
        print("modelprint: terminated (SIGTERM)", file=sys.stderr)
        raise SystemExit(143) from None
    if code == 130:  # typer turns a KeyboardInterrupt in a command into exit code 130
        print("modelprint: interrupted (SIGINT)", file=sys.stderr)
    if isinstance(code, int) and code:
        raise SystemExit(code)


app.command()(serve)
app.command("import")(import_command)
app.command()(evaluate)
app.command("owner-models")(owner_models)
app.command("training-zoo")(training_zoo)
app.command()(protect)
app.command()(check)
app.command()(scan)


if __name__ == "__main__":
    main()
