"""The ``modelprint`` command line: every command is one call into the library.

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_signing import keys_app, records_app
from .errors import InputError, ModelprintError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Prove that a suspect model was stolen from yours.")
app.add_typer(keys_app, name="keys")
app.add_typer(records_app, name="records")
console = Console(stderr=True)  # progress and notes
stdout = Console(soft_wrap=True)  # results


class Mode(str, Enum):
    white_box = "white-box"
    black_box = "black-box"


class TaskName(str, Enum):
    classification = "classification"
    regression = "regression"
    similarity = "similarity"


class SimilarityMetric(str, Enum):
    l2 = "l2"
    cosine = "cosine"


TASK_HELP = "classification (class labels), regression (float labels: a value) or similarity (identity labels: an embedding trained with ArcFace)."


class Preset(str, Enum):
    default = "default"
    paper = "paper"


class Configuration(str, Enum):
    """Named fingerprint configurations of an evaluation: the names of SaliencyFingerprint.named, written out here
    so that the CLI starts without importing torch (a test keeps the two equal)."""

    default = "default"
    owner = "owner"
    paper = "paper"


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
    width: int = typer.Option(16, help="Width of the architecture (ResNet-18: 64 is the original, 16 the CPU default)."),
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
    from . import checks

    checks.output_file(out)
    checks.device(device)
    checks.number(width, "--width", minimum=1, integer=True)
    checks.number(channels, "--channels", minimum=1, integer=True)
    if size is not None:
        checks.number(size, "--size", minimum=1, integer=True)
    from .data import load_data
    from .models import save_model
    from .train import TrainConfig, train_new_model

    splits = load_data(data, channels=channels, size=size)
    config = TrainConfig(
        epochs=epochs, seed=seed, lr=lr, batch_size=batch_size, bf16=bf16, device=device,
        augment=splits.augment if augment is None else augment,
    )
    model, result = train_new_model(splits, arch=arch, width=width, config=config, task_name=task.value, embedding_dim=embedding_dim)
    save_model(model, out)
    console.print(f"test {result.metric_name}: {result.test_metric:.4f}  ({result.seconds:.1f} s)  -> {out}")


@app.command()
def generate(
    model: Path = typer.Option(..., help="The target model file."),
    out: Path = typer.Option(..., help="Fingerprint file to write (.safetensors)."),
    data: str = typer.Option("digits", help="Data whose training split supplies the candidate images."),
    task: Optional[TaskName] = typer.Option(None, help="The target's task [default: the one its model file records]."),
    similarity: SimilarityMetric = typer.Option(SimilarityMetric.l2, help="F_c of the similarity task: l2 distance (eq. 7) or cosine similarity (eq. 8) to the pair image."),
    tolerance: Optional[float] = typer.Option(None, help="How far a regression or similarity output may move (output units) [default: t_bb / 2]."),
    preset: Preset = typer.Option(Preset.default, help="'default' (no helper models) or 'paper' (the paper taken literally)."),
    n: int = typer.Option(100, min=1, help="Number of fingerprint samples."),
    xi: float = typer.Option(0.1, help="Perturbation budget on [0, 1] pixels."),
    norm: str = typer.Option("linf", help="linf or l2."),
    lam: float = typer.Option(1.0, help="Weight of the prediction-keeping loss."),
    steps: int = typer.Option(50, min=0),
    pattern: Optional[str] = typer.Option(None, help="Cells of P on the saliency grid, 'row,col;row,col' (default top-left)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    sign: Optional[Path] = typer.Option(None, help="Sign the set with this private key (from 'keys new'): verifiers pin the public key with --trusted-key."),
) -> None:
    """Generate saliency-map fingerprints of a target model."""
    from . import checks

    checks.output_file(out)
    checks.device(device)
    if tolerance is not None:
        checks.number(tolerance, "--tolerance", above=0)
    from .data import load_data
    from .fingerprints import SaliencyFingerprint
    from .models import load_model
    from .signing import load_private_key
    from .tasks import task_named

    signing_key = load_private_key(sign) if sign is not None else None  # a bad key fails before any work
    target = load_model(model, device=device)
    task_name = _task_of(target.spec.task, task, what=f"the model {model}")
    adapter = task_named(task_name, similarity=similarity.value)
    splits = load_data(data, channels=target.spec.channels, size=target.spec.input_size[0])
    candidates, pairs = adapter.candidates(splits.train)
    settings = dict(n=n, xi=xi, norm=norm, lam=lam, steps=steps, seed=seed, tolerance=tolerance)
    cells = _parse_pattern(pattern)
    if cells:
        settings["pattern"] = cells
    scheme = SaliencyFingerprint.named(preset.value, **settings)
    fingerprints = scheme.generate(target, candidates.images, candidates.labels, adapter, pairs=pairs, progress=True)
    if signing_key is not None:
        fingerprints.sign(signing_key)
    fingerprints.save(out)
    stats = fingerprints.stats
    console.print(
        f"{len(fingerprints)} fingerprints in {stats['generation_s']:.1f} s, PSNR {stats['psnr_db_mean']:.1f} dB, "
        f"t_wb {fingerprints.thresholds['white_box']:.3f}, t_bb {fingerprints.thresholds['black_box']:.4f}"
        + (f", tolerance {fingerprints.config['tolerance']:.4f}" if fingerprints.config.get("tolerance") else "") + f" -> {out}"
    )


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
    probe_tolerance: float = typer.Option(1e-4, min=0, help="When a server's journal is resumed, one journalled image is asked again: largest difference allowed between its answers (PROBE_TOLERANCE in modelprint.access)."),
    records: Path = typer.Option(Path("modelprint-records"), help="Folder of evidence records and query journals."),
    record: Optional[Path] = typer.Option(None, help="Evidence record to write [default: RECORDS/<verification id>-<UTC time>.json]."),
    null: Optional[Path] = typer.Option(None, help="Matching scores of independent models, for a calibrated verdict with p-value: a JSON list, or the verification-K.json of an evaluation run made with this fingerprint set."),
    alpha: float = typer.Option(0.05, help="False-positive rate of the calibrated verdict."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: str = typer.Option("cpu"),
    trusted_key: Optional[Path] = typer.Option(None, help="The owner's public key: refuse a fingerprint set it did not sign, before anything is sent to the suspect."),
    expect_sha256: Optional[str] = typer.Option(None, help="Refuse a fingerprint set whose content SHA-256 is not this one (published beforehand)."),
    sign: Optional[Path] = typer.Option(None, help="Sign the evidence record with this private key (check it with 'modelprint records check')."),
) -> None:
    """Verify a suspect, a model file or a model behind a prediction server, and write an evidence record."""
    from .evidence.verification import verify_suspect

    done = verify_suspect(
        fingerprints, task=task.value if task else None, suspect=suspect, url=url, model_name=model_name, mode=mode.value if mode else None, budget=budget,
        batch_size=batch_size, records=records, journal=journal, fresh=fresh, new_journal=new_journal, probe_tolerance=probe_tolerance, record=record, null=null, alpha=alpha,
        device=device, trusted_key=trusted_key, expect_sha256=expect_sha256, sign=sign, **({"timeout": timeout, "retries": retries, "rate_limit": rate_limit, "output": output} if url else {}),
    )
    result, box, verdict = done.result, done.box, done.record["verdict"]
    if as_json:
        summary = {k: getattr(result, k) for k in ("scheme", "mode", "matching_score", "n_samples", "queries", "threshold", "elapsed_s")}
        summary.update(sent=box.sent if box else 0, pirated=verdict.get("pirated"), p_value=verdict.get("p_value"), record=str(done.record_path))
        print(json.dumps(summary))
        return
    sent = f", {box.sent} sent now, {box.from_journal} from the journal" if box and box.from_journal else ""
    stdout.print(
        f"{result.mode} matching score {result.matching_score:.3f} over {result.n_samples} samples "
        f"(threshold {result.threshold:.4f}, {result.queries} queries{sent}, {result.elapsed_s:.2f} s)"
    )
    if verdict.get("pirated") is None:
        stdout.print(f"verdict: none ({verdict['reason']})")
    else:
        stdout.print(f"verdict: {'PIRATED' if verdict['pirated'] else 'not shown to be pirated'} (p = {verdict['p_value']:.4f}, alpha {alpha})")
    console.print(f"evidence record: {done.record_path}")


@app.command()
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
    device: str = typer.Option("cpu"),
) -> None:
    """Serve a model file over the Open Inference Protocol v2 REST (what a thief's prediction API speaks)."""
    from .serving.limits import ServerLimits, is_loopback

    from . import checks

    limits = ServerLimits.with_body_mib(max_body_mb)  # a bad --max-body-mb is refused before the model is loaded
    checks.device(device)
    if noise is not None:
        checks.number(noise, "--noise", minimum=0)
    if round_to is not None:
        checks.number(round_to, "--round", minimum=0, integer=True)
    checks.number(guard_fpr, "--guard-fpr", above=0, below=1)
    if not is_loopback(host):
        print(f"modelprint: warning: --host {host} is not a loopback address: the server has no authentication, "
              "anyone who reaches it can query the model", file=sys.stderr)
    from .models import load_model
    from .serving.server import DetectorGuard, GaussianNoise, Rounding, ServedModel, TopLabel, serve as run_server

    network = load_model(model, device=device)
    filters: list = []
    if guard_data is not None:
        from .data import load_data
        from .detectors import FeatureSqueezing

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
    console.print(f"serving {model} as {served.name!r} on http://{host}:{port}/v2/models/{served.name} (Ctrl+C stops)")
    run_server(served, host=host, port=port, limits=limits, docs=docs)


@app.command()
def demo(
    out: Path = typer.Option(Path("modelprint-demo"), help="Folder for models, fingerprints and summary.json."),
    epochs: int = typer.Option(8, min=1, help="Training epochs of the target and the independent models."),
    n: int = typer.Option(100, min=1, help="Fingerprints per configuration."),
    device: str = typer.Option("cpu"),
) -> None:
    """Run the whole method on the embedded digits set and print the table of matching scores."""
    from . import checks

    checks.output_folder(out)
    checks.device(device)
    from .demo import run_demo, summary_notes, summary_table

    summary = run_demo(out, epochs=epochs, n=n, device=device, log=lambda line: console.print(line))
    header, rows = summary_table(summary)
    table = Table(title=f"Matching scores on {summary['data']} (ResNet-18 width {summary['arch']['width']})")
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    stdout.print(table)
    for line in summary_notes(summary):
        stdout.print(line)
    stdout.print(f"total {summary['timings_s']['total_s']:.0f} s; summary written to {out / 'summary.json'}")


class ZooPreset(str, Enum):
    quick = "quick"
    paper = "paper"


class Executor(str, Enum):
    inprocess = "inprocess"
    pool = "pool"
    ray = "ray"


@app.command()
def evaluate(
    out: Path = typer.Option(..., help="Output folder (reused: a killed run resumes)."),
    data: str = typer.Option("digits", help="Data spec, as for 'train'."),
    task: TaskName = typer.Option(TaskName.classification, help=TASK_HELP),
    similarity: SimilarityMetric = typer.Option(SimilarityMetric.l2, help="F_c of the similarity task: l2 distance (eq. 7) or cosine similarity (eq. 8)."),
    arch: str = typer.Option("resnet18"),
    width: int = typer.Option(16),
    epochs: Optional[int] = typer.Option(
        None, min=1, help="Epochs of the target, the negatives, the distilled copies and the owner's helper models [default: 15]."
    ),
    preset: ZooPreset = typer.Option(ZooPreset.quick, help="Zoo preset: quick (every transform kind) or paper (20 + 20)."),
    zoo: Optional[Path] = typer.Option(None, help="A custom zoo spec (JSON or YAML) instead of the preset."),
    repeats: int = typer.Option(1, min=1, help="Fingerprint sets drawn (seeds 0..R-1)."),
    n: int = typer.Option(100, min=1),
    scheme: Optional[Configuration] = typer.Option(
        None,
        help="Fingerprint configuration: owner (the best measured; the run trains the owner's helper models), default (no helper models) "
        "or paper (the paper taken literally) [default: owner for the paper preset, default otherwise].",
    ),
    setting: list[str] = typer.Option([], "--set", help="A fingerprint setting on top of --scheme, SETTING=VALUE (JSON value), repeatable."),
    references: Optional[int] = typer.Option(None, min=0, help="Owner's independently trained reference models (for the scheme's beta/occlusion/pool) [default: 8 for --scheme owner, else 0]."),
    surrogates: Optional[int] = typer.Option(None, min=0, help="Owner's distilled surrogate copies (for the scheme's gamma/occlusion/pool) [default: 4 for --scheme owner, else 0]."),
    calibration: Optional[int] = typer.Option(None, min=0, help="Owner's independently trained models for 'calibration' thresholds (kept out of the objective) [default: 4 for --scheme owner, else 0]."),
    executor: Executor = typer.Option(Executor.pool, help="Where the zoo is built: a local process pool (default), this process, or Ray."),
    workers: int = typer.Option(2, min=1, help="Pool processes or local Ray CPUs (one torch thread each)."),
    ray_address: Optional[str] = typer.Option(None, help="Address of an existing Ray cluster."),
    target: Optional[Path] = typer.Option(None, help="An existing target model instead of training one."),
    device: str = typer.Option("cpu"),
) -> None:
    """Run the paper's evaluation protocol and write report.json, report.html and plots."""
    from . import checks

    checks.output_folder(out)
    checks.device(device)
    checks.number(width, "--width", minimum=1, integer=True)
    import numpy as np

    from .protocol.evaluation import EvaluationConfig, run_evaluation
    from .fingerprints import SaliencyFingerprint
    from .report import write_report

    settings = SaliencyFingerprint.parse_settings(setting)
    SaliencyFingerprint.named(scheme.value if scheme else "default", **{"n": n, **settings})  # bad settings: one line, before any training
    if target is not None and not target.is_file():
        raise InputError(f"--target {target}: no such model file")
    config = EvaluationConfig(
        data=data, task=task.value, similarity=similarity.value, arch=arch, width=width, epochs=epochs, preset=preset.value, zoo=str(zoo) if zoo else None,
        repeats=repeats, n=n, scheme={**({"preset": scheme.value} if scheme else {}), **settings}, references=references, surrogates=surrogates, calibration=calibration,
        executor=executor.value, workers=workers,
        ray_address=ray_address, target=str(target) if target else None, device=device,
    )
    report = run_evaluation(config, out, log=lambda line: console.print(line))
    html_path = write_report(report, out)
    table = Table(title=f"Evaluation on {data}: {report['counts']['positives']} positives, {report['counts']['negatives']} negatives")
    for column in ("figure", "white-box", "black-box"):
        table.add_column(column)
    for name, key in (("ARUC", "aruc"), ("ROC AUC", "auc"), ("TPR at 1% FPR", "tpr_at_1pct_fpr")):
        table.add_row(name, *[_mean_std_text(report[key][mode]) for mode in ("white_box", "black_box")])
    stdout.print(table)
    stealth, task_info = report["stealth"], report["task"]
    thresholds = report["thresholds"]
    stdout.print(
        f"task: {task_info['name']}; target test {task_info['metric_name']} {report['target']['test_metric']:.4f}; "
        f"t_wb {np.mean([t['white_box'] for t in thresholds]):.4f}, t_bb {np.mean([t['black_box'] for t in thresholds]):.4f} (mean over repeats)"
    )
    if "tolerance" in stealth:
        stdout.print(
            f"outputs kept within tolerance {_mean_std_text(stealth['tolerance'])}: largest change {_mean_std_text(stealth['output_change_max'])}"
        )
    stdout.print(
        "stealth: kept " + _mean_std_text(stealth["acc"]) + ", PSNR " + _mean_std_text(stealth["psnr_db"]) + " dB, SSIM "
        + _mean_std_text(stealth["ssim"]) + ", detected by Feature Squeezing " + _mean_std_text(stealth["dr_feature_squeezing"])
        + ", by Deep SVDD " + _mean_std_text(stealth["dr_deepsvdd"])
    )
    stdout.print("timings: " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items()))
    stdout.print(f"report: {out / 'report.json'}, {html_path}")


def _task_of(recorded: str, asked: "TaskName | None", *, what: str) -> str:
    """The task to use: the recorded one, which ``--task`` may name but not contradict."""
    if asked is not None and asked.value != recorded:
        raise InputError(f"--task {asked.value}, but {what} is for {recorded}")
    return recorded


def _mean_std_text(value: dict | None) -> str:
    return "n/a" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: a bad input of any kind ends with one line on stderr and exit code 2."""
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
        print("modelprint: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
