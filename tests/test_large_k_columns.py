"""Large K without N x K state (issue 24): ColumnMemory (the K column sums of the global
pseudo-labels), its sparse rows, self-labeled centroids, and the estimator's global mode, which
must never hold an N x K matrix and must say at once when a fit cannot fit in memory."""
import numpy as np
import pytest
import torch

import entclust
from entclust import ColumnMemory, EntropyClustering
from entclust.cluster.centroids import kmeans_plusplus, lloyd, nearest, self_labeled_centroids
from entclust.metrics import clustering_accuracy
from entclust.testing import reference as R


def mixture(n=4000, d=16, k=20, spread=0.9, seed=0):
    """Overlapping Gaussian clusters: centres spread N(0, I), unit noise, uniform labels."""
    rng = np.random.default_rng(seed)
    centres = spread * rng.standard_normal((k, d))
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.standard_normal((n, d))
    return torch.from_numpy(((x - x.mean(0)) / x.std()).astype(np.float32)), labels


def test_one_batch_of_all_points_is_the_block_em_of_the_whole_problem():
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(50, 7, generator=g, dtype=torch.float64)
    prior = torch.softmax(torch.randn(7, generator=g, dtype=torch.float64), 0)
    memory = ColumnMemory(7, 50, 30.0, prior=prior, iterations=6)
    y = memory.update(logits)
    sigma = torch.softmax(logits, -1)
    ref = R.em_rce_block(sigma, sigma.clone(), torch.zeros(7, dtype=torch.float64), prior, 30.0, n_total=50, iterations=6)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(memory.columns, ref.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(memory.y_bar().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_the_state_is_k_numbers_and_rides_in_the_state_dict():
    memory = ColumnMemory(5, 1_000_000, 100.0)
    state = memory.state_dict()
    assert set(state) == {"prior", "columns"} and all(t.numel() == 5 for t in state.values())
    torch.testing.assert_close(memory.columns, torch.full((5,), 200_000.0, dtype=torch.float64))
    memory.update(torch.randn(100, 5))
    other = ColumnMemory(5, 1_000_000, 100.0)
    other.load_state_dict(memory.state_dict())
    assert torch.equal(other.columns, memory.columns)
    memory.reset()
    assert torch.equal(memory.columns, other.prior * 1_000_000)


def test_a_visit_replaces_the_batch_share_of_the_column_sums():
    """Each update removes b / N of the column mass (an average row's share) and adds the batch's
    new rows: the total mass stays N, and the batch's labels are pulled toward light classes."""
    memory = ColumnMemory(3, 100, 50.0, iterations=5)
    memory.columns.copy_(torch.tensor([60.0, 30.0, 10.0], dtype=torch.float64))
    logits = torch.zeros(10, 3, dtype=torch.float64)  # sigma uniform
    y = memory.update(logits)
    torch.testing.assert_close(memory.columns.sum(), torch.tensor(100.0, dtype=torch.float64))
    assert y[:, 2].mean() > y[:, 1].mean() > y[:, 0].mean()  # the lightest class gains most
    torch.testing.assert_close(y.sum(1), torch.ones(10, dtype=torch.float64))


def test_sparse_rows_equal_the_dense_ones_when_they_hold_every_class():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    dense, sparse = ColumnMemory(6, 200, 100.0), ColumnMemory(6, 200, 100.0)
    y_dense = dense.update(logits)
    order = torch.randperm(6, generator=g).expand(40, 6).contiguous()  # any order of the classes
    y_sparse = sparse.update_sparse(logits.gather(1, order), order)
    torch.testing.assert_close(torch.zeros_like(y_dense).scatter_(1, order, y_sparse), y_dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(sparse.columns, dense.columns, rtol=1e-12, atol=1e-10)


def test_column_memory_checks_its_arguments():
    with pytest.raises(ValueError, match="n_clusters must be an int >= 1"):
        ColumnMemory(0, 10)
    with pytest.raises(ValueError, match="lam must be a finite number"):
        ColumnMemory(3, 10, float("nan"))
    memory = ColumnMemory(3, 10)
    with pytest.raises(ValueError, match=r"logits must have shape \(b, 3\)"):
        memory.update(torch.randn(4, 5))
    with pytest.raises(ValueError, match="NaN"):
        memory.update(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="one shape"):
        memory.update_sparse(torch.randn(4, 2), torch.zeros(4, 3, dtype=torch.int64))
    before = memory.columns.clone()
    with pytest.raises(ValueError, match="a batch of 11 rows is more than n_points"):  # was: rest clamped to 0
        memory.update(torch.randn(11, 3))
    with pytest.raises(ValueError, match="a batch of 11 rows"):
        memory.update_sparse(torch.randn(11, 2), torch.zeros(11, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="a batch of 11 rows"):
        memory.add_columns(torch.ones(3), 11)
    assert torch.equal(memory.columns, before)
    memory.update(torch.randn(10, 3))  # every point in one batch is allowed
    torch.testing.assert_close(memory.columns.sum(), torch.tensor(10.0, dtype=torch.float64))


def test_self_labeled_centroids_split_what_lloyd_merges():
    """Overlapping clusters from the same k-means++ seeds: Lloyd's iterations stop in a local
    minimum (a centre on two clusters), the fairness of the pseudo-labels splits it."""
    x, labels = mixture()
    g = torch.Generator().manual_seed(0)
    seeds = kmeans_plusplus(x, 20, g)
    plain = clustering_accuracy(labels, nearest(x, lloyd(x, seeds))[0].numpy())
    mu, beta, history = self_labeled_centroids(x, seeds, 100.0)
    found = nearest(x, mu)[0].numpy()
    sizes = np.bincount(found, minlength=20)
    assert clustering_accuracy(labels, found) >= plain + 0.02, (clustering_accuracy(labels, found), plain)
    assert sizes.max() / sizes.mean() < 1.5 and (sizes > 0).all()
    assert beta > 0 and 1 <= len(history) <= 30 and history[-1]["changed"] < history[0]["changed"]
    sparse, _, _ = self_labeled_centroids(x, seeds, 100.0, top=8)
    assert clustering_accuracy(labels, nearest(x, sparse)[0].numpy()) >= clustering_accuracy(labels, found) - 0.02


def test_global_mode_never_holds_an_n_by_k_matrix():
    from entclust.testing.devices import OpDevices

    x, _ = mixture(n=30000, d=8, k=300, spread=2.0, seed=1)
    with OpDevices() as ops:
        est = EntropyClustering(300, random_state=0, epochs=1).fit(x.numpy())
        predicted = est.predict(x.numpy())
    assert est.pseudo_labels_ == "global" and est.init_ == "balanced"
    largest = max(c.numel for c in ops.calls)
    assert largest < 30000 * 300 // 2, largest
    assert (est.cluster_sizes_ > 0).all()
    # predict finds the fit's labels (the same logits, over blocks of rows)
    np.testing.assert_array_equal(predicted, est.labels_)


def test_a_fit_that_cannot_fit_says_so_at_once(monkeypatch):
    from entclust.cluster import scale

    monkeypatch.setattr(scale, "available_bytes", lambda: 2**30)  # 1 GiB free
    x = np.zeros((20000, 4), np.float32)
    x[:, 0] = np.arange(20000)
    with pytest.raises(MemoryError, match=r"needs about .* GiB for the N x K pseudo-labels .* pseudo_labels='global'"):
        EntropyClustering(5000, pseudo_labels="batch").fit(x)
    need, _ = scale.fit_memory(10**6, 64, 10**4, "global", "balanced", 1)
    assert need < 2 * 2**30  # a million points into ten thousand clusters: under 2 GiB above the data
    assert scale.fit_memory(10**6, 64, 10**4, "batch", "random", 1)[0] > 100 * 2**30


def test_defaults_beat_kmeans_on_overlapping_clusters():
    """The issue's failure: at K = 50 the large-K mode was its k-means++ start and nothing more.
    With the defaults it must at least match Lloyd's K-means from scikit-learn (n_init=1)."""
    from sklearn.cluster import KMeans

    x, labels = mixture(n=6000, d=16, k=50, spread=1.0, seed=2)
    est = EntropyClustering(50, random_state=0).fit(x.numpy())
    km = KMeans(50, n_init=1, random_state=0).fit(x.numpy())
    assert clustering_accuracy(labels, est.labels_) >= clustering_accuracy(labels, km.labels_)
    sizes = est.cluster_sizes_
    assert sizes.max() / sizes.mean() <= np.bincount(km.labels_).max() / np.bincount(km.labels_).mean()


def test_top_level_export():
    assert entclust.ColumnMemory is ColumnMemory and "ColumnMemory" in entclust.__all__


def test_a_centre_pair_in_one_cluster_splits_a_merged_one(monkeypatch):
    # 4 far-apart clusters; the start puts three centres in cluster 0 and one between clusters 2
    # and 3 (none in 1, 2 or 3 alone): fairness cannot pull a centre across to a far cluster (its
    # sigma there is ~0); the split step moves the extra ones into the fullest clusters, and the
    # rounds separate them
    g = torch.Generator().manual_seed(0)
    centres = 20 * torch.randn(4, 2, generator=g)
    truth = torch.arange(4).repeat(500)
    x = centres[truth] + torch.randn(2000, 2, generator=g)
    start = torch.stack([centres[0], centres[0] + 0.5, (centres[2] + centres[3]) / 2, centres[0] - 0.5])
    mu, _, history = self_labeled_centroids(x, start, 100.0, rounds=10, top=None)
    assert clustering_accuracy(truth.numpy(), nearest(x, mu)[0].numpy()) > 0.99
    assert sum(h["moved"] for h in history) >= 1
    # without the split step (its threshold out of reach) a merged pair of clusters stays
    from entclust.cluster import centroids

    monkeypatch.setattr(centroids, "SPLIT_ABOVE", float("inf"))
    mu, _, history = self_labeled_centroids(x, start, 100.0, rounds=10, top=None)
    assert clustering_accuracy(truth.numpy(), nearest(x, mu)[0].numpy()) <= 0.76
    assert all(h["moved"] == 0 for h in history)


@pytest.mark.parametrize("updates", [1, 3])
def test_spans_of_blocks_per_op_call_do_not_change_the_rounds(monkeypatch, updates):
    """Where the fused op runs, one call takes a span of blocks (the head is packed once for
    them); the centres, the objective's entries and the labels are those of one call a block,
    also where the centres move within a pass (``updates=3``: a span stops at each move)."""
    from entclust.cluster import centroids, scale

    g = torch.Generator().manual_seed(2)
    truth = 1.5 * torch.randn(400, 16, generator=g)
    x = truth[torch.randint(0, 400, (12000,), generator=g)] + torch.randn(12000, 16, generator=g)
    mu0 = x[:400].clone()
    monkeypatch.setattr(centroids, "BLOCK", 400 * 700)  # 700-row blocks: 18 of them
    runs = []
    for span_rows in (1, 10_000):  # one block a call; spans of 14 blocks
        monkeypatch.setattr(centroids, "SPAN_ROWS", span_rows)
        mu, beta, history = self_labeled_centroids(x, mu0, 100.0, rounds=3, tol=0.0, updates=updates)
        head = torch.nn.Linear(16, 400)
        with torch.no_grad():
            head.weight.copy_(beta * mu)
            head.bias.copy_(-0.5 * beta * mu.square().sum(1))
        blocks = [(i, v.clone(), j.clone()) for i, v, j in scale.head_top_blocks(head, x)]
        runs.append((mu, beta, blocks, nearest(x, mu)))
    assert len(runs[0][2]) == len(runs[1][2]) == 18
    (mu_a, beta_a, blocks_a, near_a), (mu_b, beta_b, blocks_b, near_b) = runs
    assert torch.equal(mu_a, mu_b) and beta_a == beta_b
    assert all(i == j and torch.equal(v, w) and torch.equal(a, b)
               for (i, v, a), (j, w, b) in zip(blocks_a, blocks_b))
    assert torch.equal(near_a[0], near_b[0]) and torch.equal(near_a[1], near_b[1])
