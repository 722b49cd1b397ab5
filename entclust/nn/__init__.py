"""``nn.Module`` s: the fused losses as modules, the self-labeling objective, and
:class:`SelfLabeling`, which solves the pseudo-labels inside the loss."""
from .losses import CollisionCrossEntropyLoss, ReverseCrossEntropyLoss, SelfLabelingLoss
from .linear import LinearSelfLabeling
from .memory import ColumnMemory
from .pseudo_labels import SOLVERS
from .self_labeling import SelfLabeling

__all__ = ["ColumnMemory", "LinearSelfLabeling", "CollisionCrossEntropyLoss", "ReverseCrossEntropyLoss", "SOLVERS", "SelfLabeling", "SelfLabelingLoss"]
