"""The checks that keep a black-box access honest about answers it did not get from the suspect this run.

A file suspect's journalled answers are computed again and must equal the journal's (:meth:`ResumeChecks._ask`);
a server's are probed: a random sample of them is asked again and must be answered as recorded, first when the
journal's answers are first used (:meth:`ResumeChecks._probe_rows`), then as many more as the verdict's margin
requires (:meth:`ResumeChecks.confirm_resumed`, sized by :mod:`modelprint.probing`). Answers that take two values
or fewer (a server rounding its scores to nothing) cannot tell models apart and are reported as such.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..errors import IntegrityError, QueryBudgetExceeded
from ..probing import default_spliced, miss_chance, probe_count
from .capabilities import LABELS

#: A file suspect's recomputed answer may differ from its journalled one by this much (float rounding of batches of
#: other sizes); more, and the journal was not written by this model.
RECOMPUTE_TOLERANCE = 1e-4


class ResumeChecks:
    """Mixed into :class:`~modelprint.access.BlackBox`: the probe of a resumed journal and the recomputation of a
    file suspect's journalled answers (state set up by its constructor)."""

    def _probe_rows(self, keys: list, candidates: list[int]) -> list[int]:
        """The rows of this call that the first probe asks again: a random sample of the journalled ones."""
        distinct = list({keys[i]: i for i in candidates}.values())
        wanted = self.probe_size or probe_count(len(self.journal or ()), default_spliced(len(self.journal or ())))
        return sorted(self._random.sample(distinct, min(wanted, len(distinct))))

    def confirm_resumed(self, spliced: int | None, *, at_least: int = 0) -> dict[str, Any] | None:
        """Probe enough of the journalled answers this run used to find a splice of ``spliced`` wrong answers with
        probability :data:`PROBE_CATCH` (images already probed count; more are drawn at random).

        Args:
            spliced: the fewest wrong journalled answers that could have changed the verdict (None: none could).
            at_least: probe at least this many of them (a replay's sample).

        Returns:
            The probe's outcome (also in :attr:`probe`), or None when no journalled answer was used.

        Raises:
            IntegrityError: a probed answer differs from the journalled one.
            QueryBudgetExceeded: the probe would exceed the budget.
        """
        used = len(self._resumed)
        if used == 0 or self.journal is None:
            return self.probe
        wanted = max(probe_count(used, spliced) if spliced is not None else 0, min(at_least, used))
        rest = [k for k in self._resumed if k not in self._probed]
        more = self._random.sample(rest, max(0, min(wanted - len(self._probed), len(rest))))
        if more:
            if self.budget is not None and self.used + len(more) > self.budget:
                raise QueryBudgetExceeded(f"the resume probe needs {len(more)} more images to check the journal's answers, which "
                                          f"would exceed the query budget ({self.used} of {self.budget} used); raise the budget")
            images = torch.stack([self._resumed[k] for k in more])
            self._probe(images, more, torch.stack([self.journal.lookup(k) for k in more]))  # type: ignore[misc]
        if self.probe is not None:
            self.probe.update(journalled=used, spliced=spliced, catch_probability=None if spliced is None else
                              round(1 - miss_chance(used, spliced, len(self._probed)), 6))
        return self.probe

    @property
    def levels(self) -> int:
        return len(self._levels)

    def _probe(self, images: torch.Tensor, keys: list[str], journalled: torch.Tensor) -> None:
        """Ask journalled images again; refuse the journal unless the suspect answers them as it did."""
        assert self.journal is not None
        worst = 0.0
        for start in range(0, len(images), self.batch_size):
            began = time.perf_counter()
            chunk, recorded = images[start : start + self.batch_size], journalled[start : start + self.batch_size]
            fresh = self._send(chunk)
            same_shape = tuple(fresh.shape) == tuple(recorded.shape)
            difference = float((fresh.double() - recorded.double()).abs().max()) if same_shape and fresh.numel() else 0.0
            if not same_shape or not difference <= self.probe_tolerance:
                found = f"differ by up to {difference:.3g} (tolerance {self.probe_tolerance:g})" if same_shape else f"have shape {list(fresh.shape[1:])}"
                raise IntegrityError(
                    f"{self.describe()} no longer answers as the journal {self.journal.path} recorded: its answers to "
                    f"{len(chunk)} journalled images drawn at random {found}; the journal belongs to another model or was "
                    "spliced, or the server is noisy (a noisy server's answers cannot be resumed): start a new journal with "
                    "--new-journal / new_journal=True (the old one is set aside), or allow a larger difference with "
                    "--probe-tolerance / probe_tolerance"
                )
            self._check_levels(torch.cat([fresh, recorded]))
            self.journal.record(keys[start : start + self.batch_size], chunk, fresh, seconds=time.perf_counter() - began,
                                tolerance=self.probe_tolerance)
            worst = max(worst, difference)
        self._probed.update(keys)
        previous = (self.probe or {}).get("max_difference", 0.0)
        self.probe = {"images": len(self._probed), "max_difference": max(previous, worst), "tolerance": self.probe_tolerance}

    def _check_levels(self, answers: torch.Tensor) -> None:
        """Refuse to vouch for a resumed journal through answers that take two values or fewer (a server rounding
        its scores to nothing): they cannot tell one model from another that agrees on its labels."""
        if LABELS in self.capabilities or not answers.is_floating_point() or answers.dim() < 2 or answers[0].numel() < 2:
            return
        if torch.unique(answers).numel() <= 2:
            values = ", ".join(f"{v:g}" for v in torch.unique(answers).tolist())
            raise IntegrityError(
                f"{self.describe()} answers scores rounded to {{{values}}}: such answers carry no more than a label and "
                "cannot distinguish this model from another that agrees with it on top-1 labels, so the journal's answers "
                "cannot be checked against it; start a new journal with --new-journal / new_journal=True"
            )

    def _ask(self, chunk: torch.Tensor, keys: list, journalled: list) -> torch.Tensor:
        """Send one batch, count its answers and journal the new ones; a file suspect's answers to images the journal
        holds must equal the journalled ones (:data:`RECOMPUTE_TOLERANCE`)."""
        began = time.perf_counter()
        answer = self._send(chunk)
        self.queries += len(chunk)
        if self.journal is None:
            return answer
        new = [i for i, known in enumerate(journalled) if known is None]
        for i, known in enumerate(journalled):
            if known is None:
                continue
            same = tuple(known.shape) == tuple(answer[i].shape)
            difference = float((known.double() - answer[i].double()).abs().max()) if same and known.numel() else 0.0
            if not same or difference > RECOMPUTE_TOLERANCE:
                found = f"by {difference:.3g}" if same else f"in shape ({list(answer[i].shape)})"
                raise IntegrityError(
                    f"the query journal {self.journal.path} does not hold {self.describe()}'s answers: image {keys[i][:12]}... "
                    f"is answered otherwise by the model now ({found}); the journal was written for another model or spliced: "
                    "start a new journal with --new-journal / new_journal=True (the old one is set aside)")
            self.rechecked += 1
        if new:
            self.journal.record([keys[i] for i in new], chunk[new], answer[new], seconds=time.perf_counter() - began)
        return answer
