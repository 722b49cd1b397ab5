"""Result type shared by the solvers and their references."""
from __future__ import annotations

from typing import NamedTuple, Union

import torch

Scalars = Union[torch.Tensor, int, float, bool]


def relative_gap(fw_gap, objective):
    """``fw_gap / (1 + |objective|)``: the Frank-Wolfe gap relative to the objective's scale, with
    the 1 so that an objective near 0 (confident sigma, no fairness pull) does not divide by 0.
    The gap bounds ``f(y) - f*``, so this bounds ``(f(y) - f*) / (1 + |f(y)|)``. Works on floats
    and on tensors (per problem)."""
    if isinstance(fw_gap, torch.Tensor):
        return fw_gap / (1 + torch.as_tensor(objective, dtype=fw_gap.dtype, device=fw_gap.device).abs())
    return fw_gap / (1 + abs(objective))


class SolverResult(NamedTuple):
    """Output of a pseudo-label solver.

    ``y``: the pseudo-labels, the shape of sigma. Per problem: ``iterations`` run, ``objective``
    value, Frank-Wolfe gap ``fw_gap`` (a certificate: ``>= f(y) - f*``, 0 exactly at the optimum)
    and whether ``criterion`` was met (``converged``). For one ``(N, K)`` problem these four are
    Python numbers (int, float, float, bool); for a ``(B, N, K)`` batch, ``(B,)`` tensors.
    :attr:`relative_gap` is the certificate every solver can stop on (``tol_gap=``).
    """

    y: torch.Tensor
    iterations: Scalars
    objective: Scalars
    fw_gap: Scalars
    converged: Scalars
    criterion: str

    @property
    def relative_gap(self):
        """``fw_gap / (1 + |objective|)`` (:func:`relative_gap`), per problem."""
        return relative_gap(self.fw_gap, self.objective)

    @property
    def labels(self) -> torch.Tensor:
        """The hard assignment ``argmax_k y_ik``, the shape of ``y`` without its last dimension."""
        return self.y.argmax(-1)
