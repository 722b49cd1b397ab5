"""Pseudo-label solvers (sigma fixed, optimise y): docs/maths.md, "Pseudo-label problems and solvers".

- :mod:`.em`: EM for reverse and collision CE, fused kernels, optional SQUAREM;
- :mod:`.pgd`: projected gradient descent for collision CE and the simplex projection;
- :mod:`.newton`: Newton on the primal reverse-CE problem and on its dual;
- :mod:`.barrier`: interior-point Newton for the collision-CE problem;
- :mod:`.sinkhorn`: SeLa's Sinkhorn-Knopp;
- :mod:`.certificate`: objective, Frank-Wolfe gap and duality gap; :mod:`.result`: the result type;
- :mod:`.comparison`: :func:`compare`, the solvers side by side to one relative gap.
"""
from ._problem import DEFAULT_TOL, START_MIX
from .barrier import newton_cce
from .certificate import duality_gap, fw_gap, objective
from .comparison import CCE_SOLVERS, RCE_SOLVERS, Comparison, compare
from .em import em_cce, em_rce
from .newton import dual_newton_rce, newton_rce
from .pgd import pgd_cce, project_simplex
from .result import SolverResult, relative_gap
from .sinkhorn import sinkhorn, sinkhorn_knopp
from ..ops import has_kernels

__all__ = [
    "CCE_SOLVERS", "Comparison", "DEFAULT_TOL", "RCE_SOLVERS", "START_MIX", "SolverResult", "compare",
    "dual_newton_rce", "duality_gap", "em_cce", "em_rce", "fw_gap", "has_kernels", "newton_cce", "newton_rce",
    "objective", "pgd_cce", "project_simplex", "relative_gap", "sinkhorn", "sinkhorn_knopp",
]
