"""Exceptions that mean "the input is wrong", as opposed to a bug.

The CLI prints the message of any :class:`ModelprintError` as one line on stderr and exits with code 2, so every
message must make sense on its own: what was wrong, and with which file or argument.
"""

from __future__ import annotations


class ModelprintError(Exception):
    """Base class of every error caused by the user's input."""


class InputError(ModelprintError, ValueError):
    """A file, tensor or argument that cannot be used as given."""


class IntegrityError(ModelprintError):
    """A stored artefact that is not what it claims to be (modified, truncated or of another kind)."""


class CapabilityError(ModelprintError, TypeError):
    """A scheme was handed an access object that cannot do what the scheme needs."""


class QueryBudgetExceeded(ModelprintError):
    """A black-box query would exceed the budget; nothing was sent."""


class RemoteError(ModelprintError):
    """A prediction server could not be reached, or refused or garbled a request."""
