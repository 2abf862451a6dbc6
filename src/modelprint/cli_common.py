"""What the command-line modules share: the consoles, the choices offered, and small parsers."""

from __future__ import annotations

from enum import Enum

from rich.console import Console

from .errors import InputError

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
