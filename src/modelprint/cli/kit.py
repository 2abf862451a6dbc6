"""The owner's workflow: ``protect`` once, ``check`` any suspect, ``scan`` many."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import Executor, Mode, check_model_file, check_seed, console, input_files, stdout
from .protocol import EXECUTOR_OPTION, RAY_ADDRESS_OPTION, WORKERS_OPTION


def protect(
    model: Path = typer.Option(..., help="The target model file."),
    data: str = typer.Option("digits", help="The owner's data (its training split makes the sets and trains the owner's models)."),
    out: Path = typer.Option(..., help="The kit's folder (reused: a killed run resumes)."),
    profile: str = typer.Option("fast", help="fast: no helper models; strong: the best measured for the task (a training zoo and helper models)."),
    schemes: Optional[str] = typer.Option(None, help="Your own choice of sets instead of a profile: SCHEME[:CONFIGURATION],... (e.g. ipguard,tafa:images)."),
    sign: Optional[Path] = typer.Option(None, help="The owner's private key (from 'keys new'): it signs the sets and the kit."),
    new_key: Optional[Path] = typer.Option(None, "--new-key", help="Make a key pair NEW_KEY.key / NEW_KEY.pub here and sign with it (keep the .key private)."),
    n: int = typer.Option(100, min=1, help="Fingerprints per set."),
    seed: int = typer.Option(0),
    setting: list[str] = typer.Option([], "--set", help="A setting of one scheme's set, SCHEME.SETTING=VALUE (JSON value), repeatable."),
    null_models: int = typer.Option(20, "--null-models", min=1, help="Independently trained models that calibrate the verdict (K >= 19 for alpha 0.05)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Training epochs of the kit's models [default: the target's own]."),
    owner_models: Optional[Path] = typer.Option(None, "--owner-models", help="An existing folder of helper models to use (else the kit makes its own)."),
    training_zoo: Optional[Path] = typer.Option(None, "--training-zoo", help="An existing training zoo to use (else the kit makes its own)."),
    watermark: Optional[str] = typer.Option(None, help="Also mark the model, SCHEME[:CONFIGURATION] (deepsigns, backdoor:fixll_pfl ...): the kit then protects KIT/marked.safetensors, the model to deploy, and holds its key."),
    executor: Executor = EXECUTOR_OPTION,
    workers: int = WORKERS_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    device: str = typer.Option("cpu"),
) -> None:
    """Make everything a profile needs to check suspects later, signed: the kit."""
    from .. import checks

    checks.output_folder(out)
    checks.device(device)
    check_model_file(model, "--model")
    check_seed(seed)
    input_files((sign, "--sign"))
    for folder, what in ((owner_models, "--owner-models"), (training_zoo, "--training-zoo")):
        if folder is not None:
            checks.input_folder(folder, what)
    if (sign is None) == (new_key is None):
        raise InputError("give the owner's key: --sign KEY (from 'modelprint keys new') or --new-key NAME to make one")
    from ..checks import parse_assignments
    from ..data import check_data_spec
    from ..integrity.signing import load_private_key, new_key_files
    from ..kit.profiles import custom_profile, profile_named
    from ..kit.protect import build_kit, check_request, null_spec, plan
    from ..models import read_spec

    check_data_spec(data, "--data")
    spec = read_spec(model)
    chosen = custom_profile(schemes, spec.task) if schemes is not None else profile_named(profile, spec.task)
    null_spec(null_models, epochs=1)  # the count, checked before any work
    settings: dict[str, dict] = {}
    for key, value in parse_assignments(setting).items():
        scheme, dot, name = key.partition(".")
        if not dot or not name:
            raise InputError(f"--set {key}=...: name the scheme, SCHEME.SETTING=VALUE (e.g. ipguard.steps=200)")
        settings.setdefault(scheme, {})[name] = value
    check_request(chosen, settings, watermark=watermark, seed=seed)  # --set WATERMARK.SETTING=VALUE is the watermark's own
    key = load_private_key(sign) if sign is not None else None
    if key is None:
        existing = Path(f"{new_key}.key")
        if existing.exists():
            raise InputError(f"--new-key {new_key}: {existing} exists (a key is never overwritten); to finish or remake this kit with it, give --sign {existing}")
        private, public = new_key_files(new_key)  # type: ignore[arg-type]
        console.print(f"new key: {private} (private: keep it) and {public} (publish it)")
        key = load_private_key(private)
    if null_models < 19:
        console.print(f"warning: with {null_models} null models the combined p-value is never below 1/{null_models + 1} = {1 / (null_models + 1):.3g}: "
                      "19 or more are needed for a verdict at alpha 0.05")
    steps = plan(chosen, null_models)
    seconds = spec.info.get("train_seconds")
    estimate = f", about {steps['models_to_train'] * seconds / 60:.0f} min of training at the target's {seconds:.0f} s per model" if isinstance(seconds, (int, float)) else ""
    console.print(f"profile {chosen.name} ({chosen.task}): sets {', '.join(steps['sets'])}; needs {chosen.needs}; "
                  f"{steps['models_to_train']} models to train{estimate}")
    console.print(f"measured: {chosen.measured}")
    kit = build_kit(model, data=data, out=out, key=key, profile=profile, schemes=schemes, n=n, seed=seed, null_models=null_models, epochs=epochs,
                    owner_models_dir=owner_models, training_zoo_dir=training_zoo, settings=settings,
                    watermark=watermark, log=console.print,
                    executor=executor.value, workers=workers, ray_address=ray_address, device=device)
    from ..integrity.hashing import file_sha256

    stdout.print(f"kit {out}: {len(kit['sets'])} signed sets ({', '.join(s['name'] for s in kit['sets'])}), {null_models} null models; "
                 f"kit.json SHA-256 {file_sha256(out / 'kit.json')} (publish or timestamp it)")
    if watermark is not None:
        stdout.print(f"the marked model {out / 'marked.safetensors'} is the one to deploy: the kit protects it, not {model}")


def check(
    kit: Path = typer.Option(..., help="The kit's folder (made by 'modelprint protect')."),
    suspect: Optional[Path] = typer.Option(None, help="The suspect model file (or --url with --model-name or --api)."),
    url: Optional[str] = typer.Option(None, help="Base URL of the server that serves the suspect."),
    model_name: Optional[str] = typer.Option(None, help="The suspect's name on an Open Inference Protocol server."),
    api: Optional[Path] = typer.Option(None, help="The suspect is a JSON-over-HTTP API at --url: the YAML/JSON file of how to ask it."),
    out: Optional[Path] = typer.Option(None, help="The bundle's folder [default: modelprint-checks/<suspect>]."),
    mode: Optional[Mode] = typer.Option(None, help="For a file: white-box or black-box for every set [default: white-box where a scheme has it]."),
    alpha: float = typer.Option(0.05, help="False-positive rate of the combined verdict."),
    budget: Optional[int] = typer.Option(None, help="Most images all sets together may use (answers from journals included)."),
    batch_size: int = typer.Option(64, min=1, help="Images per request to the suspect."),
    trusted_key: Optional[Path] = typer.Option(None, help="The owner's public key: refuse a kit it did not sign."),
    sign: Optional[Path] = typer.Option(None, help="Sign the records and the bundle with this private key."),
    fresh: bool = typer.Option(False, help="Ask the suspect again instead of resuming the journals of an earlier check."),
    as_json: bool = typer.Option(False, "--json", help="Print the combined verdict as one JSON object."),
    device: str = typer.Option("cpu"),
) -> None:
    """Check one suspect with every set of a kit: one record per set and one combined verdict with its false-positive rate."""
    from .. import checks

    checks.device(device)
    input_files((trusted_key, "--trusted-key"), (sign, "--sign"), (api, "--api"))
    if suspect is not None:
        check_model_file(suspect, "--suspect")
    if out is None:
        out = Path("modelprint-checks") / (suspect.stem if suspect is not None else (model_name or "api"))
    from ..kit.check import check_suspect
    from ..report.verdict import judged_against, write_verdict_page

    done = check_suspect(kit, suspect=suspect, url=url, model_name=model_name, api=api, out=out, mode=mode.value if mode else None, alpha=alpha,
                         budget=budget, batch_size=batch_size, trusted_key=trusted_key, sign=sign, fresh=fresh, device=device, log=lambda line: console.print(f"set {line}"))
    page = write_verdict_page(done.bundle, done.path.with_suffix(".html"))
    if as_json:
        stdout.print(json.dumps(done.bundle["combined"]))
        return
    for entry in done.bundle["sets"]:
        stdout.print(f"{entry['set']:<18} {entry['mode']:<10} score {entry['score']:.3f}  ({judged_against(entry)})")
    stdout.print(done.bundle["statement"])
    stdout.print(f"bundle {done.path}, page {page}")


def scan(
    kit: Path = typer.Option(..., help="The kit's folder."),
    suspects: Path = typer.Option(..., help="A folder of model files, or a text file of 'URL MODEL_NAME' lines."),
    out: Path = typer.Option(Path("modelprint-scan"), help="The scan's folder (reused: a rerun resumes)."),
    mode: Optional[Mode] = typer.Option(None, help="For files: white-box or black-box [default: white-box where a scheme has it]."),
    alpha: float = typer.Option(0.05, help="False-positive rate of each combined verdict."),
    budget: Optional[int] = typer.Option(None, help="Most images per suspect."),
    executor: Executor = typer.Option(Executor.inprocess, help="One task per suspect: this process, a process pool, or Ray."),
    workers: int = WORKERS_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
) -> None:
    """Check many suspects against one kit and rank them by the combined evidence."""
    from ..kit.scan import scan as run_scan
    from ..report.verdict import scan_page, write_bundle_page

    result = run_scan(kit, suspects, out, alpha=alpha, budget=budget, mode=mode.value if mode else None, executor=executor.value, workers=workers,
                      ray_address=ray_address, on_row=lambda row: console.print(f"{row['suspect']}: {row.get('error') or ('PIRATED' if row['pirated'] else 'not shown')}"))
    pages = {}
    for row in result["suspects"]:
        bundle = Path(row.get("folder", "")) / "verdict.json"
        if "error" not in row and bundle.is_file():
            page = bundle.with_suffix(".html")
            if not (row.get("reused") and page.is_file()):  # a page is rewritten with its check, kept with a reused one
                write_bundle_page(bundle)
            pages[row["suspect"]] = f"{bundle.parent.name}/{page.name}"  # each check's folder is in the scan's
    (Path(out) / "scan.html").write_text(scan_page(result["suspects"], alpha=alpha, kit=result["kit"], pages=pages))
    for i, row in enumerate(result["suspects"], 1):
        verdict = "error: " + row["error"] if "error" in row else ("PIRATED" if row["pirated"] else "not shown")
        p = f"p {row['p_value']:.3g}" if "p_value" in row else ""
        stdout.print(f"{i:>3}. {row['suspect']:<30} {p:<10} {verdict}")
    stdout.print(f"{Path(out) / 'scan.json'}, {Path(out) / 'scan.html'}")
