"""Centroid heads for large K: k-means++ seeds, Lloyd's iterations, and self-labeled centroids
(the reverse-CE pseudo-labels with strong fairness, the centres refit to them in closed form).

A nearest-centroid softmax head ``logits_k = beta (mu_k . x - |mu_k|^2 / 2)`` is a linear head
(weight ``beta mu``, bias ``-beta |mu|^2 / 2``): the posterior of an isotropic Gaussian mixture
with equal weights and per-dimension variance ``1 / beta``. Every pass here works over blocks
of rows: no N x K matrix is ever held.
"""
from __future__ import annotations

import math
import time

import torch

from .. import ops
from ..nn import ColumnMemory

# Entries (rows x K) per block of a pass over the points (16 MB of float32).
BLOCK = 1 << 22


def block_rows(k: int) -> int:
    return max(1, BLOCK // k)


# Rows one call of the fused top-entries op takes where it runs: the blocks of a pass share its
# packed head (packing K x D weights each call was 8 % of the op at K = 10^4, 419-row blocks); the
# op's results do not depend on how the rows are split into calls.
SPAN_ROWS = 8192


def top_label(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The class of each row's largest entry (the first on ties) among its top entries
    ``(values, index)`` (:func:`linear_top_entries`): the row's largest logit, its nearest centre."""
    return index.gather(1, values.argmax(1, keepdim=True)).squeeze(1)


def top_span(k: int, x: torch.Tensor, weight: torch.Tensor) -> int:
    """Rows of one :func:`linear_top_entries` call over blocks of ``block_rows(k)``: whole blocks,
    about SPAN_ROWS of them where the op runs (its output, not logits), else one block."""
    rows = block_rows(k)
    return rows * max(1, SPAN_ROWS // rows) if _fused_top(x, weight) else rows


# multiply-adds of the candidates' distances in one k-means++ op call: about a second (the fit's
# progress lines come at most every 2 s). Each call transposes the points again (~23 ms for
# 2 * 10^5 x 64): at 2^35 that was 485 calls and ~11 s of the K = 10^5 seeding.
KPP_CALL_WORK = 2**37


def kmeans_plusplus(points: torch.Tensor, k: int, generator: torch.Generator, progress=None) -> torch.Tensor:
    """Greedy k-means++ seeds (Arthur & Vassilvitskii 2007, with the ``2 + ln k`` local trials of
    scikit-learn's version) of ``points`` ``(m, D)``, on their device: each new seed is the
    best of several candidates drawn with probability proportional to the squared distance to
    the nearest seed so far (best: lowest total squared distance). Returns ``(k, D)``. On the CPU
    the loop runs in ``entclust::kmeans_plusplus``, many seeds a call (the same draws of
    ``generator``); ``progress`` (:class:`entclust._loop.Progress`) is told the seeds done
    between calls (at K = 10^5 the seeding takes minutes on a few cores)."""
    m, d = points.shape
    trials = 2 + int(math.log(k))
    per_call = max(1, KPP_CALL_WORK // (m * d * trials))
    if not (points.device.type == "cpu" and points.dtype in (torch.float32, torch.float64)):
        return _kmeans_plusplus_steps(points, k, generator, trials, progress, per_call)
    first = int(torch.randint(0, m, (1,), generator=generator))
    draws = torch.rand((k - 1, trials), generator=generator, dtype=torch.float64)
    chosen = [torch.tensor([first])]
    d2 = (points - points[first]).square().sum(1)
    for c in range(0, k - 1, per_call):
        seeds, d2 = ops.kmeans_plusplus_kernel(points, d2, draws[c:c + per_call])
        chosen.append(seeds)
        _seeded(progress, c + 1 + seeds.numel(), k)
    return points[torch.cat(chosen)]


def _seeded(progress, done, k):
    if progress is not None and done < k:
        progress.note(f"k-means++ seeds {done}/{k}", throttle=True)


def _kmeans_plusplus_steps(points, k, generator, trials, progress=None, per_call=1000):
    # kmeans_plusplus in PyTorch ops, a few per seed (any device)
    m = points.shape[0]
    norms = points.square().sum(1)
    draw = lambda size: torch.rand(size, generator=generator, dtype=torch.float64).to(points.device)  # noqa: E731
    first = int(torch.randint(0, m, (1,), generator=generator))
    chosen = torch.empty(k, dtype=torch.int64, device=points.device)
    chosen[0] = first
    d2 = (norms - 2 * points @ points[first] + norms[first]).clamp_min(0)
    for c in range(1, k):
        cumulative = torch.cumsum(d2.double(), 0)
        candidates = torch.searchsorted(cumulative, draw(trials) * cumulative[-1]).clamp_(max=m - 1)
        dist = (norms[candidates, None] - 2 * points[candidates] @ points.T + norms).clamp_min(0)
        dist = torch.minimum(dist, d2)
        best = dist.double().sum(1).argmin()
        d2 = dist[best]
        chosen[c] = candidates[best]
        if c % per_call == 0:
            _seeded(progress, c + 1, k)
    return points[chosen]


NEAREST_TOP = 64  # entries a point keeps where nearest goes through linear_top_entries


def nearest(points: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of, and squared distance to, the nearest centre of every point ``(m,)`` each (the
    lowest index on ties). Above ``4 NEAREST_TOP`` centres, where :func:`linear_top_entries` runs
    its op (CPU, float32, AVX2 or AVX-512), the largest of ``x . mu - |mu|^2 / 2`` among each
    point's top entries, without the ``b x K`` distances; elsewhere blocks of ``torch.addmm``
    (:func:`_nearest_steps`)."""
    k = mu.shape[0]
    if not (k > 4 * NEAREST_TOP and _fused_top(points, mu)):
        return _nearest_steps(points, mu)
    labels = torch.empty(points.shape[0], dtype=torch.int64)
    d2 = torch.empty(points.shape[0], dtype=points.dtype)
    bias = -0.5 * mu.square().sum(1)
    rows = top_span(k, points, mu)
    for i in range(0, points.shape[0], rows):
        block = points[i:i + rows]
        values, index = ops.linear_top_entries_kernel(block, mu, bias, NEAREST_TOP)
        best, at = values.max(1, keepdim=True)  # (the entries are in class order: the first is the lowest)
        labels[i:i + rows] = index.gather(1, at).squeeze(1)
        d2[i:i + rows] = (block.square().sum(1) - 2 * best.squeeze(1)).clamp_min_(0)
    return labels, d2


def _nearest_steps(points, mu):
    # nearest in PyTorch ops over blocks of rows (any device; the plain baseline of the benchmarks)
    labels = torch.empty(points.shape[0], dtype=torch.int64, device=points.device)
    d2 = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
    norms = mu.square().sum(1)
    rows = block_rows(mu.shape[0])
    for i in range(0, points.shape[0], rows):
        block = points[i:i + rows]
        dist = torch.addmm(norms, block, mu.T, alpha=-2.0)  # |mu|^2 - 2 x.mu
        best, labels[i:i + rows] = dist.min(1)
        d2[i:i + rows] = (best + block.square().sum(1)).clamp_min_(0)
    return labels, d2


def lloyd(points: torch.Tensor, mu: torch.Tensor, max_iter: int = 20, tol: float = 1e-3) -> torch.Tensor:
    """Lloyd's iterations (K-means) on ``points`` ``(m, D)`` from the centres ``mu`` ``(K, D)``: each
    centre moves to the mean of its points, until at most a fraction ``tol`` of the points change
    centre. A centre that loses all its points stays where it is."""
    k = mu.shape[0]
    mu = mu.clone()
    labels = None
    for _ in range(max_iter):
        new, _ = nearest(points, mu)
        changed = points.shape[0] if labels is None else int((new != labels).sum())
        labels = new
        counts = torch.bincount(labels, minlength=k).to(points.dtype)
        sums = torch.zeros_like(mu).index_add_(0, labels, points)
        alive = counts > 0
        mu[alive] = sums[alive] / counts[alive, None]
        if changed <= tol * points.shape[0]:
            break
    return mu


def top_entries(logits: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits.topk(top, dim=1, sorted=False)``: on the CPU by the selection op
    ``entclust::top_entries`` (a sampled threshold and one compare per entry instead of a per-row
    sort; timed against torch.topk by benchmarks/bench_sparse_rows.py)."""
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64):
        return ops.top_entries_kernel(logits, top)
    return logits.topk(top, dim=1, sorted=False)


def linear_top_entries(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_entries` of the logits ``x @ weight.T + bias``: on a CPU with AVX2 (or AVX-512), in
    float32, by the op ``entclust::linear_top_entries``, which never writes the ``b x K`` logits
    (each is compared in registers as it is summed); elsewhere, and on the ``default`` CPU
    capability (SSE2 tiles lose to MKL's AVX2 product there), ``torch.addmm`` and
    :func:`top_entries`. Timed against each other by benchmarks/bench_sparse_rows.py."""
    if _fused_top(x, weight) and bias.dtype == torch.float32:
        return ops.linear_top_entries_kernel(x, weight, bias, top)
    return top_entries(torch.addmm(bias, x, weight.T), top)


def _fused_top(x: torch.Tensor, weight: torch.Tensor) -> bool:
    # where linear_top_entries runs its op
    return x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and ops.cpu_capability() != "default"


def add_sparse_sums(sums: torch.Tensor, mass: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                    block: torch.Tensor, alpha: float) -> None:
    """In place: ``sums_k += alpha sum y_ij x_i`` and ``mass_k += alpha sum y_ij`` over the entries of
    class k (``y``, ``index`` ``(b, top)``, ``block`` the points ``(b, D)``); on the CPU one pass of
    ``entclust::sparse_centre_sums_``, elsewhere a sparse K x b matrix times the block."""
    if sums.device.type == "cpu" and sums.is_contiguous() and mass.is_contiguous():
        ops.sparse_centre_sums_kernel(sums, mass, y, index, block, alpha)
    else:
        _sparse_sums_steps(sums, mass, y, index, block, alpha)


def _sparse_sums_steps(sums, mass, y, index, block, alpha):
    # add_sparse_sums in PyTorch ops (any device)
    flat = index.reshape(-1)
    mass.index_add_(0, flat, y.reshape(-1).double(), alpha=alpha)
    # y^T x with y as a sparse K x b matrix of b top entries: a third of the dense product's time
    owner = torch.arange(block.shape[0], device=block.device).repeat_interleave(index.shape[1])
    sparse = torch.sparse_coo_tensor(torch.stack([flat, owner]), y.reshape(-1).to(block.dtype),
                                     (sums.shape[0], block.shape[0]), check_invariants=False)
    sums.add_(torch.sparse.mm(sparse, block).double(), alpha=alpha)


PROBE = 20000  # points that measure the temperature and the changes of assignment between rounds


def temperature(points: torch.Tensor, mu: torch.Tensor) -> float:
    """``beta = D / mean |x - nearest mu|^2``: the inverse per-dimension variance of the points
    about their nearest centre (the first PROBE points are used)."""
    return _probe(points, mu)[1]


def _probe(points, mu) -> tuple[torch.Tensor, float]:
    labels, d2 = nearest(points[:PROBE], mu)
    return labels, points.shape[1] / max(float(d2.double().mean()), 1e-12)


def self_labeled_centroids(points: torch.Tensor, mu: torch.Tensor, lam: float, prior=None, *, rounds: int = 30,
                           tol: float = 1e-3, iterations: int = 10, updates: int = 1, top: int | None = 64,
                           progress=None) -> tuple[torch.Tensor, float, list]:
    """Centres refit to the reverse-CE pseudo-labels with strong fairness: each round, over blocks
    of the points ``(m, D)``, ``sigma = softmax(beta (x . mu - |mu|^2 / 2))``, the pseudo-labels
    ``y`` solved against the column sums of all m points (:class:`~entclust.ColumnMemory`,
    ``c = lam m``, ``iterations`` EM steps per block), and then every centre moves to the
    y-weighted mean of the points, ``mu_k = sum_i y_ik x_i / sum_i y_ik`` (the M-step Lloyd's
    algorithm makes with hard assignments), and ``beta`` to ``D / mean squared distance to the
    nearest centre``. Stops after ``rounds`` rounds, or when at most a fraction ``tol`` of the
    (first 20 000) points changed nearest centre in a round (Lloyd's test) and no centre was moved
    by the split step (:func:`_split_merged`, after each round but the last two: centres sharing a
    cluster move into clusters one centre holds alone).

    Fairness is what K-means lacks here: a centre holding two true clusters has twice the
    column mass, the y-step moves mass away from it, and the centres split it (measured on
    overlapping mixtures by ``benchmarks/large_k_design.py``). ``top``: the pseudo-labels of each
    point on its ``top`` nearest centres only (:meth:`ColumnMemory.update_sparse`), None: all K.
    ``updates``: moves of the centres per round (1: after the whole pass).
    Returns ``(mu, beta, history)``: one dict per round (seconds, the fraction of probe points
    that changed centre, the largest centre move in units of the spread, beta, centres moved by
    the split step)."""
    m, d = points.shape
    k = mu.shape[0]
    memory = ColumnMemory(k, m, lam, prior=prior, iterations=iterations).to(points.device)
    mu = mu.clone()
    assigned, beta = _probe(points, mu)
    rows = block_rows(k)
    per_update = -(-m // updates)  # points between two moves of the centres
    # the sums of y_i x_i and y_i, each block replacing an average block's share (as ColumnMemory does
    # for the column sums: an exponential average over about one pass, the initial mass m/k per centre
    # fading like it); the centres move ``updates`` times a pass (1: once, after the whole pass; moving
    # them after every block, with the column sums lagging, kept a merged cluster at K = 50 in a
    # plain-PyTorch prototype, not shipped: 92.5 % against 95.1 % ACC)
    sums = mu.double() * (m / k)
    mass = torch.full((k,), m / k, dtype=torch.float64, device=points.device)
    # both kept divided by ``scale``, the product of the decay factors so far, so a block adds its
    # share times 1 / scale instead of decaying all K x D sums (mu = sums / mass needs no scale)
    scale = 1.0
    share = m * memory.prior.to(points.device)  # each centre's mass under the prior
    closest = torch.empty(m, dtype=torch.int64, device=points.device)  # each point's nearest centre this round
    generator = torch.Generator(device=points.device).manual_seed(0)
    history = []
    sparse = top is not None and top < k  # sparse pseudo-labels: the top nearest centres of each point
    span = top_span(k, points, mu)
    for r in range(rounds):
        start = time.perf_counter()
        before = mu.clone()
        weight, bias = beta * mu, -0.5 * beta * mu.square().sum(1)  # the logits' head
        ahead, ahead_start, ahead_end = None, 0, 0  # top entries of the blocks ahead, by the head of now
        for i in range(0, m, rows):
            block = points[i:i + rows]
            scale *= 1.0 - block.shape[0] / m
            if scale < 1e-150:  # (about 350 passes) fold it in before it underflows
                sums.mul_(scale)
                mass.mul_(scale)
                scale = 1.0
            if sparse:
                if i >= ahead_end:  # whole blocks up to span rows, up to the next move of the centres
                    ahead_start = ahead_end = i
                    while ahead_end < min(m, i + span):
                        moves = (ahead_end + rows) // per_update != ahead_end // per_update
                        ahead_end = min(m, ahead_end + rows)
                        if moves:
                            break
                    ahead = linear_top_entries(points[i:ahead_end], weight, bias, top)
                values, index = (t[i - ahead_start:i - ahead_start + block.shape[0]] for t in ahead)
                closest[i:i + rows] = top_label(values, index)
                labels = memory.update_sparse(values, index)
                add_sparse_sums(sums, mass, labels, index, block, 1.0 / scale)
            else:
                logits = torch.addmm(bias, block, weight.T)
                closest[i:i + rows] = ops.argmax_rows(logits, 1)
                y = memory.update(logits)
                mass.add_(y.sum(0, dtype=torch.float64), alpha=1.0 / scale)
                sums.add_((y.T.to(block.dtype) @ block).double(), alpha=1.0 / scale)
            if progress is not None:
                progress.note(f"round {r + 1}: {i + block.shape[0]}/{m} points", throttle=True)
            if (i + rows) // per_update != i // per_update or i + rows >= m:
                mu = torch.where((mass > 0)[:, None], (sums / mass.clamp_min(1e-300)[:, None]).to(mu.dtype), mu)
                weight, bias = beta * mu, -0.5 * beta * mu.square().sum(1)
        moved = _split_merged(points, mu, sums, mass, memory.columns, share, closest, generator) if r < rounds - 2 else 0
        shift = float((mu - before).square().sum(1).max().sqrt())
        new, beta = _probe(points, mu)
        changed = float((new != assigned).double().mean())
        assigned = new
        history.append({"round": r + 1, "seconds": time.perf_counter() - start, "changed": changed,
                        "max_shift": shift * math.sqrt(beta / d), "beta": beta, "moved": moved})
        if progress is not None:
            progress.update(history[-1]["seconds"], changed=changed)
        if changed <= tol and not moved:
            break
    return mu, beta, history


SPLIT_ABOVE, SPLIT_BELOW = 1.5, 0.5  # nearest points over the prior share: a centre on two clusters / sharing one


@torch.no_grad()
def _split_merged(points, mu, sums, mass, columns, share, closest, generator) -> int:
    """Move centres that share a cluster into clusters that one centre holds alone (in place).

    Fairness cannot do it by itself: where a seed pair sits in one true cluster and another
    cluster got none, the y-step halves the pair's mass, but the pair's sigma on the far,
    merged cluster is ~0, so no mass crosses over (at K = 2000, 200 000 x 64 overlapping points,
    a k-means++ start left 106 centres holding two clusters each after the rounds converged).
    As MiniBatchKMeans's reassignment of starved centres does, pair the fullest centres (more
    than SPLIT_ABOVE times their prior share of the points they are nearest to, ``closest``) with
    the emptiest (fewer than SPLIT_BELOW times), fullest with emptiest, and move each empty one
    onto a random point of its partner's cluster; the pair's mass, column sum and centre sums are
    split evenly. (The soft masses cannot tell: strong fairness keeps them near the prior.)
    The next rounds' y-steps and centre moves separate the two. Returns the number moved."""
    counts = torch.bincount(closest, minlength=mu.shape[0])
    # a class the prior gives no mass is neither split nor moved
    ratio = torch.where(share > 0, counts.double() / share.clamp_min(1e-300), 1.0)
    full = torch.nonzero(ratio > SPLIT_ABOVE).squeeze(1)
    empty = torch.nonzero(ratio < SPLIT_BELOW).squeeze(1)
    pairs = min(full.numel(), empty.numel())
    if pairs == 0:
        return 0
    full = full[ratio[full].argsort(descending=True)[:pairs]]
    empty = empty[ratio[empty].argsort()[:pairs]]
    # a random member of each full cluster: the points sorted by nearest centre, one offset per cluster
    order = closest.argsort()
    first = torch.cumsum(counts, 0) - counts
    pick = first[full] + (torch.rand(full.numel(), generator=generator, device=mu.device, dtype=torch.float64)
                          * counts[full]).long().clamp_max(counts[full] - 1)
    mu[empty] = points[order[pick]].to(mu.dtype)
    for state in (mass, columns):
        half = (state[full] + state[empty]) / 2
        state[full] = half
        state[empty] = half
    sums[full] = mu[full].double() * mass[full, None]
    sums[empty] = mu[empty].double() * mass[empty, None]
    return int(full.numel())


__all__ = ["kmeans_plusplus", "lloyd", "nearest", "self_labeled_centroids", "temperature"]
