"""entclust: fused losses and pseudo-label solvers for discriminative entropy clustering."""
from ._build import available_cpu_capabilities, build_info, cpu_capability, set_cpu_capability, use_cpu_capability
from .losses import (
    collision_cross_entropy,
    margin_penalty,
    mi_loss,
    renyi_entropy,
    reverse_cross_entropy,
    shannon_entropy,
    strong_fairness,
    weak_fairness,
)
from . import data, methods, metrics
from .estimator import EntropyClustering
from .metrics import adjusted_rand_index, clustering_accuracy, normalized_mutual_info
from .modules import CollisionCrossEntropyLoss, ReverseCrossEntropyLoss, SelfLabeling, SelfLabelingLoss
from .results import SolverResult
from .solvers import (
    dual_newton_rce,
    em_cce,
    em_rce,
    fw_gap,
    newton_rce,
    objective,
    pgd_cce,
    project_simplex,
    sinkhorn_knopp,
)

__version__ = "0.1.0"

__all__ = [
    "build_info",
    "cpu_capability",
    "available_cpu_capabilities",
    "set_cpu_capability",
    "use_cpu_capability",
    "reverse_cross_entropy",
    "collision_cross_entropy",
    "strong_fairness",
    "weak_fairness",
    "mi_loss",
    "renyi_entropy",
    "shannon_entropy",
    "margin_penalty",
    "ReverseCrossEntropyLoss",
    "CollisionCrossEntropyLoss",
    "SelfLabelingLoss",
    "SelfLabeling",
    "EntropyClustering",
    "clustering_accuracy",
    "normalized_mutual_info",
    "adjusted_rand_index",
    "em_rce",
    "em_cce",
    "dual_newton_rce",
    "newton_rce",
    "pgd_cce",
    "project_simplex",
    "sinkhorn_knopp",
    "objective",
    "fw_gap",
    "SolverResult",
]
