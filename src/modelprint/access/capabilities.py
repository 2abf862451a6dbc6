"""What a scheme may ask of a suspect: the capabilities and the base access. See :mod:`modelprint.access`."""

from __future__ import annotations

from ..errors import CapabilityError

WHITE_BOX = "white-box"
BLACK_BOX = "black-box"
#: The suspect's outputs are scores (probabilities, values or embeddings), not only the top-1 label.
SCORES = "scores"
#: The suspect answers its top-1 label only.
LABELS = "labels"
#: The suspect answers the scores of its top-k classes only; the others are completed (an equal share of what is left).
TOP_K = "top-k"

_MEANING = {
    WHITE_BOX: "white-box access (weights, activations, gradients)",
    BLACK_BOX: "black-box access (predictions)",
    SCORES: "output scores (probabilities, values or embeddings)",
    LABELS: "top-1 labels",
    TOP_K: "the scores of its top-k classes",
}
#: Default largest difference between a journalled answer and the probe's fresh one (output units, e.g. probability):
#: far above the float32 rounding by which one model's answers to an image in batches of different sizes differ, and
#: far below what the black-box statistic measures (thresholds of about 0.01 to 0.1).
PROBE_TOLERANCE = 1e-4



class Access:
    """Base class: what a scheme may do with a suspect."""

    capabilities: frozenset[str] = frozenset()

    def require(self, capability: str, *, who: str) -> None:
        """Raise :class:`CapabilityError` unless this access offers ``capability``."""
        if capability not in self.capabilities:
            offered = ", ".join(_MEANING.get(c, c) for c in sorted(self.capabilities)) or "nothing"
            raise CapabilityError(f"{who} needs {_MEANING.get(capability, capability)} from the suspect; {self.describe()} offers {offered}")

    def describe(self) -> str:
        """The suspect, in a few words (for messages)."""
        return type(self).__name__
