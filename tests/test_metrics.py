"""Clustering metrics against hand-computed cases and scikit-learn."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from entclust import metrics


def test_accuracy_hand_cases():
    # clusters are a renaming of the classes: perfect
    assert metrics.clustering_accuracy([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1]) == 1.0
    # best map 1->0, 0->1: 4 of 6 right
    assert metrics.clustering_accuracy([0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 1]) == pytest.approx(4 / 6)
    # more clusters than classes: one cluster stays unmatched and counts as errors
    assert metrics.clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 2]) == pytest.approx(3 / 4)
    # fewer clusters than classes: one class is unmatched
    assert metrics.clustering_accuracy([0, 1, 2, 2], [5, 5, 7, 7]) == pytest.approx(3 / 4)
    # tensors and float labels that are integers are accepted
    assert metrics.clustering_accuracy(torch.tensor([0, 1]), np.array([1.0, 0.0])) == 1.0


def test_nmi_and_ari_hand_cases():
    same = [0, 0, 1, 1]
    assert metrics.normalized_mutual_info(same, [1, 1, 0, 0]) == pytest.approx(1.0)
    assert metrics.adjusted_rand_index(same, [1, 1, 0, 0]) == pytest.approx(1.0)
    # independent partitions: no information; ARI = (0 - 1) / (2 - 1) = -1 by hand
    assert metrics.normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert metrics.adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    t, p = rng.integers(0, 4, 200), rng.integers(0, 6, 200)
    p[:120] = t[:120]  # partly agreeing
    assert metrics.normalized_mutual_info(t, p) == pytest.approx(skm.normalized_mutual_info_score(t, p), abs=1e-12)
    assert metrics.adjusted_rand_index(t, p) == pytest.approx(skm.adjusted_rand_score(t, p), abs=1e-12)


def test_matched_confusion_matrix_diagonal_is_accuracy():
    t = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    p = np.array([3, 3, 1, 1, 1, 0, 0, 4])
    matrix, classes, order = metrics.matched_confusion_matrix(t, p)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics.clustering_accuracy(t, p))
    assert classes.tolist() == [0, 1, 2]
    assert order[:3].tolist() == [3, 1, 0] and sorted(order[3:].tolist()) == [4]
    assert matrix.shape == (3, 4) and matrix.sum() == len(t)


def test_metric_errors_name_the_problem():
    with pytest.raises(ValueError, match="same length"):
        metrics.clustering_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="1-D"):
        metrics.clustering_accuracy(np.zeros((2, 2), int), [0, 1])
    with pytest.raises(ValueError, match="integer labels"):
        metrics.adjusted_rand_index([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        metrics.normalized_mutual_info([], [])


def test_nmi_ari_and_purity_at_large_k_without_the_dense_table():
    """At K = 10^5 the dense contingency table would take tens of GiB: NMI, ARI and purity sum its
    nonzero cells only; the dense table, and so ACC, says why it cannot be built; evaluate leaves
    ACC out (NaN) where the matching would cost more than the fit."""
    rng = np.random.default_rng(0)
    t = rng.integers(0, 100_000, 300_000)
    p = np.where(rng.random(t.size) < 0.8, t, rng.integers(0, 100_000, t.size)) + 7
    assert metrics.normalized_mutual_info(t, p) == pytest.approx(skm.normalized_mutual_info_score(t, p), abs=1e-12)
    assert metrics.adjusted_rand_index(t, p) == pytest.approx(skm.adjusted_rand_score(t, p), abs=1e-12)
    table = skm.cluster.contingency_matrix(t, p, sparse=True)
    assert metrics.purity(t, p) == pytest.approx(table.max(0).sum() / t.size)
    with pytest.raises(ValueError, match=r"classes x \d+ clusters would take \d+\.\d GiB; the accuracy"):
        metrics.clustering_accuracy(t, p)
    scores = metrics.evaluate(t, p)
    assert np.isnan(scores["acc"]) and scores["nmi"] == metrics.normalized_mutual_info(t, p)
    assert metrics.format_scores(scores).startswith("ACC -  NMI ")  # the CLIs' line
    # small tables: the same numbers as the dense table gave (the cells in the same order)
    t, p = t[:500] % 7, p[:500] % 5
    dense, _, _ = metrics.contingency(t, p)
    assert metrics.purity(t, p) == dense.max(0).sum() / dense.sum()
    assert metrics.evaluate(t, p)["acc"] == metrics.clustering_accuracy(t, p)
