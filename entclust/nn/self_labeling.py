"""``SelfLabeling``: the papers' batch version of self-labeling as one loss module."""
from __future__ import annotations

import json

import torch
from torch import nn

from .. import solvers
from .._dist import all_reduce
from .._warn import warn_user
from ..ops import argmax_rows, softmax_double
from ..ops.checks import check_tensor
from ..solvers.sharded import em_rce_block_
from .losses import SelfLabelingLoss
from .memory import ColumnMemory
from .pseudo_labels import (DEFAULT_MAX_ITER, DEFAULT_TOL_GAP, DEFAULT_TOL_PROGRESS, SOLVER_FUNCTIONS, SOLVERS, solve_op,
                            solver_kwargs)


class SelfLabeling(nn.Module):
    """Self-labeling in one line of a training loop (the papers' "batch version"): for each
    batch of logits, solve the pseudo-labels on the detached predictions with a fused solver,
    then return the :class:`SelfLabelingLoss` for those labels (docs/maths.md, "Training objectives").

    ``y = argmin_y (1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar)`` with ``sigma = softmax(logits)``
    held fixed, ``CE`` reverse (``method="rce"``) or collision (``"cce"``) cross-entropy, solved by
    ``solver`` (``"em"``; for RCE also ``"newton"`` and the exact ``"dual_newton"``; for CCE also
    ``"newton"``, interior-point, and ``"pgd"``) from ``y = sigma`` (warm start). The solve runs in float64 with the fused kernels on
    the logits' device. The returned loss is
    ``mean_i CE(sigma_i, y_i) + lam KL(u || y_bar) + prediction_fairness KL(u || sigma_bar)
    + gamma ||v||^2``; its gradient reaches the logits (and the head when ``gamma > 0``), not y.

    ``prediction_fairness`` (default 0.5 per batch, 0 with ``n_points``; 0 is the papers'
    objective) is strong fairness on the network's own mean prediction ``sigma_bar``. Why: the
    y-step meets ``KL(u || y_bar)`` for a class the network has stopped predicting by spreading
    thin mass over many points, and the reverse-CE gradient in that class's logit,
    ``sigma_k (-ln y_k - H)``, vanishes with ``sigma_k``, so the class never returns (measured,
    a small CNN on digit images lost 1 to 6 of 10 classes in every seed). The gradient of
    ``KL(u || sigma_bar)`` in class k's logits scales as ``sigma_ik / sigma_bar_k`` and does not
    fade. With y = sigma the objective is the MI loss with fairness weight ``lam +
    prediction_fairness``; the y-step is unchanged.

    **When a solve stops.** The certificate of the labels (:attr:`SolverResult.gap`: the duality
    gap, or the Frank-Wolfe gap where that is smaller) bounds how far their objective is
    from the optimum. By default a per-batch solve stops, within ``max_iter = 1000`` iterations,
    when its relative gap ``gap / (1 + |objective|)`` is ``<= tol_gap = 1e-2`` or when its
    gap is ``<= tol_progress = 0.5`` times the decrease of the objective since the start (every
    solver, one rule: :class:`entclust.solvers` ``tol_gap``/``tol_progress``): the labels then made
    at least two thirds of the best decrease from ``y = sigma``, an inexact block step of the
    training's alternating descent that keeps a fixed share of the exact one. EM meets it on
    ordinary batches (250 x 10, logits ``3 N(0, 1)``, ``lam = 100``: at the first check, 25
    iterations) and on the confident batches of a trained linear head on digits (also at the first
    check: the rule holds after 12 to 23 iterations, docs/guides/clustering.md); a solve that does
    not is one that really failed, and is counted and warned of. For collision CE the rule keeps
    the decrease, not the labels' shape: its optimum is nearly one-hot and EM stops (after 25 to 50
    iterations on those batches) with labels about as soft as sigma (docs/guides/clustering.md);
    ``solver="newton", tol_gap=1e-6`` (interior point, ~20 ms a 250 x 10 batch) gets the optimum's. ``tol_progress=0.1``
    asks for 91 % of the best decrease, ``tol_gap`` alone for a certified gap, ``tol`` alone for
    the solvers' step criterion ``max|y_t - y_{t-1}| <= tol`` (``tol=1e-10, max_iter=100`` was the
    default until December 2026; EM rarely met it, and the module warned each epoch).

    Call: ``loss = criterion(logits, head=None)`` or, with ``return_labels=True``,
    ``loss, y = criterion(logits, return_labels=True)``. The last solve's
    :class:`~entclust.SolverResult` is kept in ``criterion.last_result``, and running counts in
    ``criterion.stats``: ``solves``, ``unconverged`` (solves that stopped before their criterion),
    ``max_gap`` (the largest certificate seen) and ``empty_clusters`` (classes that no row
    has predicted, argmax sigma, since the last ``reset_stats()``: call it at each epoch's start
    for the epoch's count). ``on_unconverged`` says what an unconverged solve
    does: ``"warn"`` (default; one RuntimeWarning per module, the count keeps growing),
    ``"raise"`` (RuntimeError) or ``"ignore"``. ``reset_stats()`` starts the counts again.

    **Global pseudo-labels** (``n_points=N``, method "rce" with solver "em"): for large K a
    batch of a few hundred rows cannot spread over K classes, so per-batch column sums are noise
    and classes die. With ``n_points`` the fairness term is over all N points, kept as their K
    column sums in a :class:`ColumnMemory` (:attr:`memory`; no row of labels is stored): each
    batch's rows get ``max_iter`` EM steps (default 3, from the current sigma like the per-batch
    solve) against the column sums of the other points, ``c = lam N``, and then replace the
    batch's share of the sums. A point not yet seen counts as ``y = u``. With ``group`` (a
    ``torch.distributed`` process group, each rank passing ``n_points`` = its own shard's size)
    the blocks' column sums are all-reduced each step: one K-vector of float64 per step and rank.
    ``index=`` (the rows' dataset indices) is accepted and checked, and no longer needed.

    Arguments after ``lam`` are keyword-only (``SelfLabeling("rce", 100.0, 0.01)`` used to set
    the prior to 0.01), in the order of :class:`SelfLabelingLoss`.

    Example::

        criterion = entclust.SelfLabeling("rce", lam=100.0, gamma=0.01)
        for x in loader:
            loss = criterion(model(x), head=model.fc)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    """

    def __init__(self, method: str = "rce", lam: float = 100.0, *, gamma: float = 0.0, prior=None,
                 prediction_fairness: float | None = None, solver: str = "em", max_iter: int | None = None,
                 tol: float | None = None, tol_gap: float | None = None, tol_progress: float | None = None,
                 solver_options=None, on_unconverged: str = "warn", n_points: int | None = None, group=None):
        super().__init__()
        if n_points is not None:
            if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 0:
                raise ValueError(f"n_points must be an int >= 0 (the points whose pseudo-labels are kept), got {n_points!r}")
            if method != "rce" or solver != "em":
                raise ValueError(f"global pseudo-labels (n_points) are implemented for method='rce' with solver='em', "
                                 f"got method={method!r}, solver={solver!r}")
        elif group is not None:
            raise ValueError("group needs n_points: the distributed solve runs on the global pseudo-labels")
        # EM steps of a semi-supervised batch (solve_with_known), which has no stopping rule yet
        self.semi_supervised_steps = 100 if max_iter is None else max_iter
        if max_iter is None:
            max_iter = DEFAULT_MAX_ITER if n_points is None else 3
        for name, value in (("tol_gap", tol_gap), ("tol_progress", tol_progress)):
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and 0 <= value < float("inf")):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
            if value is not None and n_points is not None:
                raise ValueError(f"{name} is a stopping rule of per-batch solves; with n_points each batch gets "
                                 f"max_iter EM steps against the global column sums")
        if tol is None and tol_gap is None and tol_progress is None and n_points is None:
            tol_gap = DEFAULT_TOL_GAP
            tol_progress = DEFAULT_TOL_PROGRESS
        if on_unconverged not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_unconverged must be 'warn', 'raise' or 'ignore', got {on_unconverged!r}")
        if method not in SOLVERS:
            raise ValueError(f"method must be 'rce' or 'cce', got {method!r}")
        if solver not in SOLVERS[method]:
            raise ValueError(f"solver must be one of {SOLVERS[method]} for method={method!r}, got {solver!r}")
        if not (isinstance(max_iter, int) and max_iter >= 0):
            raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
        if prediction_fairness is None:  # SelfLabelingLoss's 0.5 per batch (see the class doc); 0 with n_points
            prediction_fairness = 0.5 if n_points is None else 0.0
        self.loss = SelfLabelingLoss(method, lam, gamma=gamma, prior=prior, prediction_fairness=prediction_fairness)
        self.method, self.lam, self.gamma, self.solver = method, float(lam), float(gamma), solver
        self.max_iter, self.tol, self.solver_options = max_iter, tol, dict(solver_options or {})
        self.tol_gap = None if tol_gap is None else float(tol_gap)
        self.tol_progress = None if tol_progress is None else float(tol_progress)
        self.on_unconverged = on_unconverged
        self.n_points, self.group = n_points, group
        self.memory = None  # with n_points: a ColumnMemory, made at the first call (K from the logits)
        # the traced path passes the options to the solve op as text, made here (outside the trace)
        try:
            self._options_json = json.dumps(self.solver_options, sort_keys=True)
        except TypeError as err:
            raise TypeError(f"solver_options must hold numbers, strings or booleans, got {self.solver_options!r}: "
                            f"{err}") from None
        self.last_result = None
        # the counts of solves inside a torch.compile'd step (solves, unconverged, largest gap):
        # a traced graph cannot update a dict or warn, so it adds to this buffer in place
        self.register_buffer("traced_counts", torch.zeros(3, dtype=torch.float64), persistent=False)
        self.reset_stats()

    @property
    def stats(self) -> dict:
        """Running counts since the last :meth:`reset_stats`, eager and compiled solves together."""
        traced = [float(v) for v in self.traced_counts.detach().cpu()]
        return {"solves": self._stats["solves"] + int(traced[0]), "unconverged": self._stats["unconverged"] + int(traced[1]),
                "max_gap": max(self._stats["max_gap"], traced[2]), "empty_clusters": self._stats["empty_clusters"]}

    def load_stats(self, stats: dict) -> None:
        """Set the running counts (a checkpoint's :attr:`stats`)."""
        self.traced_counts.zero_()
        self._stats.update({key: stats[key] for key in self._stats if key in stats})

    def reset_stats(self) -> None:
        """Zero the running counts of :attr:`stats`; solves of a compiled step that stopped short
        of their rule since the last reset are said here (a traced graph cannot warn)."""
        traced = [float(v) for v in self.traced_counts.detach().cpu()]
        if traced[1] > 0:
            self._say_unconverged(f"SelfLabeling: {int(traced[1])} of {int(traced[0])} pseudo-label solve(s) of the "
                                  f"compiled step stopped before their stopping rule (solver={self.solver!r}, "
                                  f"max_iter={self.max_iter}, largest gap {traced[2]:.3g}). Raise "
                                  f"max_iter, or pass on_unconverged='ignore'")
        self._stats = {"solves": 0, "unconverged": 0, "max_gap": 0.0, "empty_clusters": 0}
        self.traced_counts.zero_()
        self._predicted = None  # rows predicted per class (argmax sigma) since the last reset
        self._warned = False

    def _count_predictions(self, logits: torch.Tensor) -> None:
        k = logits.shape[-1]
        counts = torch.bincount(argmax_rows(logits.detach()).reshape(-1), minlength=k)
        if self.group is not None:
            counts = all_reduce(counts, self.group)
        if self._predicted is None or self._predicted.shape[0] != k:
            self._predicted = counts
        else:
            self._predicted = self._predicted.to(counts.device) + counts
        self._stats["empty_clusters"] = int((self._predicted == 0).sum())

    def _record(self, result, logits: torch.Tensor) -> None:
        converged = torch.as_tensor(result.converged).reshape(-1)
        problems = converged.numel()
        failed = int((~converged).sum())
        gap = torch.as_tensor(result.gap, dtype=torch.float64).reshape(-1)
        self._stats["solves"] += problems
        self._stats["unconverged"] += failed
        if bool(torch.isfinite(gap).any()):
            self._stats["max_gap"] = max(self._stats["max_gap"], float(gap[torch.isfinite(gap)].max()))
        self._count_predictions(logits)
        if failed:
            self._say_unconverged(f"SelfLabeling: {failed} of {problems} pseudo-label solve(s) stopped before "
                                  f"{result.criterion!r} (solver={self.solver!r}, max_iter={self.max_iter}, largest "
                                  f"gap {float(gap.max()):.3g}); {self._stats['unconverged']} of "
                                  f"{self._stats['solves']} so far (criterion.stats). Raise max_iter, or pass "
                                  f"on_unconverged='ignore'")

    def _say_unconverged(self, message: str) -> None:
        """``on_unconverged``: raise, ignore, or warn once until the next :meth:`reset_stats`, at
        the user's line (not torch's module.py)."""
        if self.on_unconverged == "raise":
            raise RuntimeError(message)
        if self.on_unconverged == "warn" and not self._warned:
            warn_user(message)
            self._warned = True

    @property
    def batched(self) -> bool:
        """Whether ``forward`` takes ``(B, N, K)`` logits with ``reduction="none"`` (per-batch labels)."""
        return self.n_points is None

    @property
    def prior(self):
        return self.loss.prior

    @property
    def prediction_fairness(self) -> float:
        return self.loss.prediction_fairness

    def solve(self, logits: torch.Tensor):
        """The pseudo-label solve alone: a :class:`~entclust.SolverResult` for ``softmax(logits)``
        (``(N, K)`` or ``(B, N, K)``), in float64."""
        check_tensor("logits", logits)
        if logits.dim() not in (2, 3):
            raise ValueError(f"logits must have shape (N, K) or (B, N, K), got {tuple(logits.shape)}")
        sigma = softmax_double(logits)
        kwargs = solver_kwargs(self.solver, self.solver_options, self.tol, self.tol_gap, self.tol_progress,
                                self.max_iter)
        solve = getattr(solvers, SOLVER_FUNCTIONS[self.solver].format(method=self.method))
        return solve(sigma, self.prior, self.lam, validate=False, **kwargs)

    def _checked_solve(self, logits: torch.Tensor):
        result = self.solve(logits)
        self.last_result = result
        if bool(torch.isfinite(result.y).all()):
            self._record(result, logits)  # counted, and said when unconverged; a diverged solve is an error
        else:
            if not bool(torch.isfinite(logits.detach()).all()):
                raise FloatingPointError("SelfLabeling: the logits contain NaN or Inf (the network diverged?); "
                                         "no pseudo-labels can be solved for them")
            options = ", ".join(f"{k}={v!r}" for k, v in self.solver_options.items())
            raise FloatingPointError(
                f"SelfLabeling: the {self.solver!r} solve of the pseudo-labels diverged (method={self.method!r}, "
                f"lam={self.lam:g}{', ' + options if options else ''}): its labels are not finite. "
                + ("Lower solver_options['step'] or leave it unset (then a step that works is chosen)"
                   if self.solver == "pgd" else "Use solver='em', which cannot diverge"))
        return result

    def labels(self, logits) -> list[torch.Tensor]:
        """Pseudo-labels solved jointly over several micro-batches (gradient accumulation): one
        problem over all their rows, so the fairness term sees the whole accumulated batch.
        ``logits``: a list of ``(N_j, K)`` tensors (detached here); returns the list of their
        ``(N_j, K)`` float64 label blocks, to pass back as ``criterion(logits_j, y=y_j)``::

            with torch.no_grad():
                ys = criterion.labels([model(x) for x in micro_batches])
            for x, y in zip(micro_batches, ys):
                criterion(model(x), y=y).div(len(micro_batches)).backward()
        """
        if isinstance(logits, torch.Tensor) or not len(logits):
            raise TypeError("labels() takes a non-empty list of (N_j, K) logits, one per micro-batch")
        parts = [t.detach() for t in logits]
        for t in parts:
            check_tensor("logits", t)
            if t.dim() != 2 or t.shape[1:] != parts[0].shape[1:]:
                raise ValueError(f"every micro-batch must have shape (N_j, {parts[0].shape[-1]}), got {tuple(t.shape)}")
        result = self._checked_solve(torch.cat(parts))
        return list(result.y.split([t.shape[0] for t in parts]))

    def solve_with_known(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Semi-supervised pseudo-labels (Zhang & Boykov 2024 Sec. 4.4): ``logits`` ``(..., n, K)`` are a
        batch's unlabelled rows, ``targets`` ``(m,)`` the known classes of its other rows, whose y is
        clamped to one-hot. For "rce" with EM: EM steps on the unlabelled rows against the column
        sums of the clamped ones, so the fairness term sees the whole batch of ``n + m`` rows
        (``max_iter`` steps when given, else 100: this problem has no certificate yet); otherwise
        the usual solve on the unlabelled rows alone. Counted in :attr:`stats`. Returns the
        unlabelled rows' y, float64."""
        logits = logits.detach()
        if self.method != "rce" or self.solver != "em":
            result = self.solve(logits)
            self._record(result, logits)
            return result.y
        k = logits.shape[-1]
        targets = torch.as_tensor(targets, device=logits.device)
        rest = torch.bincount(targets.reshape(-1), minlength=k).to(torch.float64)
        u = self.prior if self.prior is not None else torch.full((k,), 1.0 / k, dtype=torch.float64)
        u = u.to(device=logits.device, dtype=torch.float64)
        n_total = logits.shape[-2] + targets.numel()
        problems = logits.reshape(-1, *logits.shape[-2:])
        out = []
        for problem in problems:
            sigma = torch.softmax(problem.double(), -1)
            y = sigma.clone()
            em_rce_block_(sigma, y, rest, self.lam, n_total, u, self.semi_supervised_steps)
            out.append(y)
        self._stats["solves"] += len(out)
        self._count_predictions(logits)
        return torch.stack(out).reshape(logits.shape)

    # ---- global pseudo-labels (n_points) -------------------------------------------------
    @property
    def columns(self):
        """With ``n_points``: the column sums of the global pseudo-labels, ``(K,)`` float64 (None
        before the first call)."""
        return None if self.memory is None else self.memory.columns

    def update(self, logits: torch.Tensor, index=None) -> torch.Tensor:
        """With ``n_points``: solve the batch's pseudo-labels (``max_iter`` EM steps from
        ``softmax(logits)`` against the column sums of all points, :meth:`ColumnMemory.update`),
        replace the batch's share of those sums by them, and return them ``(batch, K)``: float64
        for float64 logits, else float32. ``index`` (the rows' dataset indices) is checked when
        given and otherwise unused: no row is stored. :meth:`forward` calls it; a training loop
        that builds its own loss (e.g. a sum over ranks' rows) calls it directly."""
        if self.n_points is None:
            raise ValueError("update() needs SelfLabeling(n_points=...): the column sums are over all points")
        check_tensor("logits", logits)
        if logits.dim() != 2:
            raise ValueError(f"with n_points, logits must have shape (batch, K), got {tuple(logits.shape)}")
        if index is not None:
            index = torch.as_tensor(index, device=logits.device)
            if index.dtype not in (torch.int32, torch.int64) or index.shape != logits.shape[:1]:
                raise ValueError(f"index must hold one integer dataset index per row of logits ({logits.shape[0]}), "
                                 f"got {index.dtype} of shape {tuple(index.shape)}")
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_points):
                raise ValueError(f"index must lie in [0, n_points={self.n_points}), got values in "
                                 f"[{int(index.min())}, {int(index.max())}]")
            if torch.unique(index).numel() != index.numel():
                raise ValueError("index must not repeat a point within one batch")
        y = self.column_memory(logits.shape[1], logits.device).update(logits)
        self._stats["solves"] += 1
        self._count_predictions(logits)
        return y

    def column_memory(self, n_clusters: int, device=None) -> ColumnMemory:
        """With ``n_points``: the :class:`ColumnMemory` of the global column sums (:attr:`memory`),
        made for ``n_clusters`` classes on ``device`` if there is none yet (e.g. to load saved
        column sums into: ``criterion.column_memory(K).columns.copy_(saved)``)."""
        if self.n_points is None:
            raise ValueError("column_memory() needs SelfLabeling(n_points=...)")
        if self.memory is None:
            self.memory = ColumnMemory(n_clusters, self.n_points, self.lam, prior=self.prior, iterations=self.max_iter,
                                       group=self.group).to(device)
        elif self.memory.n_clusters != n_clusters:
            raise ValueError(f"logits have K={n_clusters} classes, the column sums {self.memory.n_clusters}")
        return self.memory

    def reset_memory(self) -> None:
        """Forget the column sums (every point unseen again)."""
        self.memory = None

    def forward(self, logits: torch.Tensor, head=None, *, y: torch.Tensor | None = None, index=None,
                return_labels: bool = False, reduction: str = "mean"):
        """The loss for ``logits``, with pseudo-labels solved on them, or ``y`` when given (e.g.
        a block of :meth:`labels`; then no solve runs, and the fairness term, a constant for
        the network, is that of this block). With ``n_points`` the global column sums are updated
        (``index``, the rows' dataset indices, is checked when given). ``(B, N, K)`` logits are
        B independent problems (one batched solve); ``reduction="none"`` returns their ``(B,)``
        losses, with ``head`` the ``(B, K, D)`` weight of their B heads (see
        :class:`SelfLabelingLoss`)."""
        if reduction != "mean" and self.n_points is not None:
            raise ValueError(f"reduction={reduction!r} needs per-batch pseudo-labels (B problems); "
                             f"with n_points there is one problem")
        if self.n_points is not None and y is None:
            full = self.update(logits, index)
            # the fairness term (a constant for the network) over all points: y_bar = columns / N
            loss = self.loss(logits, full.to(logits.dtype).clamp_min(torch.finfo(logits.dtype).tiny), head,
                             fairness_y=self.memory.y_bar().unsqueeze(0))
            return (loss, full.to(logits.dtype)) if return_labels else loss
        elif index is not None:
            raise ValueError("index is only used with n_points (global pseudo-labels)")
        elif y is None and torch.compiler.is_compiling():
            # traced: the solve is one opaque op; its bookkeeping (stats, warnings, the
            # divergence check) needs values, so it runs in eager mode only
            prior = self.prior if self.prior is not None else torch.full(
                (logits.shape[-1],), 1.0 / logits.shape[-1], dtype=torch.float64)
            full, converged, gap = solve_op(logits.detach(), prior.to(device=logits.device, dtype=torch.float64),
                                            self.lam, self.method, self.solver, self.max_iter,
                                            -1.0 if self.tol is None else float(self.tol),
                                            -1.0 if self.tol_gap is None else self.tol_gap,
                                            -1.0 if self.tol_progress is None else self.tol_progress, self._options_json)
            # counted in the graph (in place, on the buffer); said at the next reset_stats()
            counts, converged = self.traced_counts, converged.reshape(-1)
            largest = torch.nan_to_num(gap.reshape(-1).to(counts), nan=0.0).max()
            counts.copy_(torch.stack([counts[0] + converged.numel(), counts[1] + (~converged).sum().to(counts),
                                      torch.maximum(counts[2], largest)]))
        elif y is None:
            full = self._checked_solve(logits).y
        else:
            check_tensor("y", y)
            if y.shape != logits.shape:
                raise ValueError(f"y must have the shape of logits {tuple(logits.shape)}, got {tuple(y.shape)}")
            full = y.detach()
        labels = full.to(device=logits.device, dtype=logits.dtype)
        if self.method == "rce":
            # A y_ik below the dtype's range would become 0 where sigma_ik > 0 (H = +inf).
            labels = labels.clamp_min(torch.finfo(labels.dtype).tiny)
        loss = self.loss(logits, labels, head, fairness_y=full, reduction=reduction)
        return (loss, labels) if return_labels else loss

    def extra_repr(self) -> str:
        memory = f", n_points={self.n_points}" if self.n_points is not None else ""
        return (f"method={self.method!r}, lam={self.lam}, gamma={self.gamma}, "
                f"prediction_fairness={self.prediction_fairness}, solver={self.solver!r}, max_iter={self.max_iter}"
                + (f", tol_gap={self.tol_gap:g}" if self.tol_gap is not None else "")
                + (f", tol_progress={self.tol_progress:g}" if self.tol_progress is not None else "")
                + (f", tol={self.tol:g}" if self.tol is not None else "") + memory)
