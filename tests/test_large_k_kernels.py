"""The CPU kernels of the large-K start against their PyTorch ground truth
(entclust.testing.reference): of the rounds' sparse rows (csrc/cpu/sparse_rows.cpp) the top
entries of each row, the reverse-CE pseudo-labels on those entries and the centres' sums; the
k-means++ seeding (csrc/cpu/kmeanspp.cpp); opcheck for each."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entclust import ops
from entclust.testing import reference as R

from .helpers import every_cpu_capability  # noqa: F401  (fixture)


def distance_logits(b, k, d=16, seed=0, dtype=torch.float32):
    """Rows as the large-K rounds make them: ``x . mu - |mu|^2 / 2`` (shared structure across rows)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    mu = 1.5 * torch.randn(k, d, generator=g, dtype=torch.float64)
    return (x @ mu.T - 0.5 * mu.square().sum(1)).to(dtype)


def same_entries(values, index, ref_values, ref_index):
    """The same set of (class, value) per row, whatever the order within the row."""
    order, ref_order = index.argsort(1), ref_index.argsort(1)
    return (torch.equal(index.gather(1, order), ref_index.gather(1, ref_order))
            and torch.equal(values.gather(1, order), ref_values.gather(1, ref_order)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,k,top", [(1, 1, 1), (3, 5, 5), (50, 257, 64), (40, 300, 64), (30, 5000, 64),
                                     (7, 20000, 64), (200, 1000, 1), (20, 1000, 300)])
def test_top_entries_are_the_top_of_a_stable_sort(dtype, b, k, top):
    logits = distance_logits(b, k, dtype=dtype)
    values, index = ops.top_entries_kernel(logits, top)
    assert values.dtype == dtype and index.dtype == torch.int64 and values.shape == index.shape == (b, top)
    assert same_entries(values, index, *R.top_entries(logits, top))
    assert torch.equal(values, logits.gather(1, index))


def test_top_entries_ties_go_to_the_lower_class_and_rows_of_any_order_are_exact():
    # ties at the cut: classes 0..9 share the top value, the op keeps the lowest ones
    logits = torch.zeros(4, 2000)
    logits[:, 100:110] = 1.0
    values, index = ops.top_entries_kernel(logits, 64)
    assert same_entries(values, index, *R.top_entries(logits, 64))
    # sorted rows (the stride sample sees only low values at the start) and reversed ones
    ramp = torch.arange(5000, dtype=torch.float32).expand(3, 5000)
    for rows in (ramp, ramp.flip(1), -ramp, (ramp % 97) * (ramp % 89)):
        assert same_entries(*ops.top_entries_kernel(rows.contiguous(), 64), *R.top_entries(rows, 64))
    # infinities are values like any other
    inf = torch.randn(5, 3000)
    inf[:, ::7] = float("-inf")
    inf[0, 5] = float("inf")
    assert same_entries(*ops.top_entries_kernel(inf, 64), *R.top_entries(inf, 64))


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 6), k=st.integers(1, 3000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
       levels=st.sampled_from([None, 3, 50]))
def test_top_entries_property(b, k, frac, seed, levels):
    top = max(1, min(k, int(round(frac * k))))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, generator=g)
    if levels is not None:  # many ties
        logits = torch.floor(logits * levels)
    values, index = ops.top_entries_kernel(logits, top)
    assert same_entries(values, index, *R.top_entries(logits, top))


def test_top_entries_checks_its_inputs():
    with pytest.raises(RuntimeError, match="NaN"):
        ops.top_entries_kernel(torch.tensor([[0.0, float("nan"), 1.0]]), 1)
    big = torch.randn(2, 4000)
    big[1, 3999] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        ops.top_entries_kernel(big, 8)
    with pytest.raises(RuntimeError, match=r"top must be in \[1, K = 3\]"):
        ops.top_entries_kernel(torch.randn(2, 3), 4)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.top_entries_kernel(torch.randn(2, 3).half(), 1)
    assert ops.top_entries_kernel(torch.randn(0, 3), 2)[0].shape == (0, 2)


def test_top_entries_opcheck():
    torch.library.opcheck(torch.ops.entclust.top_entries, (distance_logits(20, 600), 64))


def sparse_problem(b=60, k=500, top=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    values, index = R.top_entries(distance_logits(b, k, seed=seed, dtype=dtype), top)
    rest = torch.rand(k, generator=g, dtype=torch.float64) * 5
    rest[::7] = 0.0  # classes with no mass outside the block
    prior = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    return values.contiguous(), index.contiguous(), rest, prior * (100.0 * 1000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("update", [True, False])
@pytest.mark.parametrize("b,k,top", [(60, 500, 16), (5, 2000, 64), (1, 1, 1), (300, 40, 40)])
def test_sparse_em_rows_matches_the_reference(dtype, update, b, k, top):
    values, index, rest, cu = sparse_problem(b, k, top, dtype=dtype)
    y, col = ops.sparse_em_rows_kernel(values, index, rest, cu, 10, update)
    ref_y, ref_col = R.sparse_em_rows(values, index, rest, cu, 10, update)
    assert y.dtype == dtype and col.dtype == torch.float64
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(y, ref_y, rtol=tol, atol=tol)
    torch.testing.assert_close(col, ref_col, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(y.double().sum(1), torch.ones(b, dtype=torch.float64), rtol=0, atol=10 * tol)
    assert bool((y >= 0).all())


def test_sparse_em_rows_zero_iterations_is_the_softmax_and_it_checks_its_inputs():
    values, index, rest, cu = sparse_problem()
    y, col = ops.sparse_em_rows_kernel(values, index, rest, cu, 0, True)
    torch.testing.assert_close(y, torch.softmax(values, -1), rtol=0, atol=1e-15)
    torch.testing.assert_close(col, rest + torch.zeros_like(rest).index_add_(0, index.reshape(-1), y.reshape(-1)))
    with pytest.raises(RuntimeError, match=r"index entries must be in \[0, K = 500\)"):
        ops.sparse_em_rows_kernel(values, index + 490, rest, cu, 1, True)
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        bad = values.clone()
        bad[3, 2] = float("inf")
        ops.sparse_em_rows_kernel(bad, index, rest, cu, 1, True)
    with pytest.raises(RuntimeError, match="one shape"):
        ops.sparse_em_rows_kernel(values, index[:, :3], rest, cu, 1, True)
    with pytest.raises(RuntimeError, match="float64 of one shape"):
        ops.sparse_em_rows_kernel(values, index, rest.float(), cu, 1, True)
    with pytest.raises(RuntimeError, match="iterations must be >= 0"):
        ops.sparse_em_rows_kernel(values, index, rest, cu, -1, True)
    before = values.clone()
    ops.sparse_em_rows_kernel(values, index, rest, cu, 3, True)
    assert torch.equal(values, before)


def test_sparse_em_rows_opcheck():
    values, index, rest, cu = sparse_problem(b=8, k=50, top=5)
    torch.library.opcheck(torch.ops.entclust.sparse_em_rows, (values, index, rest, cu, 4, True))
    torch.library.opcheck(torch.ops.entclust.sparse_em_rows, (values.float(), index, rest, cu, 2, False))


@pytest.mark.parametrize("ydtype,xdtype", [(torch.float32, torch.float32), (torch.float64, torch.float32),
                                           (torch.float32, torch.float64)])
@pytest.mark.parametrize("d", [9, 64, 37])
def test_sparse_centre_sums_add_the_weighted_points(every_cpu_capability, ydtype, xdtype, d):
    # (float32 y and x run the ISA's kernel: d = 9 is shorter than a vector, 37 ends in a tail)
    g = torch.Generator().manual_seed(d)
    b, k, top = 70, 300, 12
    index = torch.stack([torch.randperm(k, generator=g)[:top] for _ in range(b)])
    y = torch.rand(b, top, generator=g, dtype=torch.float64).to(ydtype)
    x = torch.randn(b, d, generator=g, dtype=torch.float64).to(xdtype)
    sums = torch.randn(k, d, generator=g, dtype=torch.float64)
    mass = torch.rand(k, generator=g, dtype=torch.float64)
    start_sums, start_mass = sums.clone(), mass.clone()
    ops.sparse_centre_sums_kernel(sums, mass, y, index, x, 0.25)
    ref_sums, ref_mass = R.sparse_centre_sums(k, y, index, x)
    torch.testing.assert_close(sums, start_sums + 0.25 * ref_sums, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mass, start_mass + 0.25 * ref_mass, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_centre_sums_do_not_depend_on_the_threads(every_cpu_capability, dtype):
    # each class's entries are added in entry order by one thread: the same bits on 1 and 3
    # threads (a class appearing many times in a row block, and classes no entry touches)
    g = torch.Generator().manual_seed(1)
    b, k, d, top = 200, 50, 20, 8
    index = torch.randint(0, k - 5, (b, top), generator=g)
    y = torch.rand(b, top, generator=g, dtype=torch.float64).to(dtype)
    x = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            sums, mass = torch.ones(k, d, dtype=torch.float64), torch.ones(k, dtype=torch.float64)
            ops.sparse_centre_sums_kernel(sums, mass, y, index, x, 0.5)
            results.append((sums, mass))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert torch.equal(results[0][0][k - 5:], torch.ones(5, d, dtype=torch.float64))


def test_sparse_centre_sums_checks_and_opcheck():
    sums, mass = torch.zeros(5, 3, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    y, index, x = torch.rand(4, 2), torch.randint(0, 5, (4, 2)), torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="sums must be a contiguous float64"):
        ops.sparse_centre_sums_kernel(sums.float(), mass, y, index, x)
    with pytest.raises(RuntimeError, match=r"x must have shape \(4, 3\)"):
        ops.sparse_centre_sums_kernel(sums, mass, y, index, x[:, :2])
    with pytest.raises(RuntimeError, match=r"index entries must be in \[0, K = 5\)"):
        ops.sparse_centre_sums_kernel(sums, mass, y, index + 5, x)
    torch.library.opcheck(torch.ops.entclust.sparse_centre_sums_, (sums, mass, y, index, x, 1.0))


def seed_by_calls(points, first, draws, calls=1):
    """The k-means++ op's seeds from ``first``, the draws cut into ``calls`` near-equal calls that
    carry d2 from one to the next: ``(indices (K,), d2)``."""
    d2 = (points - points[first]).square().sum(1)
    chosen = [torch.tensor([first])]
    for part in torch.tensor_split(draws, calls):
        before = d2.clone()
        seeds, new = ops.kmeans_plusplus_kernel(points, d2, part)
        assert torch.equal(d2, before)  # the input is not modified
        chosen.append(seeds)
        d2 = new
    return torch.cat(chosen), d2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m,d,k,trials", [(1, 3, 1, 2), (5, 2, 5, None), (3000, 8, 50, None), (2500, 64, 200, None),
                                          (701, 5, 30, 13), (333, 17, 20, 37), (70001, 3, 30, None)])
def test_kmeans_plusplus_op_picks_the_reference_seeds(every_cpu_capability, dtype, m, d, k, trials):
    # (m not a multiple of any ISA's lanes; 13 and 37 candidates: the float32 kernel's groups of
    # at most 12 or 16 candidates split unevenly; 70 001 points: 64 chunks, the most the draws search)
    g = torch.Generator().manual_seed(m + k)
    centres = 3 * torch.randn(max(1, k // 2), d, generator=g, dtype=torch.float64)
    points = (centres[torch.randint(0, centres.shape[0], (m,), generator=g)]
              + torch.randn(m, d, generator=g, dtype=torch.float64)).to(dtype)
    draws = torch.rand(k - 1, trials or 2 + int(math.log(k)), generator=g, dtype=torch.float64)
    first = int(torch.randint(0, m, (1,), generator=g))
    chosen, d2 = seed_by_calls(points, first, draws)
    assert chosen.dtype == torch.int64 and chosen.shape == (k,) and int(chosen[0]) == first
    assert torch.equal(chosen, R.kmeans_plusplus(points, first, draws))
    # d2: each point's squared distance to its nearest seed
    x = points.double()
    nearest = torch.cdist(x, x[chosen]).square().min(1).values
    # (|x|^2 + |c|^2 - 2 x.c: float32 cancels to about 1e-6 of the squared norms)
    scale = float(x.square().sum(1).max()) * (1e-5 if dtype == torch.float32 else 1e-12)
    assert d2.dtype == dtype and torch.allclose(d2.double(), nearest, rtol=1e-4, atol=scale)
    # the same seeds and d2 when the draws are cut into calls (what the estimator does, for progress)
    for calls in (2, 3, 7):
        again, d2_again = seed_by_calls(points, first, draws, calls)
        assert torch.equal(again, chosen) and torch.equal(d2_again, d2)


def test_kmeans_plusplus_op_draws_past_chunks_without_distance(every_cpu_capability):
    """Whole chunks of points at distance 0 from the first seed (copies of it), others between
    them: no candidate is drawn where d2 is 0, and the seeds are the reference's."""
    g = torch.Generator().manual_seed(5)
    points = torch.randn(12000, 6, generator=g)
    points[:4000] = points[0]
    points[6000:9000] = points[0]
    draws = torch.rand(25, 5, generator=g, dtype=torch.float64)
    chosen, d2 = seed_by_calls(points, 0, draws, 3)
    assert torch.equal(chosen, R.kmeans_plusplus(points, 0, draws))
    assert not ((chosen[1:] < 4000) | ((chosen[1:] >= 6000) & (chosen[1:] < 9000))).any()
    assert (d2[:4000] == 0).all() and (d2[6000:9000] == 0).all()


def test_kmeans_plusplus_op_on_repeated_points_and_its_checks(every_cpu_capability):
    # every point the same: all distances 0, every draw lands on the first point
    same = torch.ones(20, 4)
    seeds, d2 = ops.kmeans_plusplus_kernel(same, torch.zeros(20), torch.rand(4, 3, dtype=torch.float64))
    assert torch.equal(seeds, torch.tensor([0, 0, 0, 0])) and torch.equal(d2, torch.zeros(20))
    x = torch.randn(10, 2)
    d2 = x.square().sum(1)
    seeds, out = ops.kmeans_plusplus_kernel(x, d2, torch.empty(0, 3, dtype=torch.float64))  # no seeds: d2 as given
    assert seeds.shape == (0,) and torch.equal(out, d2)
    with pytest.raises(RuntimeError, match=r"d2 must be an \(m,\) tensor of the points' dtype \(m = 10"):
        ops.kmeans_plusplus_kernel(x, d2[:9], torch.rand(2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"d2 must be an \(m,\) tensor of the points' dtype"):
        ops.kmeans_plusplus_kernel(x, d2.double(), torch.rand(2, 3, dtype=torch.float64))
    for bad_d2 in (-d2, d2.clone().fill_(float("inf"))):
        with pytest.raises(RuntimeError, match="d2 must be finite and non-negative"):
            ops.kmeans_plusplus_kernel(x, bad_d2, torch.rand(2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="draws must be a float64"):
        ops.kmeans_plusplus_kernel(x, d2, torch.rand(2, 3))
    bad = x.clone()
    bad[4, 1] = float("nan")
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        ops.kmeans_plusplus_kernel(bad, d2, torch.rand(2, 3, dtype=torch.float64))
    draws = torch.rand(9, 4, dtype=torch.float64)
    points = torch.randn(300, 5)
    torch.library.opcheck(torch.ops.entclust.kmeans_plusplus, (points, (points - points[2]).square().sum(1), draws))


def test_kmeans_plusplus_reports_its_seeds_between_calls(monkeypatch):
    """Cut into calls of a few seeds (as at K = 10^5), the seeding tells its progress between them
    and picks the seeds of one call."""
    from entclust.cluster import centroids

    points = torch.randn(4000, 16, generator=torch.Generator().manual_seed(3))
    whole = centroids.kmeans_plusplus(points, 300, torch.Generator().manual_seed(7))

    class Notes:
        def __init__(self):
            self.texts = []

        def note(self, text, *, throttle=False):
            assert throttle
            self.texts.append(text)

    notes = Notes()
    monkeypatch.setattr(centroids, "KPP_CALL_WORK", 4000 * 16 * 7 * 40)  # 40 seeds a call (7 trials at K = 300)
    assert torch.equal(centroids.kmeans_plusplus(points, 300, torch.Generator().manual_seed(7), notes), whole)
    assert notes.texts == [f"k-means++ seeds {done}/300" for done in range(41, 300, 40)]
    notes.texts.clear()
    steps = centroids._kmeans_plusplus_steps(points, 300, torch.Generator().manual_seed(7), 7, notes, 40)
    assert torch.equal(steps, whole) and notes.texts == [f"k-means++ seeds {done}/300" for done in range(41, 300, 40)]


def test_kmeans_plusplus_seeds_are_those_of_the_pytorch_loop(every_cpu_capability):
    """The estimator's seeding on the CPU (the op) draws the generator as the PyTorch loop did."""
    from entclust.cluster.centroids import kmeans_plusplus

    g = torch.Generator().manual_seed(3)
    points = torch.randn(4000, 16, generator=g)
    k, trials = 300, 2 + int(math.log(300))
    seeds = kmeans_plusplus(points, k, torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    first = int(torch.randint(0, 4000, (1,), generator=replay))
    draws = torch.stack([torch.rand(trials, generator=replay, dtype=torch.float64) for _ in range(k - 1)])
    assert torch.equal(seeds, points[R.kmeans_plusplus(points, first, draws)])


def test_the_pytorch_paths_off_the_cpu_agree_with_the_cpu_ops():
    """The PyTorch versions the GPU runs (k-means++ steps, the sparse EM steps of ColumnMemory, the
    sparse centre sums), run here on the CPU against the ops."""
    from entclust import ColumnMemory
    from entclust.cluster.centroids import _kmeans_plusplus_steps, _sparse_sums_steps, kmeans_plusplus, top_entries

    g = torch.Generator().manual_seed(0)
    points = torch.randn(3000, 16, generator=g)
    assert torch.equal(_kmeans_plusplus_steps(points, 120, torch.Generator().manual_seed(1), 2 + int(math.log(120))),
                       kmeans_plusplus(points, 120, torch.Generator().manual_seed(1)))
    logits = distance_logits(300, 800)
    values, index = top_entries(logits, 32)
    assert same_entries(values, index, *logits.topk(32, dim=1))
    memory = ColumnMemory(800, 5000, 100.0, iterations=10)
    memory.columns.copy_(torch.rand(800, generator=g, dtype=torch.float64) * 12.5)
    rest = memory.columns * (1 - 300 / 5000)
    y_torch, col_torch = memory._sparse_steps(values, index, rest)
    y = memory.update_sparse(values, index)
    torch.testing.assert_close(y, y_torch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(memory.columns, col_torch, rtol=1e-6, atol=1e-6)
    block = torch.randn(300, 16, generator=g)
    sums, mass = torch.zeros(800, 16, dtype=torch.float64), torch.zeros(800, dtype=torch.float64)
    sums_t, mass_t = sums.clone(), mass.clone()
    ops.sparse_centre_sums_kernel(sums, mass, y, index, block, 3.0)
    _sparse_sums_steps(sums_t, mass_t, y, index, block, 3.0)
    torch.testing.assert_close(sums, sums_t, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(mass, mass_t, rtol=1e-12, atol=1e-12)
    # the fused top entries of a head (the op on float32) and addmm + top entries (elsewhere)
    from entclust.cluster.centroids import linear_top_entries

    mu = 1.5 * torch.randn(800, 16, generator=g)
    head = (mu, -0.5 * mu.square().sum(1))
    fused = linear_top_entries(block, *head, 32)
    plain = linear_top_entries(block.double(), *(t.double() for t in head), 32)
    assert (fused[1].sort(1).values == plain[1].sort(1).values).float().mean() > 0.999  # rounding at the cut aside
    torch.testing.assert_close(fused[0].double().sort(1).values, plain[0].sort(1).values, rtol=1e-5, atol=1e-4)


def test_nearest_by_the_fused_top_entries_is_the_addmm_blocks(every_cpu_capability):
    """nearest above 256 centres (the op's top entries where linear_top_entries runs it) finds the
    plain addmm blocks' centres and distances, and on tied centres the lower index."""
    from entclust.cluster.centroids import _nearest_steps, nearest

    g = torch.Generator().manual_seed(5)
    mu = 1.5 * torch.randn(700, 24, generator=g)
    mu[401] = mu[33]  # a tie: every point nearest to these two takes 33
    x = mu[torch.randint(0, 700, (6000,), generator=g)] + 0.5 * torch.randn(6000, 24, generator=g)
    labels, d2 = nearest(x, mu)
    plain_labels, plain_d2 = _nearest_steps(x.double(), mu.double())
    assert labels.dtype == torch.int64 and d2.dtype == torch.float32
    assert not (labels == 401).any() and (labels == 33).any()
    plain_labels[plain_labels == 401] = 33
    # rounding aside: where the two nearest centres of a point are not within float32 noise
    dist = torch.cdist(x.double(), mu.double()).square()
    dist[:, 401] = float("inf")
    gap = dist.topk(2, dim=1, largest=False).values.diff(dim=1).squeeze(1)
    clear = gap > 1e-3
    assert clear.float().mean() > 0.99
    assert torch.equal(labels[clear], plain_labels[clear])
    torch.testing.assert_close(d2.double(), plain_d2, rtol=1e-4, atol=1e-3)
    # the other inputs keep the addmm blocks
    small = mu[:200]
    assert torch.equal(nearest(x, small)[0], _nearest_steps(x, small)[0])
