"""The clustering step of selective pseudo-label clustering: a manifold step (UMAP, or a spectral
embedding without the extra dependency), a clusterer cut to K clusters, labellings aligned by the
Hungarian algorithm, and their consensus."""
from __future__ import annotations

import numpy as np

SPECTRAL_NEIGHBOURS = 15


def align(labels: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """``labels`` renamed to best match ``reference`` (Hungarian algorithm on the K x K overlap)."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((k, k), dtype=np.int64)
    np.add.at(overlap, (labels, reference), 1)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[labels]


def consensus(labellings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mode label of each point, agreed mask)`` of aligned labellings ``(L, N)``."""
    n = labellings.shape[1]
    counts = np.zeros((n, k), dtype=np.int64)
    for row in labellings:
        counts[np.arange(n), row] += 1
    agreed = (labellings == labellings[0]).all(0)
    return counts.argmax(1), agreed


def hdbscan_cut(z: np.ndarray, k: int, min_samples: int):
    """HDBSCAN's single-linkage tree cut at a distance that gives exactly k clusters, noise points
    given to the nearest cluster mean; None when no cut gives k. The number of clusters is not
    monotone in the cut (small cuts leave every point noise), so a geometric grid of 120 cuts is
    scanned and, of those giving k clusters, the one with the fewest noise points is kept."""
    size = max(5, len(z) // (4 * k))
    try:
        import hdbscan

        model = hdbscan.HDBSCAN(min_samples=min_samples, min_cluster_size=size).fit(z)
        cut = lambda d: model.single_linkage_tree_.get_clusters(d, min_cluster_size=size)  # noqa: E731
    except ImportError:
        from sklearn.cluster import HDBSCAN

        model = HDBSCAN(min_samples=min_samples, min_cluster_size=size, copy=True).fit(z)
        cut = lambda d: model.dbscan_clustering(d, min_cluster_size=size)  # noqa: E731
    top = float(np.linalg.norm(z.max(0) - z.min(0)))
    best = None
    for distance in np.geomspace(top * 1e-4, top, 120):
        labels = cut(distance)
        if len(set(labels.tolist()) - {-1}) == k and (best is None or (labels < 0).sum() < (best < 0).sum()):
            best = labels
    if best is None:
        return None
    found = best >= 0
    labels = np.full(len(z), -1, dtype=np.int64)
    labels[found] = np.searchsorted(np.unique(best[found]), best[found])  # ids 0 .. k-1
    if not found.all():
        centres = np.stack([z[labels == c].mean(0) for c in range(k)])
        labels[~found] = ((z[~found, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return labels


def spectral_embedding(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """scikit-learn's Laplacian eigenmap of the symmetrised 15-nearest-neighbour graph into k
    dimensions, rows scaled to unit length (Ng, Jordan and Weiss's spectral clustering), then
    standardised: the manifold step of UMAP without the umap-learn dependency. A graph of at most
    k components is no problem (the eigenvectors are then constant on each component, which
    separates them); one of more than k has more null eigenvectors than dimensions, mixed
    arbitrarily (the split then groups whole components at random: tested), so the neighbours
    are doubled until it has at most k."""
    import warnings

    from scipy.sparse.csgraph import connected_components
    from sklearn.manifold import SpectralEmbedding
    from sklearn.neighbors import kneighbors_graph

    neighbours = min(SPECTRAL_NEIGHBOURS, len(z) - 1)
    while True:
        graph = kneighbors_graph(z, neighbours, include_self=True)  # as scikit-learn's affinity
        graph = 0.5 * (graph + graph.T)
        if neighbours >= len(z) - 1 or connected_components(graph, directed=False)[0] <= k:
            break
        neighbours = min(2 * neighbours, len(z) - 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Graph is not fully connected")
        e = SpectralEmbedding(k, affinity="precomputed", random_state=seed).fit_transform(graph)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return (e - e.mean(0)) / max(float(e.std()), 1e-12)


def umap_class():
    """umap-learn's ``UMAP`` class, or None when it is not installed (or broken)."""
    try:
        import umap

        return getattr(umap, "UMAP", None)
    except ImportError:
        return None


__all__ = ["align", "consensus", "hdbscan_cut", "spectral_embedding", "umap_class"]
