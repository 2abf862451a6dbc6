"""The signature a builder object declares: the keyword arguments a model file's ``arch_kwargs`` may give it
(:func:`~modelprint.checks.models.check_spec_values` reads it)."""

from __future__ import annotations

import inspect
from typing import Any


def keyword_signature(*names: str, **defaults: Any) -> inspect.Signature:
    """Keyword-only parameters ``names`` (required) then ``defaults`` (optional, with their default)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature([inspect.Parameter(n, keyword) for n in names]
                             + [inspect.Parameter(n, keyword, default=v) for n, v in defaults.items()])
