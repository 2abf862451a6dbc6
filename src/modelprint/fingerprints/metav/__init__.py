"""MetaV: an adaptive fingerprint and a meta-verifier learnt together over the owner's training zoo."""

from .scheme import MetaV

__all__ = ["MetaV"]
