"""modelprint: prove that a suspect neural network was stolen from yours.

The core API::

    from modelprint import SaliencyFingerprint, WhiteBox, BlackBox, load_model

    target = load_model("target.safetensors")
    scheme = SaliencyFingerprint(n=100, xi=0.1)
    fingerprints = scheme.generate(target, images, labels)
    result = scheme.verify(WhiteBox(load_model("suspect.safetensors")), fingerprints)
"""

from ._version import __version__

from .access import BlackBox, WhiteBox
from .data import ImageDataset, load_data
from .errors import CapabilityError, InputError, IntegrityError, ModelprintError, QueryBudgetExceeded
from .fingerprints import FingerprintSet, SaliencyFingerprint, VerificationResult, scheme_for
from .models import ImageModel, build_model, load_model, save_model
from .gradcam import GradCAM, find_cam_layer
from .tasks import Classification, Regression, Similarity
from .evidence.verification import Verification, verify_suspect
from .watermarks import DeepSigns, WatermarkKey, WatermarkScheme


__all__ = [
    "__version__",
    "BlackBox",
    "CapabilityError",
    "DeepSigns",
    "Classification",
    "FingerprintSet",
    "GradCAM",
    "ImageDataset",
    "ImageModel",
    "InputError",
    "IntegrityError",
    "ModelprintError",
    "QueryBudgetExceeded",
    "Regression",
    "SaliencyFingerprint",
    "Similarity",
    "Verification",
    "VerificationResult",
    "WatermarkKey",
    "WatermarkScheme",
    "WhiteBox",
    "build_model",
    "find_cam_layer",
    "load_data",
    "load_model",
    "save_model",
    "scheme_for",
    "verify_suspect",
]
