"""Clustering metrics (docs/maths.md, "Models and training"): accuracy under the best one-to-one
cluster-to-class map (Hungarian), normalised mutual information, adjusted Rand index, and the
confusion matrix after matching. Inputs are integer label vectors (numpy, lists or tensors)."""
from __future__ import annotations

import numpy as np


def _labels(name: str, a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector of labels, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
        a = a.astype(np.int64)
    return a


# Cells of the largest dense contingency table built (2 GiB of int64); evaluate's ACC (a Hungarian
# matching, cubic in the number of clusters) only up to ACC_CELLS.
DENSE_CELLS = 2**28
ACC_CELLS = 2**24


def _inverse(labels_true, labels_pred):
    t, p = _labels("labels_true", labels_true), _labels("labels_pred", labels_pred)
    if t.shape != p.shape:
        raise ValueError(f"labels_true and labels_pred must have the same length, got {t.size} and {p.size}")
    if t.size == 0:
        raise ValueError("labels_true and labels_pred are empty")
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    return classes, ti.reshape(-1), clusters, pi.reshape(-1)


def contingency(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(C, classes, clusters)``: ``C[c, k]`` counts points of class ``classes[c]`` put in
    cluster ``clusters[k]``; any integer values, not necessarily 0..K-1. Dense: a ``ValueError``
    above ``DENSE_CELLS`` cells (at K = 10^5 it would take 75 GiB); NMI, ARI and purity never
    build it."""
    inverse = _inverse(labels_true, labels_pred)
    return _table(*inverse), inverse[0], inverse[2]


def _table(classes, ti, clusters, pi) -> np.ndarray:
    if classes.size * clusters.size > DENSE_CELLS:
        raise ValueError(f"the contingency table of {classes.size} classes x {clusters.size} clusters would take "
                         f"{classes.size * clusters.size * 8 / 2**30:.1f} GiB; the accuracy and the matched confusion "
                         f"matrix need it whole (normalized_mutual_info, adjusted_rand_index and purity do not)")
    table = np.zeros((classes.size, clusters.size), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def _cells(classes, ti, clusters, pi):
    """The contingency table (of :func:`_inverse`'s codes) without its zeros: ``(counts, row,
    col, class sizes, cluster sizes)``, the nonzero cells in row-major order (the order of
    ``table[table > 0]``)."""
    codes, counts = np.unique(ti.astype(np.int64) * clusters.size + pi, return_counts=True)
    return (counts, codes // clusters.size, codes % clusters.size, np.bincount(ti, minlength=classes.size),
            np.bincount(pi, minlength=clusters.size))


def _matching(table: np.ndarray):
    from scipy.optimize import linear_sum_assignment

    # Rectangular tables are fine: min(#classes, #clusters) pairs are matched, the rest unmatched.
    return linear_sum_assignment(-table)


def clustering_accuracy(labels_true, labels_pred) -> float:
    """Share of points whose cluster is mapped to their class by the best one-to-one map
    (Hungarian algorithm on the contingency table). With more clusters than classes, the
    unmatched clusters count as errors; with fewer, the unmatched classes do."""
    return _accuracy(contingency(labels_true, labels_pred)[0])


def _accuracy(table: np.ndarray) -> float:
    rows, cols = _matching(table)
    return float(table[rows, cols].sum() / table.sum())


def matched_confusion_matrix(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confusion matrix with clusters reordered so that cluster ``j`` is matched to class ``j``
    (the diagonal holds the correctly clustered counts, its sum over ``N`` is the accuracy).
    Returns ``(matrix, classes, cluster_order)``: rows are ``classes``, column ``j`` is cluster
    ``cluster_order[j]``; unmatched clusters come last."""
    table, classes, clusters = contingency(labels_true, labels_pred)
    rows, cols = _matching(table)
    order = np.full(classes.size, -1, dtype=np.int64)
    order[rows] = cols
    matched = [c for c in order if c >= 0]
    rest = [c for c in range(clusters.size) if c not in set(matched)]
    # Classes left without a cluster get an all-zero column, so the diagonal stays aligned.
    columns = [table[:, c] if c >= 0 else np.zeros(classes.size, np.int64) for c in order]
    columns += [table[:, c] for c in rest]
    labels = [clusters[c] if c >= 0 else -1 for c in order] + [clusters[c] for c in rest]
    return np.stack(columns, 1), classes, np.asarray(labels)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """``I(T; P) / ((H(T) + H(P)) / 2)`` (arithmetic normalisation, scikit-learn's default);
    1 for identical partitions up to renaming, 1 when both are a single cluster."""
    return _nmi(_cells(*_inverse(labels_true, labels_pred)))


def _nmi(cells) -> float:
    counts, row, col, sizes_t, sizes_p = cells
    n = counts.sum()
    h_t, h_p = _entropy(sizes_t), _entropy(sizes_p)
    if h_t == 0 and h_p == 0:
        return 1.0
    outer = sizes_t[row] * sizes_p[col]
    mi = float((counts / n * np.log(counts * n / outer)).sum())
    return max(0.0, mi / ((h_t + h_p) / 2)) if (h_t + h_p) > 0 else 0.0


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Hubert-Arabie adjusted Rand index: 1 for identical partitions, 0 in expectation for
    random ones, negative below chance."""
    return _ari(_cells(*_inverse(labels_true, labels_pred)))


def _ari(cells) -> float:
    counts, _, _, sizes_t, sizes_p = cells
    pairs = lambda x: (x * (x - 1) / 2.0).sum()  # noqa: E731  number of same-group pairs
    n = counts.sum()
    index, a, b = pairs(counts), pairs(sizes_t), pairs(sizes_p)
    expected = a * b / (n * (n - 1) / 2.0) if n > 1 else 0.0
    maximum = (a + b) / 2
    if maximum == expected:  # both partitions trivial (one group, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))


def purity(labels_true, labels_pred) -> float:
    """Many-to-one accuracy: each cluster is mapped to its most frequent class (several clusters
    may share one), the share of points so mapped correctly. Equals ACC when the map happens to
    be one-to-one; the score to read when K is larger than the number of classes."""
    return _purity(_cells(*_inverse(labels_true, labels_pred)))


def _purity(cells) -> float:
    counts, _, col, _, sizes_p = cells
    largest = np.zeros(sizes_p.size, dtype=np.int64)
    np.maximum.at(largest, col, counts)
    return float(largest.sum() / counts.sum())


def evaluate(labels_true, labels_pred) -> dict:
    """``{"acc": ..., "nmi": ..., "ari": ..., "purity": ...}``; ``acc`` is NaN where classes x
    clusters exceed ``ACC_CELLS`` (the Hungarian matching would take longer than a fit). The
    labels are read once for all four."""
    inverse = _inverse(labels_true, labels_pred)
    cells = _cells(*inverse)
    small = inverse[0].size * inverse[2].size <= ACC_CELLS
    return {"acc": _accuracy(_table(*inverse)) if small else float("nan"), "nmi": _nmi(cells), "ari": _ari(cells),
            "purity": _purity(cells)}


def format_scores(scores: dict) -> str:
    """``evaluate``'s scores on one line, in percent (``ACC -`` where it was left out)."""
    return "  ".join(f"{key.upper()} {100 * value:.2f}%" if value == value else f"{key.upper()} -"
                     for key, value in scores.items())
