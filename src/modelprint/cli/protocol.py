"""The ``modelprint evaluate``, ``owner-models`` and ``training-zoo`` commands: the protocol, the owner's helper models
and the owner's training zoo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..checks import parse_assignments
from .common import TASK_HELP, Executor, SimilarityMetric, TaskName, ZooPreset, check_model_file, console, input_files, mean_std_text, parse_names, stdout
from ..errors import InputError

#: Where models are trained, in every command that builds a zoo or the owner's models.
EXECUTOR_OPTION = typer.Option(Executor.pool, help="Where models are trained: a local process pool (default), this process, or Ray.")
WORKERS_OPTION = typer.Option(2, min=1, help="Pool processes or local Ray CPUs (one torch thread each).")
RAY_ADDRESS_OPTION = typer.Option(None, help="Address of an existing Ray cluster.")


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
    preset: ZooPreset = typer.Option(ZooPreset.quick, help="Zoo preset: quick (every transform kind) or paper (20 + 20); quick-distill and paper-distill add a family of students distilled by 7 other recipes."),
    zoo: Optional[Path] = typer.Option(None, help="A custom zoo spec (JSON or YAML) instead of the preset."),
    transfer_data: Optional[str] = typer.Option(
        None, help="Another data set (spec as --data) on which the distillation family's transfer student is distilled [default: digits]; -distill presets only."
    ),
    repeats: int = typer.Option(1, min=1, help="Fingerprint sets drawn per scheme (seeds 0..R-1)."),
    n: int = typer.Option(100, min=1),
    schemes: Optional[str] = typer.Option(None, help="Schemes compared on the same target, zoo and helper models, comma-separated (e.g. saliency,ipguard,conferae), or 'all' (every scheme that protects the task) [default: saliency]; the first is the headline."),
    configuration: Optional[str] = typer.Option(
        None, "--configuration", "--scheme",
        help="The first scheme's named configuration (saliency: owner, the best measured, which trains the owner's helper models; default, no helper "
        "models; paper, the paper taken literally) [default: owner for the paper preset where a scheme has it, default otherwise].",
    ),
    setting: list[str] = typer.Option([], "--set", help="A setting of the first scheme on top of its configuration, SETTING=VALUE (JSON value), repeatable."),
    references: Optional[int] = typer.Option(None, min=0, help="Owner's independently trained reference models [default: the most any compared configuration reads]."),
    surrogates: Optional[int] = typer.Option(None, min=0, help="Owner's distilled surrogate copies [default: the most any compared configuration reads]."),
    calibration: Optional[int] = typer.Option(None, min=0, help="Owner's independently trained calibration models [default: the most any compared configuration reads]."),
    executor: Executor = EXECUTOR_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    target: Optional[Path] = typer.Option(None, help="An existing target model instead of training one."),
    training_zoo_dir: Optional[Path] = typer.Option(None, "--training-zoo", help="Where the owner's training zoo (for schemes that learn from one: metav) is built and reused [default: OUT/training_zoo]."),
    watermark: Optional[str] = typer.Option(None, help="Watermark schemes evaluated beside the fingerprints, comma-separated, each NAME or NAME:CONFIGURATION (deepsigns, backdoor, backdoor:fixll_spl ...): each marks the target, the zoo's transforms and two attacks on watermarks are made from the marked model, and the target and the zoo's independent models are the negatives."),
    watermark_setting: list[str] = typer.Option([], "--watermark-set", help="A setting of the watermark schemes on top of their defaults, SETTING=VALUE (JSON value; NAME.SETTING=VALUE for scheme NAME only), repeatable."),
    ambiguity_keys: int = typer.Option(100, min=0, help="Forged keys each watermark key's ambiguity test draws: how many a thief's own keys verify on the marked model and on the negatives (0: none)."),
    device: str = typer.Option("cpu"),
) -> None:
    """Run the paper's evaluation protocol for one or more schemes and write report.json, report.html and plots."""
    from .. import checks

    checks.output_folder(out)
    checks.device(device)
    checks.number(width, "--width", minimum=1, integer=True)
    if target is not None and not target.is_file():
        raise InputError(f"--target {target}: no such model file")
    input_files((zoo, "--zoo"))
    if target is not None:
        check_model_file(target, "--target")
    if training_zoo_dir is not None:
        checks.output_folder(training_zoo_dir, "--training-zoo")
    from ..data import check_data_spec

    check_data_spec(data, "--data")
    if transfer_data is not None:
        check_data_spec(transfer_data, "--transfer-data")
    from ..protocol import EvaluationConfig, run_evaluation
    from ..report import write_report

    settings = parse_assignments(setting)
    config = EvaluationConfig(  # checks every scheme's settings and helper models before any training
        data=data, task=task.value, similarity=similarity.value, arch=arch, width=width, epochs=epochs, preset=preset.value, zoo=str(zoo) if zoo else None,
        transfer=transfer_data, repeats=repeats, n=n, schemes=parse_names(schemes, "--schemes") if schemes else None,
        scheme={**({"preset": configuration} if configuration else {}), **settings}, references=references, surrogates=surrogates, calibration=calibration,
        executor=executor.value, workers=workers, ray_address=ray_address, target=str(target) if target else None, device=device,
        training_zoo_dir=str(training_zoo_dir) if training_zoo_dir else None, watermarks=parse_names(watermark, "--watermark") if watermark else (),
        watermark_settings=parse_assignments(watermark_setting) or None, ambiguity_keys=ambiguity_keys,
    )
    report = run_evaluation(config, out, log=lambda line: console.print(line))
    html_path = write_report(report, out)
    stdout.print(comparison_table(report, title=f"Evaluation on {data}: {report['counts']['positives']} positives, {report['counts']['negatives']} negatives"))
    task_info = report["task"]
    stdout.print(f"task: {task_info['name']}; target test {task_info['metric_name']} {report['target']['test_metric']:.4f}")
    for name, block in report["schemes"].items():
        stealth = block["stealth"]
        shown = [(label, key) for label, key in (("kept", "acc"), ("PSNR dB", "psnr_db"), ("SSIM", "ssim"), ("Feature Squeezing", "dr_feature_squeezing"),
                                                 ("Deep SVDD", "dr_deepsvdd")) if key in stealth]
        stdout.print(f"{name} stealth: " + ", ".join(f"{label} {mean_std_text(stealth[key])}" for label, key in shown))
        if "tolerance" in stealth:
            stdout.print(f"{name} outputs kept within tolerance {mean_std_text(stealth['tolerance'])}: largest change {mean_std_text(stealth['output_change_max'])}")
    if report.get("watermarks"):
        stdout.print(watermark_table(report["watermarks"]))
    stdout.print("timings: " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items()))
    stdout.print(f"report: {out / 'report.json'}, {html_path}")


def comparison_table(report: dict, *, title: str) -> Table:
    """One row per scheme: ARUC, ROC AUC and TPR at 1% FPR per mode, black-box queries per verification, seconds per
    set, and the stealth of the samples (PSNR, SSIM, Feature Squeezing and Deep SVDD detection rates)."""
    table = Table(title=title)
    columns = ("scheme", "ARUC wb", "ARUC bb", "AUC wb", "AUC bb", "TPR@1% wb", "TPR@1% bb", "queries bb", "gen s", "PSNR", "SSIM", "FS", "SVDD")
    for column in columns:
        table.add_column(column, justify="left" if column == "scheme" else "right")
    for name, block in report["schemes"].items():
        cells = [mean_std_text(block[key][mode]) for key in ("aruc", "auc", "tpr_at_1pct_fpr") for mode in ("white_box", "black_box")]
        queries = block["queries"].get("black_box")
        stealth = [block["stealth"].get(k) for k in ("psnr_db", "ssim", "dr_feature_squeezing", "dr_deepsvdd")]
        table.add_row(name, *cells, "n/a" if queries is None else f"{queries:.0f}", f"{block['generation_s']['mean']:.0f}",
                      *["n/a" if figure is None else f"{figure['mean']:.{1 if i == 0 else 2}f}" for i, figure in enumerate(stealth)])
    return table


def watermark_table(blocks: dict) -> Table:
    """One row per watermark and mode: ARUC, ROC AUC, TPR at 1% FPR, the verdicts' rates at alpha from the scheme's
    own p-values, forged keys declared (the ambiguity test: on the marked models; on the negatives), and the
    fidelity of the marked model (test-metric change, KL host -> marked)."""
    from ..report.watermarks import forged_text

    table = Table(title="Watermarks (positives made from the marked model; negatives: the host and independent models)")
    for column in ("watermark", "mode", "ARUC", "AUC", "TPR@1%", "FPR@alpha", "TPR@alpha", "forged keys declared", "metric change", "KL"):
        table.add_column(column, justify="left" if column in ("watermark", "mode") else "right")
    for name, block in blocks.items():
        fidelity = block["fidelity"]
        for mode, verdicts in block["verdicts"].items():
            forged = block.get("ambiguity", {}).get(mode)
            table.add_row(name, mode, *(mean_std_text(block[key][mode]) for key in ("aruc", "auc", "tpr_at_1pct_fpr")),
                          mean_std_text(verdicts["false_positive_rate"]), mean_std_text(verdicts["true_positive_rate"]),
                          forged_text(forged) if forged else "n/a",
                          mean_std_text(fidelity["test_metric_change"]), mean_std_text(fidelity.get("kl_host_to_marked")))
    return table


def owner_models(
    target: Path = typer.Option(..., help="The target model file the helper models are made for."),
    out: Path = typer.Option(..., help="Folder of the helper models and their manifest (reused: a killed run resumes)."),
    data: str = typer.Option("digits", help="Data the target was trained on (the helper models train on it too)."),
    scheme: str = typer.Option("saliency", help="Make what this scheme's configuration reads ..."),
    configuration: str = typer.Option("owner", help="... in this named configuration (saliency owner: 8 references, 4 surrogates, 4 calibration)."),
    references: Optional[int] = typer.Option(None, min=0, help="Independently trained reference models [default: what the configuration reads]."),
    surrogates: Optional[int] = typer.Option(None, min=0, help="Distilled surrogate copies of the target [default: what the configuration reads]."),
    calibration: Optional[int] = typer.Option(None, min=0, help="Independently trained calibration models [default: what the configuration reads]."),
    epochs: int = typer.Option(15, min=1, help="Training epochs of each (as the target's)."),
    executor: Executor = EXECUTOR_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    device: str = typer.Option("cpu"),
) -> None:
    """Train the owner's helper models (references, surrogates, calibration models) that a configuration reads."""
    _check_build(out, device, target, data)
    from ..fingerprints import SCHEMES
    from ..protocol.owner import build_owner_models

    if scheme not in SCHEMES:
        raise InputError(f"unknown fingerprint scheme {scheme!r}; registered: {', '.join(sorted(SCHEMES))}")
    if configuration not in SCHEMES[scheme].configurations:
        raise InputError(f"the {scheme} scheme has no configuration {configuration!r} ({', '.join(SCHEMES[scheme].configurations)})")
    reads = SCHEMES[scheme].owner_models.get(configuration, {})
    given = {"references": references, "surrogates": surrogates, "calibration": calibration}
    counts = {role: reads.get(role, 0) if value is None else value for role, value in given.items()}
    if not any(counts.values()):
        raise InputError(f"the {scheme} {configuration!r} configuration reads no helper models; name counts with --references/--surrogates/--calibration")
    manifest = build_owner_models(counts, target, data, out, epochs=epochs, executor=executor.value, workers=workers, ray_address=ray_address, device=device)
    seconds = sum(r["build_seconds"] for r in manifest["suspects"])  # type: ignore[index]
    stdout.print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" in {out} ({seconds:.0f} s of training; manifest.json lists them)")


def training_zoo(
    target: Path = typer.Option(..., help="The target model file the training zoo is made for."),
    out: Path = typer.Option(..., help="Folder of the training zoo and its manifest (reused: a killed run resumes; a larger --size adds to it)."),
    data: str = typer.Option("digits", help="Data the target was trained on (the zoo's models train on it too)."),
    size: int = typer.Option(20, min=2, help="Models in all: half pirated copies (every zoo transform), half independently trained."),
    epochs: int = typer.Option(15, min=1, help="Training epochs of the independent and distilled models (as the target's)."),
    executor: Executor = EXECUTOR_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    device: str = typer.Option("cpu"),
) -> None:
    """Train the owner's training zoo: pirated and independent models that a learning scheme (metav) learns from,
    with seeds no preset evaluation zoo uses, and checkpoints of the models it trains."""
    _check_build(out, device, target, data)
    from ..models import read_spec
    from ..protocol.training_zoo import build_training_zoo, cost

    if read_spec(target).arch == "onnx":  # measured: docs/own-model.md, the walk-through
        console.print("warning: the independent models of an exported ONNX graph's training zoo are fresh copies of the graph, "
                      "which usually has its batch normalisation folded away; they can differ from real independent models "
                      "(MetaV learnt from such a zoo scored an independent timm model 0.991). Calibrate its verdict on "
                      "null scores of real independent models, or import the model from its timm/torchvision weights")
    manifest = build_training_zoo(size, target, data, out, epochs=epochs, executor=executor.value, workers=workers, ray_address=ray_address, device=device)
    spent = cost(manifest)
    stdout.print(f"{spent['positives']} pirated and {spent['models'] - spent['positives']} independent models, {spent['checkpoints']} checkpoints, in {out} "
                 f"({spent['build_seconds']:.0f} s of training; manifest.json lists them)")


def _check_build(out: Path, device: str, target: Path, data: str) -> None:
    """What a command that trains models around a target checks before any work: the output folder, the device,
    the target's file and the data spec."""
    from .. import checks

    checks.output_folder(out)
    checks.device(device)
    if not target.is_file():
        raise InputError(f"--target {target}: no such model file")
    check_model_file(target, "--target")
    from ..data import check_data_spec

    check_data_spec(data, "--data")
