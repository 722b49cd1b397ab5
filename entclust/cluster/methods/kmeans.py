"""K-means (scikit-learn's ``KMeans``, k-means++ with 10 restarts) on the harness's features."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ...data import Scaler
from ..registry import EstimatorMethod, register


class ScaledKMeans(ClusterMixin, BaseEstimator):
    """``KMeans`` after the same :class:`~entclust.data.Scaler` the head methods use."""

    def __init__(self, n_clusters: int = 8, *, n_init: int = 10, standardize: str = "auto", random_state=None):
        self.n_clusters, self.n_init, self.standardize, self.random_state = n_clusters, n_init, standardize, random_state

    def fit(self, X, y=None):
        from sklearn.cluster import KMeans

        x = validate_data(self, X, dtype=np.float64)
        if self.n_clusters > x.shape[0]:
            raise ValueError(f"n_clusters={self.n_clusters} is larger than the number of points N={x.shape[0]}")
        self.scaler_ = Scaler(self.standardize).fit(x)
        self.kmeans_ = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.random_state)
        self.labels_ = self.kmeans_.fit_predict(self.scaler_.transform(x))
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters)
        return self

    def predict(self, X):
        check_is_fitted(self)
        return self.kmeans_.predict(self.scaler_.transform(validate_data(self, X, dtype=np.float64, reset=False)))


@register("kmeans")
class KMeansMethod(EstimatorMethod):
    """Lloyd's K-means: the generative, isotropic baseline (seed 004 Fig. 1)."""

    defaults = {"n_init": 10}

    def make(self, n_clusters, *, random_state=None, standardize="auto", **params):
        return ScaledKMeans(n_clusters, standardize=standardize, random_state=random_state,
                            **{**self.defaults, **params})
