"""What ``modelprint protect`` makes, named by what it needs: a profile is a list of fingerprint sets (scheme and
configuration) per task, the owner's models those sets read, and the null models that calibrate the verdict.

The figures quoted in ``measured`` come from the project's own runs (docs/comparison.md, docs/metav.md, docs/kit.md);
they are printed before a profile starts, so an owner knows what the time buys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..fingerprints import SCHEMES


@dataclass(frozen=True)
class Use:
    """One fingerprint set of a kit: a registered scheme in one of its named configurations."""

    scheme: str
    configuration: str = "default"
    settings: tuple[tuple[str, Any], ...] = ()  # on top of the configuration, (name, value) pairs

    @property
    def name(self) -> str:
        return self.scheme if self.configuration == "default" else f"{self.scheme}-{self.configuration}"


@dataclass(frozen=True)
class Profile:
    """A named choice of sets for one task.

    Attributes:
        name: the profile's name (``fast``, ``strong``).
        task: the task it protects.
        uses: the sets it makes.
        measured: its measured strength, in words (where it was measured, and where it fails).
    """

    name: str
    task: str
    uses: tuple[Use, ...]
    measured: str

    @property
    def needs(self) -> str:
        """What it trains besides the null models, in words."""
        counts, size = self.owner_counts(), self.training_zoo_size()
        parts = [f"a training zoo of {size}" if size else "", f"{sum(counts.values())} helper models" if counts else ""]
        return " and ".join(p for p in parts if p) or "no helper models"

    def owner_counts(self) -> dict[str, int]:
        """The owner's helper models the sets read, by role (the most any set needs)."""
        counts: dict[str, int] = {}
        for use in self.uses:
            for role, count in SCHEMES[use.scheme].owner_models.get(use.configuration, {}).items():
                counts[role] = max(counts.get(role, 0), count)
        return counts

    def training_zoo_size(self) -> int:
        """The size of the training zoo a set learns from (0: none)."""
        return max((SCHEMES[u.scheme].configured(u.configuration, self.task).training_zoo()[0] for u in self.uses), default=0)


#: IPGuard's target classes drawn at random: least-likely ones gather on one class on digit images (class 4 took
#: 10-13 of 20 labels in each of 3 MNIST sets), and a model that answers that class to everything would match them
#: (docs/kit.md).
_SPREAD = (("target_class", "random"),)

_FAST_CLASSIFIER = ("CIFAR-10 paper zoo (ResNet-18 w16) as a kit of 20 null models: 20 of 20 pirated copies declared (16 copies of the "
                    "weights, the paper's 4 distilled ones), 0 of 20 independent models; 1 of 11 students of other distillation recipes "
                    "(docs/kit.md)")
_STRONG_CLASSIFIER = ("CIFAR-10 paper zoo as a kit of 20 null models: 20 of 20 pirated, 0 of 20 independent; 7 of 11 students of other "
                      "recipes (API thieves with hard labels, another architecture or 1000 queries, and a student of other data escape) "
                      "(docs/kit.md)")

#: The strong classifier's sets: MetaV and ConferAE, without IPGuard, whose null models reach the top of its set as
#: often as distilled copies do; in the minimum-rank test each set a null model can top costs every suspect
#: (docs/kit.md: on CIFAR-10, 27 of 31 pirated declared against 24 of 31 with IPGuard; 0 of 20 independent either way).
PROFILES: dict[tuple[str, str], Profile] = {
    ("fast", "classification"): Profile("fast", "classification", (Use("ipguard", settings=_SPREAD), Use("tafa")), _FAST_CLASSIFIER),
    ("strong", "classification"): Profile("strong", "classification", (Use("metav"), Use("conferae")), _STRONG_CLASSIFIER),
    ("fast", "regression"): Profile("fast", "regression", (Use("tafa"),),
                                    "a regressor's TAFA ARUC 0.18 (docs/comparison.md): weak; use --profile strong"),
    ("strong", "regression"): Profile("strong", "regression", (Use("metav"), Use("saliency", "owner")), "saliency 'owner' on a regressor: ARUC 0.70 / 0.74 (docs/comparison.md)"),
    ("fast", "similarity"): Profile("fast", "similarity", (Use("tafa"),),
                                    "TAFA on a face embedder: ARUC 0.34 (docs/comparison.md): weak; use --profile strong"),
    ("strong", "similarity"): Profile("strong", "similarity", (Use("metav"), Use("saliency", "owner")), "saliency 'owner' on a face embedder: ARUC 0.47 / 0.40 (docs/comparison.md)"),
}

PROFILE_NAMES = tuple(dict.fromkeys(name for name, _ in PROFILES))


def profile_named(name: str, task: str) -> Profile:
    """The profile ``name`` for ``task``.

    Raises:
        InputError: an unknown profile, or one without sets for the task.
    """
    if not isinstance(name, str) or (name, task) not in PROFILES:
        raise InputError(f"--profile {name!r}: choose one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[(name, task)]


def custom_profile(names: str, task: str) -> Profile:
    """A profile of the owner's own choice: ``"ipguard,tafa:images"`` (scheme, or scheme:configuration).

    Raises:
        InputError: an unknown scheme or configuration, a scheme that does not protect the task, or a set named twice.
    """
    uses = []
    for item in (part.strip() for part in str(names).split(",")):
        if not item:
            continue
        scheme, _, configuration = item.partition(":")
        if scheme not in SCHEMES:
            raise InputError(f"--schemes {names!r}: unknown scheme {scheme!r} (registered: {', '.join(sorted(SCHEMES))})")
        configuration = configuration or "default"
        if configuration not in SCHEMES[scheme].configurations:
            raise InputError(f"--schemes {names!r}: the {scheme} scheme has no configuration {configuration!r} ({', '.join(SCHEMES[scheme].configurations)})")
        if task not in SCHEMES[scheme].tasks:
            raise InputError(f"--schemes {names!r}: the {scheme} scheme protects {', '.join(SCHEMES[scheme].tasks)} models, not {task}")
        uses.append(Use(scheme, configuration))
    if not uses or len({u.name for u in uses}) != len(uses):
        raise InputError(f"--schemes {names!r}: name one or more sets, each once (e.g. ipguard,tafa)")
    return Profile("custom", task, tuple(uses), "a choice of the owner's: each scheme's own figures are in docs/comparison.md; the kit's are not measured")
