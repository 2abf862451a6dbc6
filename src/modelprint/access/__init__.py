"""How a scheme reaches a suspect: a white-box model or a black-box prediction function.

Schemes state the capability they need; they receive an access object at call time and fail early with a clear
message when it cannot do what they need. A black-box access counts every image it sends, retries included, and
never sends more than its query budget allows; with a query journal it logs every batch and answers images it was
already asked from the journal, so an interrupted verification resumes without asking the suspect again. The
journal is bound to the fingerprint set and the suspect (a journal of another one is refused) and locked while the
access lives. A suspect known by its file's SHA-256 is never answered from a journal: every answer is computed
again and a journalled one that differs refuses the journal. A suspect that is not identified by its content (a
server, a function) is *probed* before an earlier run's answers are used: a random sample of the journalled images
is asked again and must be answered as recorded (:func:`probe_count` says how many; :meth:`BlackBox.confirm_resumed`
asks more once the verdict's margin is known, see docs/evidence.md).
"""

from __future__ import annotations

from ..probing import PROBE_CATCH, PROBE_FRACTION, default_spliced, probe_count, tolerance_cap
from .blackbox import BlackBox, http_identity
from .capabilities import BLACK_BOX, LABELS, PROBE_TOLERANCE, SCORES, TOP_K, WHITE_BOX, Access
from .whitebox import WhiteBox
from .resume import RECOMPUTE_TOLERANCE

__all__ = ["BLACK_BOX", "LABELS", "PROBE_CATCH", "PROBE_FRACTION", "PROBE_TOLERANCE", "RECOMPUTE_TOLERANCE", "SCORES",
           "TOP_K", "WHITE_BOX", "Access", "BlackBox", "WhiteBox", "default_spliced", "http_identity", "probe_count", "tolerance_cap"]
