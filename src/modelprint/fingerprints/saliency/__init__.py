"""The saliency-map fingerprint, split by concern: its configurations (a leaf), settings, objective, generation on
the shared optimiser, pool selection, thresholds, the read-out that verification and generation share, and the
scheme that drives them."""

from .configurations import BB_SCORES, CONFIGURATIONS, MODE_CODE, OWNER, OWNER_MODELS, OWNER_TASK_SETTINGS, PAPER, TASK_DEFAULTS
from .readout import rows_read_by
from .scheme import SaliencyFingerprint

__all__ = [
    "BB_SCORES", "CONFIGURATIONS", "MODE_CODE", "OWNER", "OWNER_MODELS", "OWNER_TASK_SETTINGS", "PAPER", "TASK_DEFAULTS",
    "SaliencyFingerprint", "rows_read_by",
]
