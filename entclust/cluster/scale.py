"""What a fit at scale needs, apart from the estimator: the memory plan said before any work,
the sizes of the large-K start (the ``"balanced"`` initialisation), the head evaluated over blocks
of rows (never N x K at once), the global objective of the column-sum pseudo-labels, and a
process's shard of the rows under ``torch.distributed``."""
from __future__ import annotations

import math

import torch
from torch import nn

from .._dist import all_reduce
from ..nn import ColumnMemory
from ..ops import argmax_rows
from .centroids import BLOCK, block_rows, linear_top_entries, top_label, top_span


class MemoryPlanError(MemoryError, ValueError):
    """A fit that cannot fit in memory, said before any work (a ValueError too: the CLI's exit 2)."""


def fit_memory(n: int, d: int, k: int, mode: str, init: str, runs: int) -> tuple[int, str]:
    """Estimated peak bytes of a fit above the input, and what dominates them. The features are
    copied once as float32 (N D 4 bytes). Global labels keep K column sums and work over blocks
    of 2^22 entries; the per-batch mode's objective and history take the head over all points at
    once, an N x K matrix several times over (logits, softmax, float64 pseudo-labels: ~24 bytes an
    entry, per restart for the history)."""
    features = 4 * n * d
    if mode == "global":
        sample = 4 * d * min(n, max(SEED_SAMPLE(k), ROUND_SAMPLE(k))) if init in ("balanced", "kmeans", "kmeans++") else 0
        return features + sample + 8 * 4 * BLOCK + 32 * k * d, "blocks of the head's logits"
    return features + 24 * n * k + 4 * n * k * (runs - 1), f"the N x K pseudo-labels of the per-batch objective ({n} x {k})"


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def plan_memory(n: int, d: int, k: int, mode: str, init: str, runs: int, device) -> None:
    """Raise :class:`MemoryPlanError` at once, in one line, when the fit's estimated peak exceeds the
    memory this machine has free (CPU fits; a GPU's own limit is its allocator's to report)."""
    if torch.device(device).type != "cpu":
        return
    need, what = fit_memory(n, d, k, mode, init, runs)
    free = available_bytes()
    if free is None or need <= 0.9 * free:
        return
    hint = ("pseudo_labels='global' keeps K column sums instead (O(K D) memory)" if mode != "global"
            else "use fewer points per process (torch.distributed) or a smaller float32 copy of the features")
    raise MemoryPlanError(f"EntropyClustering: this fit needs about {need / 2**30:.1f} GiB for {what}, and "
                          f"{free / 2**30:.1f} GiB are free; {hint}")


class Shard:
    """This process's rows of the training set: all of them (``group`` None), or a contiguous
    shard of a ``torch.distributed`` group, rank r holding global rows ``offset ... offset + n``."""

    def __init__(self, n: int, group):
        self.n, self.group = n, group
        if group is None:
            self.world, self.offset, self.total = 1, 0, n
            return
        import torch.distributed as dist

        self.world, rank = dist.get_world_size(group), dist.get_rank(group)
        sizes = torch.zeros(self.world, dtype=torch.int64)
        sizes[rank] = n
        sizes = all_reduce(sizes, group).tolist()
        self.offset, self.total = sum(sizes[:rank]), sum(sizes)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks (a new tensor)."""
        return all_reduce(t, self.group) if self.group is not None else t.clone()

    def local(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's part of the global row indices ``rows``, as local indices, in order."""
        if self.group is None:
            return rows
        mine = (rows >= self.offset) & (rows < self.offset + self.n)
        return rows[mine] - self.offset

    def gather_rows(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The global rows ``rows`` of the features on every rank, on the features' device: each
        rank fills in its own, the rest are zeros, and a sum over the ranks completes them exactly."""
        rows = rows.to(features.device)
        if self.group is None:
            return features[rows]
        out = features.new_zeros(len(rows), features.shape[1])
        mine = (rows >= self.offset) & (rows < self.offset + self.n)
        out[mine] = features[rows[mine] - self.offset]
        return self.sum(out)


def head_blocks(head: nn.Linear, features: torch.Tensor):
    """``(start, logits)`` of the head over blocks of rows, every block written into one reused
    buffer: a fresh 16 MB tensor per block fragments the C heap (measured: the resident size
    grew by the full N x K logits, 725 MB at N = 200 000, K = 1000)."""
    n, k = features.shape[0], head.out_features
    rows = min(block_rows(k), max(1, n))
    buffer = torch.empty(rows, k, dtype=features.dtype, device=features.device)
    weight = head.weight.detach().t()
    bias = head.bias.detach()
    for i in range(0, n, rows):
        block = features[i:i + rows]
        out = buffer[:block.shape[0]]
        torch.addmm(bias, block, weight, out=out)
        yield i, out


def distinct_rows(features: torch.Tensor, shard: Shard) -> int | None:
    """How many distinct points ``features`` holds (rows that differ project to different float64
    values on a random direction, but for chance of probability zero), over blocks of rows; None
    across processes (not counted there). Identical points get the same label, so a fit cannot
    fill more clusters than this."""
    if shard.group is not None:
        return None
    direction = torch.randn(features.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    direction = direction.to(features.device)
    rows = max(1, BLOCK // max(1, features.shape[1]))
    keys = torch.cat([features[i:i + rows].double() @ direction for i in range(0, features.shape[0], rows)])
    return int(torch.unique(keys).numel())


def head_argmax(head, features: torch.Tensor) -> torch.Tensor:
    """Each point's most probable cluster, over blocks of rows: the argmax of the logits (the first
    on ties); above ``4 SPARSE_TOP`` clusters, on the CPU in float32, the largest of the entries of
    :func:`head_top_blocks` (with AVX2 or AVX-512 their logits are never written), the numbers,
    and so the labels, that :func:`global_objective` finds in the fit."""
    labels = torch.empty(features.shape[0], dtype=torch.int64, device=features.device)
    if head.out_features > 4 * SPARSE_TOP and features.device.type == "cpu" and features.dtype == torch.float32:
        for i, values, index in head_top_blocks(head, features):
            labels[i:i + index.shape[0]] = top_label(values, index)
        return labels
    for i, logits in head_blocks(head, features):
        labels[i:i + logits.shape[0]] = argmax_rows(logits, 1)
    return labels


def head_top_blocks(head: nn.Linear, features: torch.Tensor):
    """``(start, values, index)``: the ``SPARSE_TOP`` largest logits of each row of the head and
    their classes, over blocks of rows (:func:`~entclust.cluster.centroids.linear_top_entries`, a
    span of blocks a call where its op runs)."""
    rows = block_rows(head.out_features)
    weight, bias = head.weight.detach(), head.bias.detach()
    span = top_span(head.out_features, features, weight)
    for s in range(0, features.shape[0], span):
        values, index = linear_top_entries(features[s:s + span], weight, bias, SPARSE_TOP)
        for i in range(s, s + values.shape[0], rows):
            yield i, values[i - s:i - s + rows], index[i - s:i - s + rows]


# "auto" pseudo-labels are global below this many points per cluster in a batch.
GLOBAL_BELOW = 20
# per-batch pseudo-labels, epochs=None: SGD steps the schedule aims at, STEPS_PER_CLUSTER for each of max(K, 10)
# clusters, in at most MAX_EPOCHS passes (the papers' 50 up to N = 10 000 points at batch 250 and K <= 10;
# one pass from N = 500 000). What the fit reaches is set by its steps, not its passes: 800 steps reached the
# objective of 40 000 on 200 000 Gaussian points (K = 10), 2000 steps that of 20 000 on 20 noisy copies of 5000
# MNIST digits; with per-batch labels forced at K = 50, 2000 steps stopped at 33 % ACC and 10 000 reached the
# 51.7 % of 20 000 (benchmarks/epochs_by_size.py, docs/guides/clustering.md).
STEPS_PER_CLUSTER = 200
MAX_EPOCHS = 50
# n_init > 1 with per-batch labels: the restarts are compared on the objective over this many points (the
# same for every run; all of a smaller set), and the kept one's is then taken over all points. At
# N = 10^6, K = 10 the ten objectives over all points took about 9 s of a 27.7 s fit (docs/guides/clustering.md).
SELECT_SAMPLE = 100_000
# init "balanced" (the large-K start): k-means++ seeds drawn from SEED_SAMPLE(K) points, then at most
# CENTROID_ROUNDS rounds of self-labeled centroids over ROUND_SAMPLE(K) points (all of a smaller
# set), the pseudo-labels sparse (the SPARSE_TOP nearest centres of each point) above 4 SPARSE_TOP
# clusters. Measured in benchmarks/large_k_design.py and benchmarks/bench_large_k.py (README, "Large K").
SEED_SAMPLE = lambda k: max(10000, 2 * k)  # noqa: E731
ROUND_SAMPLE = lambda k: max(20000, 20 * k)  # noqa: E731
CENTROID_ROUNDS = 30
SPARSE_TOP = 64
ROUND_ENTRIES = 3e9  # points x clusters over all rounds (6 rounds of 100 000 points at K = 5000: ~27 s on 2 cores)
ROUND_PASSES = 1.6  # or, where more, the entries of this many passes over all N points (8 rounds at N = 10^6, K = 10^4)


def default_epochs(n: int, batch_size: int, k: int) -> int:
    """The per-batch mode's epochs for ``epochs=None``: enough passes over ``n`` points in batches of
    about ``batch_size`` for ``STEPS_PER_CLUSTER * max(k, 10)`` SGD steps, between 1 and MAX_EPOCHS."""
    batches = max(1, round(n / batch_size))  # as the epoch loop splits them (near_equal_batches)
    return min(MAX_EPOCHS, max(1, math.ceil(STEPS_PER_CLUSTER * max(k, 10) / batches)))


def select_sample(n: int, several: bool, rng, device) -> torch.Tensor | None:
    """The rows that compare several restarts of the per-batch mode (``several``), SELECT_SAMPLE of the
    ``n`` points drawn with their own generator (seeded from ``rng``, a RandomState: the runs' draws stay
    as they were), or None: all points."""
    if not several or n <= SELECT_SAMPLE:
        return None
    draw = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
    return torch.randperm(n, generator=draw)[:SELECT_SAMPLE].to(device)


def keep_best(runs, objective, features: torch.Tensor, probe: torch.Tensor | None):
    """The run of ``runs`` (``(head, history)`` pairs) with the lowest ``objective(head, rows) ->
    (value, labels or None)`` over the rows ``probe`` of ``features`` (all when None), and then that
    run's objective over all of them: ``(value, head, history, labels)``."""
    best = None
    for head, history in runs:
        with torch.no_grad():
            value, labels = objective(head, features if probe is None else features[probe])
        if best is None or value < best[0]:
            best = (value, head, history, labels)
    value, head, history, labels = best
    if probe is not None:
        with torch.no_grad():
            value, labels = objective(head, features)
    return value, head, history, labels


def centroid_rounds(m: int, k: int, n: int | None = None) -> int:
    """Rounds of self-labeled centroids over m of the n points: CENTROID_ROUNDS where a round is
    cheap, fewer where m K is large, so that the start costs a bounded number of point-cluster
    entries, ROUND_ENTRIES or ROUND_PASSES passes over all n points, whichever is more (the final
    labels cost a pass: the start grows with it, as MiniBatchKMeans's passes do); at least 5, as
    merged clusters are split after each round but the last two."""
    budget = max(ROUND_ENTRIES, ROUND_PASSES * (n or m) * k)
    return int(min(CENTROID_ROUNDS, max(5, budget // max(1, m * k))))


def global_objective(memory: ColumnMemory, head: nn.Linear, features: torch.Tensor, shard: Shard, lam: float,
                     gamma: float, progress=None) -> tuple[float, torch.Tensor]:
    """The objective of global pseudo-labels on all points, and each point's cluster, in one pass:
    ``mean_i H(sigma_i, y_i) + lam KL(u || columns / N) + gamma ||v||^2``, each row's ``y`` solved
    against the final column sums (held fixed), over blocks of rows; above ``4 SPARSE_TOP``
    clusters on each row's ``SPARSE_TOP`` largest logits (sigma renormalised over them).
    ``progress`` (:class:`entclust._loop.Progress` over the points) is told each block's rows."""
    from ..losses import margin_penalty, reverse_cross_entropy, strong_fairness

    sparse = head.out_features > 4 * SPARSE_TOP
    tiny = torch.finfo(torch.float32).tiny
    labels = torch.empty(features.shape[0], dtype=torch.int64, device=features.device)
    ce = torch.zeros((), dtype=torch.float64, device=features.device)  # summed there: no sync per block
    if sparse:
        for i, values, index in head_top_blocks(head, features):
            labels[i:i + index.shape[0]] = top_label(values, index)
            y = memory.solve_fixed_sparse(values, index).clamp_min_(tiny)
            ce -= (torch.softmax(values, -1) * torch.log(y)).sum(dtype=torch.float64)
            if progress is not None:
                progress.update(steps=index.shape[0])
    else:
        for i, logits in head_blocks(head, features):
            labels[i:i + logits.shape[0]] = argmax_rows(logits, 1)
            y = memory.solve_fixed(logits).to(logits.dtype).clamp_min_(tiny)
            ce += reverse_cross_entropy(logits, y, reduction="sum", validate=False).double()
            if progress is not None:
                progress.update(steps=logits.shape[0])
    ce = float(shard.sum(torch.tensor([float(ce)], dtype=torch.float64)))
    fair = float(strong_fairness(memory.y_bar().unsqueeze(0), memory.prior, validate=False))
    return ce / shard.total + lam * fair + gamma * float(margin_penalty(head)), labels
