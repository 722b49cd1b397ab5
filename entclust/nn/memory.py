"""Global pseudo-labels without N x K state: the column sums of every point's labels, kept as K
numbers (``ColumnMemory``)."""
from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .._dist import all_reduce
from ..ops.checks import check_tensor, prior_vector
from ..solvers.sharded import em_rce_block_, em_step_, fairness_weights


class ColumnMemory(nn.Module):
    """The fairness term of the reverse-CE pseudo-label problem over all N points,
    ``lam KL(u || y_bar)`` with ``y_bar = columns / N``, kept as the K column sums alone.

    EM couples the rows only through the column sums (docs/maths.md, "RCE problem"), so a batch's rows
    can be solved against the others' contribution ``rest`` without storing them: with every
    row kept (``4 N K`` bytes; what :class:`SelfLabeling` ``n_points`` did before it used this
    module) ``rest`` is exact; here it is
    ``columns * (1 - b / N)`` (the batch's old rows replaced by an average row's share), and
    after the solve ``columns <- rest + sum of the batch's new rows``. The total mass stays N;
    the column sums are an exponential average of the labels with a time constant of one epoch
    (after an epoch of visits the sums before it keep a share ``(1 - b/N)^(N/b) ~ 1/e``, where
    stored rows would keep none), and the state is ``K`` float64 numbers whatever N. Each visit starts from the current sigma (as the per-batch
    solve does) and runs ``iterations`` EM steps, ``c = lam N``.

    With ``group`` (``torch.distributed``) every rank passes its rows of the global batch and
    ``n_points`` is this rank's number of points; the column sums are the same on every rank
    (one all-reduce of K float64 per EM step).

    Example::

        memory = ColumnMemory(n_clusters=1000, n_points=len(dataset), lam=100.0)
        for x in loader:
            logits = head(x)
            y = memory.update(logits)                  # (b, K), no gradient
            loss = entclust.reverse_cross_entropy(logits, y.clamp_min(1e-30))
    """

    def __init__(self, n_clusters: int, n_points: int, lam: float = 100.0, *, prior=None, iterations: int = 3,
                 group=None):
        super().__init__()
        for name, value, low in (("n_clusters", n_clusters, 1), ("n_points", n_points, 0), ("iterations", iterations, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not (isinstance(lam, (int, float)) and lam >= 0 and lam == lam and lam != float("inf")):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        self.n_clusters, self.n_points, self.lam, self.iterations, self.group = n_clusters, n_points, float(lam), iterations, group
        u = prior_vector(prior, n_clusters, torch.zeros(1, dtype=torch.float64))
        self.n_total = int(all_reduce(torch.tensor([float(n_points)], dtype=torch.float64), group))
        if self.n_total < 1:
            raise ValueError("n_points: the problem has no points on any rank")
        self.register_buffer("prior", u)
        self.register_buffer("columns", self.n_total * u.clone())  # unseen points count as y = u

    def reset(self) -> None:
        """Every point unseen again (``columns = N u``)."""
        self.columns.copy_(self.n_total * self.prior)

    def _cu(self) -> torch.Tensor:
        return self.prior * (self.lam * self.n_total)

    def _weights(self, col: torch.Tensor) -> torch.Tensor:
        return fairness_weights(col, self._cu().to(col.device))

    def _rows(self, logits: torch.Tensor, batch_total: int) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("logits", logits)
        if logits.dim() != 2 or logits.shape[1] != self.n_clusters:
            raise ValueError(f"logits must have shape (b, {self.n_clusters}), got {tuple(logits.shape)}")
        _finite(logits)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        sigma = torch.softmax(logits.detach().to(dtype), dim=-1).contiguous()
        rest = self.columns * (1.0 - batch_total / self.n_total)
        y = sigma.clone()
        u = self.prior.to(sigma.device)
        em_rce_block_(sigma, y, rest.to(sigma.device), self.lam, self.n_total, u, self.iterations, self.group)
        return y, rest

    def _global_batch(self, rows: int) -> int:
        # the global batch's rows (all ranks); more than N would replace more than every point's share
        total = int(all_reduce(torch.tensor([float(rows)], dtype=torch.float64), self.group))
        if total > self.n_total:
            ranks = " (n_points summed over the ranks)" if self.group is not None else ""
            raise ValueError(f"a batch of {total} rows is more than n_points: the column sums hold {self.n_total} "
                             f"points{ranks}; n_points must count every point of the dataset (with group, each "
                             f"rank's own shard)")
        return total

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> torch.Tensor:
        """Solve the pseudo-labels of a batch of rows ``(b, K)`` (this rank's part of the global
        batch) and replace the batch's share of the column sums by them. Returns ``y`` ``(b, K)``
        (float32 for float32 or lower logits, float64 for float64). A global batch of more rows
        than ``n_points`` is an error (the column sums would lose their total N)."""
        total = self._global_batch(logits.shape[0])
        y, rest = self._rows(logits, total)
        self.columns.copy_(rest.to(self.columns.device) + all_reduce(y.sum(0, dtype=torch.float64), self.group).to(self.columns.device))
        return y

    def weights(self) -> torch.Tensor:
        """The M-step's fairness weights ``c u_k / col_k`` of the current column sums (``(K,)``
        float64, ``c = lam N``; 0 for a class with no mass): what :func:`entclust.linear_self_labeling`
        solves a batch's rows against."""
        return self._weights(self.columns)

    @torch.no_grad()
    def add_columns(self, column_sums: torch.Tensor, batch_size: int) -> None:
        """Replace a batch's share of the column sums by its new pseudo-labels' column sums
        (``columns <- columns (1 - b / N) + column_sums``, ``b`` the global batch size; with
        ``group``, each rank passes its own rows' sums and size). The bookkeeping of
        :meth:`update`, for rows solved elsewhere (e.g. by :func:`entclust.linear_self_labeling`
        against :meth:`weights`, held fixed)."""
        check_tensor("column_sums", column_sums)
        if tuple(column_sums.shape) != (self.n_clusters,):
            raise ValueError(f"column_sums must have shape ({self.n_clusters},), got {tuple(column_sums.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
        sums = column_sums.detach().to(device=self.columns.device, dtype=torch.float64)
        if not bool(((sums >= 0) & torch.isfinite(sums)).all()):
            raise ValueError("column_sums must be finite and >= 0")
        total = self._global_batch(batch_size)
        self.columns.mul_(1.0 - total / self.n_total).add_(all_reduce(sums, self.group))

    @torch.no_grad()
    def solve_fixed(self, logits: torch.Tensor) -> torch.Tensor:
        """Each row's pseudo-label against the current column sums held fixed (``iterations`` EM
        steps with the weights ``c u_k / columns_k``, row by row: no coupling between the rows, so
        any split of the rows into blocks or ranks gives the same labels)."""
        check_tensor("logits", logits)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        sigma = torch.softmax(logits.detach().to(dtype), dim=-1).contiguous()
        y = sigma.clone()
        weights = self._weights(self.columns.to(sigma.device))
        for _ in range(self.iterations):
            em_step_(sigma, y, weights, delta=False)
        return y

    @torch.no_grad()
    def update_sparse(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """:meth:`update` for rows given by their ``top`` largest logits only: ``logits`` ``(b, top)``
        at the classes ``index`` ``(b, top)`` (e.g. ``torch.topk`` of the full row). sigma is
        the softmax over those entries (the mass of the other classes is dropped: at large K a
        point's prediction sits on its few nearest classes), and the EM steps run on the
        ``b x top`` entries, the column sums gathered and scattered by class. Returns ``y``
        ``(b, top)`` on the same classes. Cost ``O(b top)`` per step instead of ``O(b K)``. On the CPU
        without ``group`` the steps run in one call of a fused op, in float64 (``entclust::sparse_em_rows``)."""
        check_tensor("logits", logits)
        if logits.shape != index.shape or logits.dim() != 2:
            raise ValueError(f"logits and index must have one shape (b, top), got {tuple(logits.shape)} and "
                             f"{tuple(index.shape)}")
        _finite(logits)
        total = self._global_batch(logits.shape[0])
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        rest = self.columns.to(logits.device) * (1.0 - total / self.n_total)
        if logits.device.type == "cpu" and self.group is None:  # the fused op: all steps in one call
            y, col = ops.sparse_em_rows_kernel(logits.detach().to(dtype), index.to(torch.int64), rest,
                                               self._cu().to(rest.device), self.iterations, True)
        else:
            y, col = self._sparse_steps(logits.detach().to(dtype), index, rest)
        self.columns.copy_(col.to(self.columns.device))
        return y

    def _sparse_steps(self, logits: torch.Tensor, index: torch.Tensor, rest: torch.Tensor):
        # update_sparse's EM steps in PyTorch ops (any device; with group, all-reduced): (y, columns)
        sigma = torch.softmax(logits, dim=-1)
        flat = index.reshape(-1)

        def columns(y):
            part = torch.zeros_like(rest).index_add_(0, flat, y.reshape(-1).double())
            return rest + all_reduce(part, self.group)

        y = sigma.clone()
        col = columns(y)
        for _ in range(self.iterations):
            y = _sparse_step(sigma, y, self._weights(col)[index].to(logits.dtype))
            col = columns(y)
        return y, col

    @torch.no_grad()
    def solve_fixed_sparse(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """:meth:`solve_fixed` on rows given by their top logits at the classes ``index`` (as in
        :meth:`update_sparse`); returns ``y`` ``(b, top)``."""
        _finite(logits)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        if logits.device.type == "cpu":  # the fused op, the column sums held fixed
            return ops.sparse_em_rows_kernel(logits.detach().to(dtype), index.to(torch.int64), self.columns.cpu(),
                                             self._cu().cpu(), self.iterations, False)[0]
        sigma = torch.softmax(logits.detach().to(dtype), dim=-1)
        a = self._weights(self.columns.to(sigma.device))[index].to(dtype)
        y = sigma.clone()
        for _ in range(self.iterations):
            y = _sparse_step(sigma, y, a)
        return y

    def y_bar(self) -> torch.Tensor:
        """``columns / N``: the mean pseudo-label over all points, ``(K,)`` float64."""
        return self.columns / self.n_total

    def extra_repr(self) -> str:
        return f"n_clusters={self.n_clusters}, n_points={self.n_points}, lam={self.lam}, iterations={self.iterations}"


def _sparse_step(sigma: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    # the RCE M-step (docs/maths.md) on a row's top entries, a = the fairness weights of their classes
    ay = a * y
    return (sigma + ay) / (1.0 + ay.sum(-1, keepdim=True))


def _finite(logits: torch.Tensor) -> None:
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("ColumnMemory: the logits contain NaN or Inf (the model diverged?); no pseudo-labels can be "
                         "solved for them")


__all__ = ["ColumnMemory"]
