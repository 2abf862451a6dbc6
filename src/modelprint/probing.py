"""How many journalled answers a resume probe asks again, and how far apart answers may be.

A probe draws k of the J answers an earlier run journalled, at random without replacement, and asks the suspect
again; a splice of s wrong answers goes unseen with probability C(J - s, k) / C(J, k). :func:`probe_count` is the
smallest k that brings that to 1 - :data:`PROBE_CATCH`; the splice size that matters is the verdict's margin
(:func:`modelprint.evidence.verification.verdict_margin`), or :data:`PROBE_FRACTION` of J when no verdict is given.
"""

from __future__ import annotations

import math

from .journal.lines import MAX_PROBE_TOLERANCE

#: The chance with which the resume probe must catch a splice of the smallest size it is sized for.
PROBE_CATCH = 0.99
#: Without a verdict whose margin is known, the probe is sized to catch a splice of this fraction of the journalled
#: answers (with :data:`PROBE_CATCH`): 44 images, or every one of fewer.
PROBE_FRACTION = 0.1
def probe_count(journalled: int, spliced: int, catch: float = PROBE_CATCH) -> int:
    """How many of ``journalled`` answers a probe must ask again, drawn at random without replacement, to find at
    least one of ``spliced`` wrong answers with probability ``catch``.

    The chance that k draws miss all of them is C(J - s, k) / C(J, k) = prod_{i<k} (J - s - i) / (J - i); the
    count is the smallest k that brings it to 1 - ``catch`` or below (J when s < 1 is impossible to bound).

    Args:
        journalled: J, the answers taken from the journal.
        spliced: s, the fewest wrong answers that matter.
        catch: the probability of finding one.

    Returns:
        k, 0 <= k <= J.
    """
    if journalled <= 0:
        return 0
    spliced = min(max(spliced, 1), journalled)
    miss, k = 1.0, 0
    while miss > 1 - catch and k < journalled:
        miss *= (journalled - spliced - k) / (journalled - k) if journalled - spliced - k > 0 else 0.0
        k += 1
    return k


def default_spliced(journalled: int) -> int:
    """The splice size the probe is sized for when no verdict's margin is known: :data:`PROBE_FRACTION` of J."""
    return max(1, math.ceil(PROBE_FRACTION * journalled))


def tolerance_cap(threshold: float | None) -> float:
    """The largest probe tolerance a set allows: a quarter of its black-box threshold (an answer moved by less
    cannot move a statistic over its threshold by itself), and never above
    :data:`~modelprint.journal.lines.MAX_PROBE_TOLERANCE`."""
    if threshold is None or not math.isfinite(threshold) or threshold == 0:
        return MAX_PROBE_TOLERANCE
    return min(MAX_PROBE_TOLERANCE, abs(threshold) / 4)



def miss_chance(journalled: int, spliced: int, probed: int) -> float:
    """The chance that ``probed`` random draws of ``journalled`` answers miss all of ``spliced`` wrong ones."""
    miss = 1.0
    for i in range(min(probed, journalled)):
        miss *= max(0.0, (journalled - max(spliced, 1) - i) / (journalled - i))
    return miss
