"""What the command-line modules share: the consoles, the choices offered, and small parsers."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from rich.console import Console

from ..errors import InputError

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


class ZooPreset(str, Enum):
    quick = "quick"
    paper = "paper"
    quick_distill = "quick-distill"
    paper_distill = "paper-distill"


class Executor(str, Enum):
    inprocess = "inprocess"
    pool = "pool"
    ray = "ray"


def parse_names(text: str, what: str) -> tuple[str, ...]:
    """``"a,b"`` -> ("a", "b")."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InputError(f"{what} {text!r}: expected one or more comma-separated names")
    return names


def task_of(recorded: str, asked: "TaskName | None", *, what: str) -> str:
    """The task to use: the recorded one, which ``--task`` may name but not contradict."""
    if asked is not None and asked.value != recorded:
        raise InputError(f"--task {asked.value}, but {what} is for {recorded}")
    return recorded


def mean_std_text(value: dict | None) -> str:
    return "n/a" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"


def print_verification(done: Any, *, alpha: float, as_json: bool) -> None:
    """What ``verify`` and ``watermark verify`` print: one JSON object, or the score, the verdict and the record."""
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
    own = f"; {verdict['method']}" if verdict.get("n_null") == 0 and verdict.get("method") else ""  # the scheme's own null model
    if verdict.get("pirated") is None:
        stdout.print(f"verdict: none ({verdict['reason']})")
    else:
        stdout.print(f"verdict: {'PIRATED' if verdict['pirated'] else 'not shown to be pirated'} (p = {verdict['p_value']:.3g}, alpha {alpha}{own})")
    if box is not None and box.queries and box.levels <= 2 and "scores" in box.capabilities:
        console.print(f"warning: the suspect's answers took {box.levels} distinct value(s): scores rounded to nothing carry no more "
                      "than a label and cannot distinguish models that agree on labels (record: queries.answer_levels)")
    console.print(f"evidence record: {done.record_path}")


def input_files(*given: "tuple[Any, str]") -> None:
    """Check, before any work, that each optional input file given as ``(path or None, option)`` exists and can
    be read.

    Raises:
        InputError: naming the option and the file.
    """
    from .. import checks

    for path, what in given:
        if path is not None:
            checks.input_file(path, what)


def check_seed(seed: int, what: str = "--seed") -> None:
    """A seed torch and numpy both take: a whole number in [0, 2**63)."""
    from .. import checks

    checks.number(seed, what, minimum=0, maximum=2**63 - 1, integer=True)


def check_verify_paths(file: Any, what: str, *, suspect: Any, null: Any, trusted_key: Any, sign: Any, records: Any, record: Any,
                       journal: Any, device: str) -> None:
    """What ``verify`` and ``watermark verify`` check before anything is read or sent: the files they read exist
    and can be read, the records folder, record and journal can be written, and the device exists.

    Raises:
        InputError: naming the option.
    """
    from .. import checks

    checks.input_file(file, what, "fingerprint file" if what == "--fingerprints" else "watermark key file")
    input_files((suspect, "--suspect"), (null, "--null"), (trusted_key, "--trusted-key"), (sign, "--sign"))
    checks.output_folder(records, "--records")
    if record is not None:
        checks.output_file(record, "--record")
    if journal is not None:
        checks.output_file(journal, "--journal")
        if journal.exists():
            checks.input_file(journal, "--journal")
    checks.device(device)


def check_model_file(path: Any, what: str) -> None:
    """A model file the command reads, checked before any work: it exists, can be read and loads as a modelprint
    model (header, architecture, weights; a few milliseconds to a second, against minutes of training).

    Raises:
        InputError: naming the option and what is wrong.
    """
    from .. import checks
    from ..models import load_model

    checks.input_file(path, what, "model file")
    try:
        load_model(path)
    except InputError as exc:
        raise InputError(f"{what} {exc}") from None
