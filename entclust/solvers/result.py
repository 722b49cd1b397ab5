"""Result type shared by the solvers and their references."""
from __future__ import annotations

import math
from typing import NamedTuple, Union

import torch

Scalars = Union[torch.Tensor, int, float, bool]


def relative_gap(fw_gap, objective):
    """``gap / (1 + |objective|)``: a certificate (the Frank-Wolfe or the duality gap) relative to
    the objective's scale, with the 1 so that an objective near 0 (confident sigma, no fairness
    pull) does not divide by 0. The gap bounds ``f(y) - f*``, so this bounds
    ``(f(y) - f*) / (1 + |f(y)|)``. Works on floats and on tensors (per problem)."""
    if isinstance(fw_gap, torch.Tensor):
        return fw_gap / (1 + torch.as_tensor(objective, dtype=fw_gap.dtype, device=fw_gap.device).abs())
    return fw_gap / (1 + abs(objective))


def best_gap(fw_gap, duality_gap):
    """The tighter of two certificates, per problem, ignoring a NaN one (no duality gap for the
    collision-CE problem): both bound ``f(y) - f*``, so the smaller does too. Floats or tensors."""
    if isinstance(fw_gap, torch.Tensor) or isinstance(duality_gap, torch.Tensor):
        device = (fw_gap if isinstance(fw_gap, torch.Tensor) else duality_gap).device
        return torch.fmin(torch.as_tensor(fw_gap, dtype=torch.float64, device=device),
                          torch.as_tensor(duality_gap, dtype=torch.float64, device=device))
    if math.isnan(duality_gap):
        return fw_gap
    return duality_gap if math.isnan(fw_gap) else min(fw_gap, duality_gap)


class SolverResult(NamedTuple):
    """Output of a pseudo-label solver.

    ``y``: the pseudo-labels, the shape of sigma. Per problem: ``iterations`` run, ``objective``
    value, Frank-Wolfe gap ``fw_gap`` (a certificate: ``>= f(y) - f*``, 0 exactly at the optimum),
    whether ``criterion`` was met (``converged``), and the Lagrangian ``duality_gap``
    (:func:`~entclust.duality_gap`: also ``>= f(y) - f*``, never above the Frank-Wolfe gap and far
    tighter near the optimum; NaN where the solver has none: Sinkhorn). For one ``(N, K)`` problem
    these are Python numbers (int, float, float, bool, float); for a ``(B, N, K)`` batch, ``(B,)``
    tensors. :attr:`gap` is the tighter of the two certificates and :attr:`relative_gap` the one
    every solver stops on (``tol_gap=``, ``tol_progress=``).
    """

    y: torch.Tensor
    iterations: Scalars
    objective: Scalars
    fw_gap: Scalars
    converged: Scalars
    criterion: str
    duality_gap: Scalars = math.nan

    @property
    def gap(self):
        """The certificate: the smaller of ``fw_gap`` and ``duality_gap`` (:func:`best_gap`), per problem."""
        return best_gap(self.fw_gap, self.duality_gap)

    @property
    def relative_gap(self):
        """``gap / (1 + |objective|)`` (:func:`relative_gap`), per problem."""
        return relative_gap(self.gap, self.objective)

    @property
    def labels(self) -> torch.Tensor:
        """The hard assignment ``argmax_k y_ik``, the shape of ``y`` without its last dimension."""
        return self.y.argmax(-1)
