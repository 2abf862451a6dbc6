"""The suspect zoo: transforms a thief applies to a stolen model, and independently trained negatives."""

from .base import Transform
from .distill import Distill
from .extract import Extract
from .finetune import FineTune, Retrain
from .independent import Independent
from .prune import FilterPrune, FinePrune, WeightPrune

#: Every transform by its ``kind`` (the name used in zoo specs and provenance).
TRANSFORMS: dict[str, type[Transform]] = {t.kind: t for t in (FineTune, Retrain, WeightPrune, FilterPrune, Distill, Independent, FinePrune, Extract)}

__all__ = ["Distill", "Extract", "FilterPrune", "FinePrune", "FineTune", "Independent", "Retrain", "TRANSFORMS", "Transform", "WeightPrune"]
