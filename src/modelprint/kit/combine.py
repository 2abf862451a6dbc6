"""One verdict from several fingerprint sets, with a stated false-positive rate.

Each set of a kit scores the suspect; the owner's *null models* (independently trained models that no scheme learnt
from or was calibrated on) were scored by the same sets when the kit was made. The schemes' scores are dependent
(the same independent model can look alike to several of them), so their p-values are not combined as if they were
independent (Fisher's rule would overstate the evidence) nor by a Bonferroni bound (with K null models no empirical
p-value falls below 1/(K + 1), and m of them multiplied by m would never reach 0.05 with K = 20). The rule here is a
permutation test of the minimum rank, exact under any dependence between the schemes:

1. Pool the suspect with the K null models. For each component c (a set in the mode it was verified in), the rank
   of model i is ``r_c(i) = #{k in pool: z_c(k) >= z_c(i)}``: 1 for the highest score, ties sharing the worse rank.
2. A model's statistic is its best rank over the components, ``T(i) = min_c r_c(i)``.
3. ``p_rank = #{i in pool: T(i) <= T(suspect)} / (K + 1)``.

If the suspect is an independent model exchangeable with the null models, every ordering of the pool is equally
likely, so ``P(p_rank <= alpha) <= alpha`` whatever the dependence between the components: the false-positive rate
of the verdict ``p <= alpha`` is at most alpha. The smallest value is ``1 / (K + 1)`` (the suspect ranks first on some
component and no null model ranks first anywhere), so K >= 19 null models are needed for alpha = 0.05.

Components with an exact p-value of their own (a watermark's binomial or sign test) need no null models. When a kit
holds both kinds, the groups (the rank test, and each exact test) are combined by Bonferroni over the groups:
``p = min(1, G * min_g p_g)``, valid under any dependence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from ..errors import InputError


@dataclass(frozen=True)
class CombinedVerdict:
    """The combined verdict of a kit on one suspect.

    Attributes:
        p_value: the combined p-value (see the module's docstring).
        alpha: the false-positive rate asked for.
        pirated: ``p_value <= alpha``.
        p_rank: the rank test's p-value over the components with null scores (None when there are none).
        exact: the exact p-values of the other components, by name.
        ranks: the suspect's rank per component (1 = above every null model).
        null_models: K, the number of null models every rank component was scored on.
        floor: the smallest p-value the kit can give.
        groups: G, the number of groups combined by Bonferroni.
        rule: how the p-value was computed, in words.
    """

    p_value: float
    alpha: float
    pirated: bool
    p_rank: float | None
    exact: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)
    null_models: int = 0
    floor: float = 1.0
    groups: int = 1
    rule: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _finite_scores(values: Sequence[float], what: str) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{what}: scores must be finite numbers, got {v!r}")
        out.append(float(v))
    return out


def rank_p_value(suspect: Mapping[str, float], null: Mapping[str, Sequence[float]]) -> tuple[float, dict[str, int], int]:
    """The minimum-rank permutation p-value of the suspect against the null models.

    Args:
        suspect: the suspect's score per component.
        null: per component, the scores of the same K null models, in the same order of models.

    Returns:
        ``(p_rank, the suspect's rank per component, K)``.

    Raises:
        InputError: components without null scores, null lists of different lengths, or non-finite scores.
    """
    if not suspect or set(suspect) != set(null):
        raise InputError(f"the suspect's components ({', '.join(sorted(suspect))}) and the null scores' ({', '.join(sorted(null))}) differ")
    columns = {c: _finite_scores(null[c], f"null scores of {c}") for c in suspect}
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise InputError(f"every component needs the scores of the same null models (got {sorted(sizes)} of them)")
    k = sizes.pop()
    pool = {c: [*columns[c], *_finite_scores([suspect[c]], f"the suspect's score of {c}")] for c in suspect}  # suspect last
    best = [min(sum(z >= scores[i] for z in scores) for scores in pool.values()) for i in range(k + 1)]
    p = sum(t <= best[k] for t in best) / (k + 1)
    ranks = {c: sum(z >= scores[k] for z in scores) for c, scores in pool.items()}
    return p, ranks, k


def combine(suspect: Mapping[str, float], null: Mapping[str, Sequence[float]], *, exact: Mapping[str, float] | None = None,
            alpha: float = 0.05) -> CombinedVerdict:
    """The combined verdict (see the module's docstring).

    Args:
        suspect: the suspect's score per component that is judged against null models.
        null: per such component, the null models' scores (same models, same order).
        exact: p-values of components with an exact test of their own.
        alpha: the false-positive rate of the verdict.

    Returns:
        The verdict.

    Raises:
        InputError: no component at all, alpha outside (0, 1), a p-value outside [0, 1], or bad null scores.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}")
    exact = dict(exact or {})
    for name, p in exact.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise InputError(f"the exact p-value of {name} must lie in [0, 1], got {p!r}")
    if not suspect and not exact:
        raise InputError("nothing to combine: no component has a score")
    p_rank, ranks, k = rank_p_value(suspect, null) if suspect else (None, {}, 0)
    groups = (1 if suspect else 0) + len(exact)
    smallest = min([*([p_rank] if p_rank is not None else []), *exact.values()])
    p = min(1.0, groups * smallest)
    floor = 1 / (k + 1) if suspect and not exact else 0.0  # an exact test can go lower
    words = []
    if suspect:
        words.append(f"minimum-rank permutation test over {len(suspect)} component(s) against {k} null models (exact under any dependence; floor 1/{k + 1})")
    if exact:
        words.append(f"{len(exact)} exact test(s)")
    rule = " and ".join(words) + (f", Bonferroni over {groups} groups" if groups > 1 else "")
    return CombinedVerdict(p_value=float(p), alpha=float(alpha), pirated=bool(p <= alpha), p_rank=p_rank, exact=exact, ranks=ranks,
                           null_models=k, floor=float(floor), groups=groups, rule=rule)
