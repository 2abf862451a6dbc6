"""The suspect zoo: transforms a thief applies to a stolen model."""

from .base import Transform
from .finetune import FineTune
from .prune import WeightPrune

__all__ = ["FineTune", "Transform", "WeightPrune"]
