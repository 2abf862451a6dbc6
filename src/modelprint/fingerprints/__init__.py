"""Fingerprint schemes: each one file, all behind :class:`FingerprintScheme`."""

from .base import FingerprintScheme, FingerprintSet, VerificationResult, scheme_for
from .saliency import SaliencyFingerprint

__all__ = ["FingerprintScheme", "FingerprintSet", "SaliencyFingerprint", "VerificationResult", "scheme_for"]
