"""Result type shared by the solvers and their references."""
from __future__ import annotations

from typing import NamedTuple

import torch


class SolverResult(NamedTuple):
    """Output of a pseudo-label solver.

    y: pseudo-labels, the shape of sigma. Per problem (scalars for one problem, (B,) for a
    batch): iterations run, objective value, Frank-Wolfe gap (a certificate: >= f(y) - f*,
    0 exactly at the optimum), and whether ``criterion`` was met.
    """

    y: torch.Tensor
    iterations: torch.Tensor
    objective: torch.Tensor
    fw_gap: torch.Tensor
    converged: torch.Tensor
    criterion: str
