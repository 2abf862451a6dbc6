"""The evaluation protocol: every registered scheme on the same target, suspect zoo and owner's helper models.

:mod:`.config` holds a run's settings, :mod:`.owner` the owner's helper models (a step of its own), :mod:`.run`
the run and :mod:`.summary` its figures.
"""

from .config import EvaluationConfig
from .run import run_evaluation

__all__ = ["EvaluationConfig", "run_evaluation"]
