"""Watermark schemes: each one file, all behind :class:`WatermarkScheme`, found by name in :data:`WATERMARKS`; the
attacks aimed at watermarks register as zoo transforms (:mod:`.attacks`)."""

from .base import WATERMARKS, WatermarkKey, WatermarkScheme, watermark_entry, watermark_named
from .deepsigns import DeepSigns
from .backdoor import Backdoor
from .csp import CSP
from .usp import USP
from . import attacks  # noqa: F401  (registers the zoo transforms aimed at watermarks)

__all__ = ["Backdoor", "CSP", "DeepSigns", "USP", "WATERMARKS", "WatermarkKey", "WatermarkScheme", "watermark_entry", "watermark_named"]
