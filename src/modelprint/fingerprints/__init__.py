"""Fingerprint schemes: each one file, all behind :class:`FingerprintScheme`, found by name in :data:`SCHEMES`.

Adding a scheme: write its file (a keyword-only dataclass of settings subclassing :class:`FingerprintScheme`, with
``name``, ``modes``, ``needs`` and its ``generate``/``verify``) and import it below so that it registers.
"""

from .base import OWNER_ROLES, SCHEMES, FingerprintScheme, FingerprintSet, VerificationResult, scheme_for, scheme_named, target_identity, top1_labels
from .conferae import ConferAE
from .ipguard import IPGuard
from .ltrc import LTRC
from .metav import MetaV
from .saliency import SaliencyFingerprint
from .tafa import TAFA

#: The scheme an evaluation, `generate` and `verify` use when none is named: the project's central method.
DEFAULT_SCHEME = SaliencyFingerprint.name

__all__ = [
    "ConferAE", "DEFAULT_SCHEME", "IPGuard", "LTRC", "MetaV", "OWNER_ROLES", "SCHEMES", "FingerprintScheme", "FingerprintSet", "SaliencyFingerprint", "TAFA", "VerificationResult",
    "scheme_for", "scheme_named", "target_identity", "top1_labels",
]
