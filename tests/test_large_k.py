"""Issue 11: global pseudo-labels (SelfLabeling n_points), the estimator's large-K mode and
its K-aware defaults, and the memory-lean data path (float32 kept, memory-mapped files)."""
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

import entclust
from entclust import EntropyClustering
from entclust.data import Scaler
from entclust.metrics import clustering_accuracy
from entclust.solvers.sharded import em_rce_block_, em_rce_sharded


def _sigma(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, k, generator=g, dtype=torch.float64), 1)


def test_block_em_lowers_the_whole_objective():
    """Incremental EM on a block against the other rows' column sums never raises the full
    problem's objective (it is EM on the block with the rest fixed)."""
    sigma = _sigma(300, 15)
    u = torch.full((15,), 1 / 15, dtype=torch.float64)
    y = sigma.clone()
    value = entclust.objective(sigma, y, u, 100.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        idx = torch.randperm(300, generator=g)[:40]
        block = y[idx].clone()
        rest = y.sum(0) - block.sum(0)
        col = em_rce_block_(sigma[idx], block, rest, 100.0, 300, u, 3)
        y[idx] = block
        assert torch.allclose(col, y.sum(0), rtol=1e-12)
        new = entclust.objective(sigma, y, u, 100.0)
        assert float(new) <= float(value) + 1e-12
        value = new


def test_block_em_over_all_rows_is_em():
    sigma = _sigma(100, 7)
    u = torch.full((7,), 1 / 7, dtype=torch.float64)
    y = sigma.clone()
    em_rce_block_(sigma, y, torch.zeros(7, dtype=torch.float64), 100.0, 100, u, 25)
    ref = entclust.em_rce(sigma, u, 100.0, max_iter=25, tol=0.0)
    assert torch.allclose(y, ref.y, rtol=0, atol=1e-13)
    assert torch.allclose(y, em_rce_sharded(sigma, u, 100.0, max_iter=25, tol=0.0).y, rtol=0, atol=1e-13)


def test_memory_self_labeling_uses_global_column_sums():
    sigma = _sigma(120, 30)
    logits = sigma.log()
    crit = entclust.SelfLabeling("rce", lam=100.0, n_points=120)
    assert crit.max_iter == 3 and "n_points=120" in repr(crit)
    idx = torch.arange(10, 50)
    loss, y = crit(logits[idx], index=idx, return_labels=True)
    # the global pseudo-labels are a ColumnMemory: K column sums, no row stored; the same update
    memory = entclust.ColumnMemory(30, 120, 100.0, iterations=3)
    torch.testing.assert_close(y, memory.update(logits[idx]).to(y.dtype), rtol=0, atol=1e-6)
    assert isinstance(crit.memory, entclust.ColumnMemory) and crit.memory.columns.shape == (30,)
    torch.testing.assert_close(crit.columns, memory.columns, rtol=1e-12, atol=1e-9)
    # the batch's share (40/120 of N u) was replaced by its rows
    u = torch.full((30,), 1 / 30, dtype=torch.float64)
    assert torch.allclose(crit.columns, 80 * u + y.double().sum(0), rtol=1e-6)
    assert torch.isfinite(loss) and y.shape == (40, 30)
    # the fairness term in the loss is the global one: KL(u || columns / N)
    fair = float(entclust.strong_fairness((crit.columns / 120).unsqueeze(0), u))
    rest = float(entclust.reverse_cross_entropy(logits[idx], y.clamp_min(1e-300)))
    assert float(loss) == pytest.approx(rest + 100.0 * fair, rel=1e-6)
    # another visit keeps the total mass N; index is optional
    crit(logits[idx])
    assert float(crit.columns.sum()) == pytest.approx(120.0, rel=1e-6)
    assert "memory.columns" in crit.state_dict()
    crit.reset_memory()
    assert crit.memory is None


def test_memory_self_labeling_errors():
    logits = torch.randn(8, 5)
    with pytest.raises(ValueError, match="repeat"):
        entclust.SelfLabeling(n_points=10)(logits, index=torch.tensor([0, 1, 2, 3, 4, 5, 6, 6]))
    with pytest.raises(ValueError, match=r"\[0, n_points=10\)"):
        entclust.SelfLabeling(n_points=10)(logits, index=torch.arange(3, 11))
    with pytest.raises(ValueError, match="one integer dataset index per row"):
        entclust.SelfLabeling(n_points=10)(logits, index=torch.arange(4))
    with pytest.raises(ValueError, match="method='rce' with solver='em'"):
        entclust.SelfLabeling("cce", n_points=10)
    with pytest.raises(ValueError, match="n_points must be"):
        entclust.SelfLabeling(n_points=-1)
    with pytest.raises(ValueError, match="group needs n_points"):
        entclust.SelfLabeling(group=object())
    with pytest.raises(ValueError, match="only used with n_points"):
        entclust.SelfLabeling()(logits, index=torch.arange(8))
    crit = entclust.SelfLabeling(n_points=10)
    crit(logits, index=torch.arange(8))
    with pytest.raises(ValueError, match="K=6"):
        crit(torch.randn(2, 6), index=torch.arange(2))
    with pytest.raises(ValueError, match="more than n_points"):
        entclust.SelfLabeling(n_points=4)(logits)


def test_auto_modes_and_k_aware_defaults():
    est = EntropyClustering(10)
    est.pseudo_labels_, est.init_ = est._modes()
    assert (est.pseudo_labels_, est.init_) == ("batch", "random")
    big = EntropyClustering(100)
    assert big._modes() == ("global", "balanced")
    assert EntropyClustering(100, method="cce")._modes() == ("batch", "random")
    assert EntropyClustering(100, pseudo_labels="batch", init="kmeans++")._modes() == ("batch", "kmeans++")
    x, t = make_blobs(1200, n_features=8, centers=60, random_state=0)
    m = EntropyClustering(60, random_state=0).fit(x)
    assert (m.pseudo_labels_, m.init_, m.epochs_, m.lr_) == ("global", "balanced", 0, 0.1)
    assert 1 <= len(m.init_history_) <= 30
    assert m.gamma_ == pytest.approx(0.01 * 10 / 60)
    assert clustering_accuracy(t, m.labels_) >= 0.9
    assert (m.cluster_sizes_ == 0).sum() <= 1
    small = EntropyClustering(3, epochs=2, random_state=0).fit(x[:300])
    assert small.gamma_ == 0.01 and small.lr_ == 1.0 and small.epochs_ == 2
    for kwargs, match in [({"pseudo_labels": "x"}, "pseudo_labels"), ({"init": "x"}, "init"),
                          ({"pseudo_labels": "global", "method": "cce"}, "implemented for method='rce'")]:
        with pytest.raises(ValueError, match=match):
            EntropyClustering(3, **kwargs).fit(x[:50])


def test_global_mode_reproducible_and_objective_finite():
    x, _ = make_blobs(600, n_features=5, centers=30, random_state=1)
    a = EntropyClustering(30, random_state=3, n_init=2, epochs=2).fit(x)
    b = EntropyClustering(30, random_state=3, n_init=2, epochs=2).fit(x)
    assert np.array_equal(a.labels_, b.labels_) and np.isfinite(a.objective_)
    assert len(a.history_) == 2 and a.history_[-1]["empty_clusters"] == 0


def test_float32_kept_and_memory_mapped_input(tmp_path):
    x, _ = make_blobs(500, n_features=6, centers=4, random_state=0)
    x32 = x.astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x32)
    mm = np.load(path, mmap_mode="r")
    a = EntropyClustering(4, epochs=3, random_state=0).fit(x32)
    b = EntropyClustering(4, epochs=3, random_state=0).fit(mm)
    assert np.array_equal(a.labels_, b.labels_)
    assert a.predict_proba(x32).shape == (500, 4)
    # the scaler streams blocks: same statistics as the one-shot numpy formulas
    s = Scaler("features").fit(x)
    assert np.allclose(s.mean_, x.mean(0)) and np.allclose(s.scale_, x.std(0))
    g = Scaler("global").fit(x)
    assert np.allclose(g.scale_, np.sqrt(((x - x.mean(0)) ** 2).mean()))
    assert s.transform(x32).dtype == np.float32 and s.transform(x).dtype == np.float64
    assert not np.shares_memory(s.transform(x), x)


def test_dense_results_go_over_blocks_and_what_cannot_fit_is_refused(monkeypatch):
    """The dense (N, K) results are written a block of rows at a time (one block and the output in
    memory) and match the whole-matrix formulas; one that cannot fit is refused before any work,
    and so is a score whose N x K pseudo-labels cannot."""
    import entclust.cluster.scale as scale
    from entclust.cluster.scale import MemoryPlanError

    x, _ = make_blobs(300, n_features=5, centers=6, random_state=0)
    est = EntropyClustering(6, epochs=2, random_state=0).fit(x)
    with torch.no_grad():
        logits = est.head_(torch.from_numpy(est.scaler_.transform(x, np.float32)))
    monkeypatch.setattr(scale, "block_rows", lambda k: 7)  # 43 blocks, the last one short
    np.testing.assert_array_equal(est.predict_proba(x), torch.softmax(logits, 1).double().numpy())
    np.testing.assert_array_equal(est.transform(x), torch.log_softmax(logits.double(), 1).numpy())
    assert np.array_equal(est.predict_proba(x).argmax(1), est.predict(x))
    import entclust.cluster.head as head
    monkeypatch.setattr(head, "available_bytes", lambda: 1000)
    with pytest.raises(MemoryPlanError, match=r"predict_proba: the float64 result \(300 x 6\) needs .* pass fewer rows"):
        est.predict_proba(x)
    with pytest.raises(MemoryPlanError, match=r"transform: the float64 result \(300 x 6\)"):
        est.transform(x)
    with pytest.raises(MemoryPlanError, match=r"score: the logits and pseudo-labels \(300 x 6\) .* score a sample"):
        est.score(x)


def test_a_float32_tensor_is_read_without_a_float64_copy(monkeypatch):
    """scikit-learn reads a torch tensor as float64 (a copy twice the data's size); the estimator
    hands it a view of the tensor's memory instead, for fit, partial_fit and predict."""
    from entclust.cluster import estimator as E

    seen = []
    fit = E.Scaler.fit
    monkeypatch.setattr(E.Scaler, "fit", lambda self, x, group=None: seen.append(x) or fit(self, x, group))
    x, _ = make_blobs(500, n_features=6, centers=4, random_state=0)
    t = torch.from_numpy(x.astype(np.float32))
    a = EntropyClustering(4, epochs=3, random_state=0).fit(t)
    b = EntropyClustering(4, epochs=3, random_state=0).fit(t.numpy())
    assert seen[0].dtype == np.float32 and np.shares_memory(seen[0], t.numpy())
    assert np.array_equal(a.labels_, b.labels_) and np.array_equal(a.predict(t), a.labels_)
    c = EntropyClustering(4, random_state=0).partial_fit(t.double().requires_grad_())
    assert seen[-1].dtype == np.float64 and c.labels_.shape == (500,)
    with pytest.raises(ValueError, match="NaN"):
        EntropyClustering(4).fit(torch.full((20, 3), float("nan")))
    # half precision (embeddings often come as bfloat16): float32, exactly the same values
    for half in (torch.bfloat16, torch.float16):
        h = t.to(half)
        d = EntropyClustering(4, epochs=3, random_state=0).fit(h)
        assert seen[-1].dtype == np.float32 and np.array_equal(seen[-1], h.float().numpy())
        assert np.array_equal(d.predict(h), d.labels_)
    EntropyClustering(4, epochs=3, random_state=0).fit(t.to(torch.float16).numpy())
    assert seen[-1].dtype == np.float32


def test_sparse_features_are_refused_with_what_to_do_instead():
    """A TF-IDF matrix (scipy.sparse) or a sparse tensor: densifying N x V is rarely possible, so
    the error names the reduction users take (TruncatedSVD) and the memory a dense copy needs."""
    import scipy.sparse

    x = scipy.sparse.random(1000, 50000, density=1e-3, format="csr", random_state=0)
    coo = x.tocoo()
    tensor = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, size=x.shape, check_invariants=True)
    for sparse in (x, tensor):
        with pytest.raises(TypeError, match=r"X is a sparse matrix \(1000 x 50000\); EntropyClustering needs dense "
                                            r"features: .*TruncatedSVD.* 0.19 GiB as float32"):
            EntropyClustering(4).fit(sparse)
    est = EntropyClustering(4, epochs=2, random_state=0).fit(np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32))
    with pytest.raises(TypeError, match="X is a sparse matrix"):
        est.predict(scipy.sparse.random(10, 8, density=0.5, format="csr"))



def test_a_scipy_sparse_npz_file_is_refused_with_what_to_do_instead(tmp_path):
    """scipy.sparse.save_npz writes data/indices/indptr/shape/format: the loader took 'data' as the
    features and said 'got a 1-D array'; now it names the sparse matrix and the reduction."""
    import scipy.sparse

    from entclust.data import DataError, read_array

    scipy.sparse.save_npz(tmp_path / "tfidf.npz", scipy.sparse.random(200, 1000, density=0.01, format="csr"))
    with pytest.raises(DataError, match=r"tfidf.npz is a sparse matrix \(200 x 1000\); entclust needs dense .*TruncatedSVD"):
        read_array(str(tmp_path / "tfidf.npz"), "features")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (300, 1000), (0, 5)])
def test_em_rce_rows_op_matches_the_formula(dtype, shape):
    from entclust import ops

    g = torch.Generator().manual_seed(0)
    sigma = torch.softmax(torch.randn(*shape, generator=g, dtype=torch.float64), -1).to(dtype)
    y = torch.softmax(torch.randn(*shape, generator=g, dtype=torch.float64), -1).to(dtype)
    w = torch.rand(shape[1], generator=g, dtype=torch.float64) * 50
    new, col = ops.em_rce_rows_kernel(sigma, y, w)
    a = y.double() * w
    ref = (sigma.double() + a) / (1 + a.sum(-1, keepdim=True))
    # float64 arithmetic: the denominator sums K positive terms (relative error <= (K - 1) eps64,
    # the order of the sum differs from the reference's), then a few more roundings, and the
    # output is rounded once to its dtype
    tol = (shape[1] + 4) * torch.finfo(torch.float64).eps + torch.finfo(dtype).eps
    assert new.dtype == dtype and torch.allclose(new.double(), ref, rtol=tol, atol=0)
    assert torch.allclose(col, new.double().sum(0), rtol=1e-12, atol=1e-12)
    if shape[0]:
        torch.library.opcheck(torch.ops.entclust.em_rce_rows, (sigma, y, w))


def test_em_rce_rows_op_checks_its_inputs():
    from entclust import ops

    s = torch.full((2, 3), 1 / 3)
    with pytest.raises(RuntimeError, match="same shape"):
        ops.em_rce_rows_kernel(s, s[:1], torch.ones(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="weights must be float64"):
        ops.em_rce_rows_kernel(s, s, torch.ones(3))
    with pytest.raises(RuntimeError, match="must both be float32 or both float64"):
        ops.em_rce_rows_kernel(s, s.double(), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_block_em_and_memory_mode_match_the_reference(dtype):
    from entclust.testing import reference as R

    sigma = _sigma(200, 9, seed=4)
    prior = torch.softmax(torch.randn(9, generator=torch.Generator().manual_seed(5), dtype=torch.float64), 0)
    rest = 50 * prior  # 50 other points at y = u
    y = sigma.to(dtype).clone()
    em_rce_block_(sigma.to(dtype), y, rest, 30.0, 250, prior, 5)
    ref = R.em_rce_block(sigma, sigma.clone(), rest, prior, 30.0, n_total=250, iterations=5)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(y.double(), ref, rtol=0, atol=tol)
    # SelfLabeling(n_points): the first visit of rows 0..39 of 100 points is that block solve
    crit = entclust.SelfLabeling("rce", lam=30.0, prior=prior, n_points=100, max_iter=5)
    logits = sigma[:40].log().to(dtype)
    labels = crit.update(logits, torch.arange(40))
    ref = R.em_rce_block(torch.softmax(logits.double(), -1), torch.softmax(logits.double(), -1), 60 * prior, prior,
                         30.0, n_total=100, iterations=5)
    assert labels.dtype == dtype and torch.allclose(labels.double(), ref, rtol=0, atol=tol)


def test_global_and_batch_pseudo_labels_agree_where_batches_are_well_posed():
    """K small against the batch (250 points, K = 4): the global mode finds the clustering of the
    papers' per-batch mode."""
    x, t = make_blobs(1000, n_features=5, centers=4, cluster_std=1.0, random_state=3)
    batch = EntropyClustering(4, pseudo_labels="batch", random_state=0).fit(x)
    glob = EntropyClustering(4, pseudo_labels="global", random_state=0).fit(x)
    assert clustering_accuracy(t, batch.labels_) >= 0.98
    assert clustering_accuracy(t, glob.labels_) >= 0.98
    assert clustering_accuracy(batch.labels_, glob.labels_) >= 0.98


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_block_step_pytorch_path_matches_the_fused_op(dtype):
    """The PyTorch M-step (the path of CUDA tensors) against the CPU op: same rows, same column
    sums of the stored values, same largest change."""
    from entclust.solvers.sharded import _step_blocks_, em_step_

    sigma = _sigma(700, 300, seed=6).to(dtype)  # > one block of 2^17 entries
    y0 = _sigma(700, 300, seed=7).to(dtype)
    w = torch.rand(300, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 40
    a, b = y0.clone(), y0.clone()
    col_a, change_a = em_step_(sigma, a, w)
    col_b, change_b = _step_blocks_(sigma, b, w, True)
    eps = torch.finfo(dtype).eps
    assert torch.allclose(a, b, rtol=2 * eps + 400 * torch.finfo(torch.float64).eps, atol=0)
    assert torch.allclose(col_a, col_b, rtol=1e-6 if dtype == torch.float32 else 1e-12)
    assert change_a == pytest.approx(change_b, rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_blocked_passes_use_large_blocks_off_the_cpu():
    """The float64 passes that run in PyTorch (input checks, certificate, sharded M-step) go in
    blocks of rows: a few MB on the CPU; on a GPU each block is a few kernel launches, so there
    N = 1e6, K = 1e4 must be hundreds of blocks, not the CPU's 77 000."""
    from entclust.ops.checks import CPU_BLOCK, GPU_BLOCK, block_entries, block_rows

    assert block_entries(torch.device("cpu")) == CPU_BLOCK and block_entries(torch.device("cuda")) == GPU_BLOCK
    assert math.ceil(10**6 / block_rows(torch.device("cuda"), 10**4)) <= 1000
    assert math.ceil(10**6 / block_rows(torch.device("cpu"), 10**4)) > 70_000
    assert block_rows(torch.device("cuda"), 10**9) == 1  # a row longer than a block is one block


def test_op_devices_sees_the_n_by_k_work_and_the_fused_ops():
    """The detector behind the CUDA test of "no silent CPU fallback": on the CPU it must find the
    estimator's N x K work on the CPU and its fused ops (so on a GPU, finding none means none)."""
    from entclust.testing.devices import OpDevices

    x, _ = make_blobs(3000, n_features=16, centers=100, random_state=0)
    with OpDevices() as ops:
        EntropyClustering(100, random_state=0, epochs=1).fit(x)
    names = {c.name for c in ops.entclust_calls()}
    assert "entclust.reverse_cross_entropy.default" in names and all(c.devices == {"cpu"} for c in ops.entclust_calls())
    heavy = {c.name for c in ops.cpu_work(3000 * 100 // 2)}
    assert {"aten.addmm.out", "aten.max.dim"} <= heavy  # the blocked logits and their argmax (ops.argmax_rows)
