"""The registry of fingerprint schemes by name: a leaf, so that the set file format and the interface both read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import IntegrityError

if TYPE_CHECKING:
    from .base import FingerprintScheme

#: Every scheme class by its ``name``; a subclass of :class:`~modelprint.fingerprints.base.FingerprintScheme` that
#: sets ``name`` is registered when its module is imported.
SCHEMES: dict[str, type["FingerprintScheme"]] = {}


def scheme_class(name: Any) -> type["FingerprintScheme"]:
    """The scheme registered under ``name``.

    Raises:
        IntegrityError: no scheme has that name.
    """
    if not isinstance(name, str) or name not in SCHEMES:
        raise IntegrityError(f"fingerprint set made by unknown scheme {name!r}")
    return SCHEMES[name]
