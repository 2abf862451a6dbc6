"""URLs as they may be shown: without the credentials a user put in them.

A server URL may carry a user name and password (``http://user:pass@host``) or a token in its query string. The
client keeps the URL it was given for its requests; everything that is shown or stored (records, journals, the
suspect's identity, error messages, logs) goes through :func:`redact_url` or :func:`redact_text` first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

#: ``scheme://userinfo@`` inside any text: the userinfo is what :func:`redact_text` removes.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s]*@")


def redact_url(url: str) -> str:
    """``url`` without its user name, password, query string and fragment.

    Args:
        url: e.g. ``http://user:pass@host:8000/base?token=abc``.

    Returns:
        e.g. ``http://host:8000/base``; a string that is not a URL is returned with any ``user:pass@`` removed.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if not parts.scheme or not parts.netloc:
        return redact_text(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every URL in it removed (for error messages that quote a URL).

    Args:
        text: any text, e.g. an exception's message.

    Returns:
        The text, ``http://user:pass@host`` written as ``http://host``.
    """
    return _USERINFO.sub(lambda match: match.group("scheme"), text)
