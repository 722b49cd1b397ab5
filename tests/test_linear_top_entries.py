"""The fused op ``linear_top_entries`` (csrc/cpu/sparse_rows.cpp, the per-ISA tiles in
csrc/cpu/isa/row_kernels.h): the top entries of ``x @ weight.T + bias`` without forming the
logits. Its logits are float32 sums in its own order, so it is checked two ways on every CPU
path: exactly, against the stable-sort selection (entclust.testing.reference.top_entries) of its
own logits (``top = K`` returns them all); and within float32 rounding, against the logits
formed in float64 (reference.linear_top_entries)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entclust import ops
from entclust.testing import reference as R

from .helpers import every_cpu_capability  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("every_cpu_capability")


def problem(b, k, d, seed=0, levels=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g)
    mu = 1.5 * torch.randn(k, d, generator=g)
    if levels is not None:  # few distinct centres and points: many exactly equal logits
        x, mu = torch.floor(x * levels) / levels, torch.floor(mu * levels) / levels
    return x, mu, -0.5 * mu.square().sum(1)  # the large-K rounds' head: x . mu - |mu|^2 / 2


def own_logits(x, w, b):
    """The op's own logits, all of them (top = K): every class of every row, placed by class."""
    values, index = ops.linear_top_entries_kernel(x, w, b, w.shape[0])
    return torch.empty(x.shape[0], w.shape[0]).scatter_(1, index, values)


def same_entries(values, index, ref_values, ref_index):
    order, ref_order = index.argsort(1), ref_index.argsort(1)
    return (torch.equal(index.gather(1, order), ref_index.gather(1, ref_order))
            and torch.equal(values.gather(1, order), ref_values.gather(1, ref_order)))


def check(x, w, b, top):
    values, index = ops.linear_top_entries_kernel(x, w, b, top)
    assert values.shape == index.shape == (x.shape[0], top) and values.dtype == torch.float32
    logits = own_logits(x, w, b)
    # exact: the stable selection of its own logits (ties to the lower class)
    assert same_entries(values, index, *R.top_entries(logits, top))
    # and those logits are x w^T + b within float32 rounding of the terms
    exact = torch.addmm(b.double(), x.double(), w.double().T)
    scale = torch.addmm(b.double().abs(), x.double().abs(), w.double().abs().T)
    assert ((logits.double() - exact).abs() <= 1e-6 * scale * (x.shape[1] + 1) + 1e-30).all()
    ref_values, ref_index = R.linear_top_entries(x, w, b, top)
    slack = 1e-6 * float(scale.max()) * (x.shape[1] + 1)
    assert (exact.gather(1, index) >= ref_values[:, -1:] - slack).all()  # none below the true cut
    return values, index


@pytest.mark.parametrize("b,k,d,top", [(1, 1, 1, 1), (5, 3, 4, 3), (50, 257, 16, 64), (40, 300, 7, 64),
                                       (30, 5000, 64, 64), (7, 20000, 33, 64), (100, 1000, 16, 1),
                                       (20, 1000, 5, 300), (61, 777, 130, 16)])
def test_linear_top_entries_are_the_top_of_its_logits(b, k, d, top):
    check(*problem(b, k, d), top)


def test_ties_go_to_the_lower_class_and_the_blocks_do_not_matter():
    x, w, b = problem(130, 2000, 16)
    w[1000:1100], b[1000:1100] = w[0:100], b[0:100]  # classes 1000.. tie exactly with 0..
    values, index = check(x, w, b, 64)
    for row in index.tolist():  # a twin is kept only with its lower class
        assert all(c - 1000 in row for c in row if 1000 <= c < 1100)
    # a row alone, the rows in another order, or one thread: the same numbers
    alone = ops.linear_top_entries_kernel(x[77:78], w, b, 64)
    assert same_entries(*alone, values[77:78], index[77:78])
    flipped = ops.linear_top_entries_kernel(x.flip(0).contiguous(), w, b, 64)
    assert same_entries(*flipped, values.flip(0), index.flip(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert same_entries(*ops.linear_top_entries_kernel(x, w, b, 64), values, index)
    finally:
        torch.set_num_threads(threads)


def test_rows_whose_sample_misses_or_overflows_are_selected_whole():
    # K = 5000, top = 64: the threshold is the 12th largest of every 16th class (312 sampled)
    x, w, b = problem(12, 5000, 8)
    high = b.clone()
    high[::16] += 1000.0  # the sampled classes above all: only ~12 pass the threshold, < top
    check(x, w, high, 64)
    low = b + 1000.0
    low[::16] -= 2000.0  # the sampled classes below all: every other class passes, > the lists
    check(x, w, low, 64)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 20), k=st.integers(1, 3000), d=st.integers(1, 40), frac=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**16), levels=st.sampled_from([None, 1, 4]))
def test_linear_top_entries_property(b, k, d, frac, seed, levels):
    check(*problem(b, k, d, seed, levels), max(1, min(k, int(round(frac * k)))))


def test_linear_top_entries_checks_its_inputs():
    x, w, b = problem(4, 600, 8)
    nan = w.clone()
    nan[123, 3] = float("nan")
    with pytest.raises(RuntimeError, match="contain NaN"):
        ops.linear_top_entries_kernel(x, nan, b, 64)
    bad_bias = b.clone()
    bad_bias[7] = float("nan")
    with pytest.raises(RuntimeError, match="contain NaN"):
        ops.linear_top_entries_kernel(x, w, bad_bias, 64)
    inf = x.clone()
    inf[2, 1] = float("inf")
    with pytest.raises(RuntimeError, match="x must be finite"):
        ops.linear_top_entries_kernel(inf, w, b, 64)
    with pytest.raises(RuntimeError, match=r"top must be in \[1, K = 600\]"):
        ops.linear_top_entries_kernel(x, w, b, 601)
    with pytest.raises(RuntimeError, match="float32"):
        ops.linear_top_entries_kernel(x.double(), w, b, 8)
    with pytest.raises(RuntimeError, match=r"weight \(K, D\)"):
        ops.linear_top_entries_kernel(x, w[:, :5], b, 8)
    values, index = ops.linear_top_entries_kernel(x[:0], w, b, 8)
    assert values.shape == index.shape == (0, 8)
    before = (x.clone(), w.clone(), b.clone())
    ops.linear_top_entries_kernel(x, w, b, 8)
    assert all(torch.equal(a, c) for a, c in zip(before, (x, w, b)))  # inputs untouched


def test_linear_top_entries_opcheck():
    torch.library.opcheck(torch.ops.entclust.linear_top_entries, problem(20, 600, 8) + (64,))


def test_a_head_beyond_the_cache_takes_blocks_of_more_rows_with_the_same_result():
    """A head of more than 16 MiB (K D > 2^22 floats) is read once a block of 192 rows, not 48:
    with one thread, 1600 rows are eight blocks of 192 and a tail of 64. The result is that of
    other blocks (rows alone, a few rows, checked against the logits)."""
    x, w, b = problem(1600, 16500, 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        values, index = ops.linear_top_entries_kernel(x, w, b, 64)
    finally:
        torch.set_num_threads(threads)
    few = check(x[1530:1600], w, b, 64)  # blocks of 12 rows: the tail and the last whole block's end
    assert same_entries(*few, values[1530:], index[1530:])
    assert same_entries(*ops.linear_top_entries_kernel(x[:500], w, b, 64), values[:500], index[:500])
    assert same_entries(*ops.linear_top_entries_kernel(x[7:8], w, b, 64), values[7:8], index[7:8])
