"""K-means (scikit-learn's ``KMeans``, k-means++ with 10 restarts) on the harness's features."""
from __future__ import annotations

from ..registry import EstimatorMethod, register
from ._scaled import ScaledClusterer


class ScaledKMeans(ScaledClusterer):
    """``KMeans`` after the same :class:`~entclust.data.Scaler` the head methods use."""

    def __init__(self, n_clusters: int = 8, *, n_init: int = 10, standardize: str = "auto", random_state=None):
        self.n_clusters, self.n_init, self.standardize, self.random_state = n_clusters, n_init, standardize, random_state

    def _make(self):
        from sklearn.cluster import KMeans

        return KMeans(self.n_clusters, n_init=self.n_init, random_state=self.random_state)

    @property
    def kmeans_(self):
        return self.model_


@register("kmeans")
class KMeansMethod(EstimatorMethod):
    """Lloyd's K-means: the generative, isotropic baseline (Zhang & Boykov 2024 Fig. 1)."""

    defaults = {"n_init": 10}

    def make(self, n_clusters, *, random_state=None, standardize="auto", **params):
        return ScaledKMeans(n_clusters, standardize=standardize, random_state=random_state,
                            **{**self.defaults, **params})
