"""Gaussian mixture (scikit-learn's ``GaussianMixture``, full covariances, EM) on the harness's
features: the generative baseline users compare with first on small tabular data."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ...data import Scaler
from ..registry import EstimatorMethod, register


class ScaledGaussianMixture(ClusterMixin, BaseEstimator):
    """``GaussianMixture`` after the same :class:`~entclust.data.Scaler` the other methods use;
    ``labels_`` are the most probable components."""

    def __init__(self, n_clusters: int = 8, *, covariance_type: str = "full", n_init: int = 1,
                 standardize: str = "auto", random_state=None):
        self.n_clusters, self.covariance_type, self.n_init = n_clusters, covariance_type, n_init
        self.standardize, self.random_state = standardize, random_state

    def fit(self, X, y=None):
        from sklearn.mixture import GaussianMixture

        x = validate_data(self, X, dtype=np.float64)
        if self.n_clusters > x.shape[0]:
            raise ValueError(f"n_clusters={self.n_clusters} is larger than the number of points N={x.shape[0]}")
        self.scaler_ = Scaler(self.standardize).fit(x)
        # reg_covar keeps a component's covariance invertible on constant or duplicated features
        self.mixture_ = GaussianMixture(self.n_clusters, covariance_type=self.covariance_type, n_init=self.n_init,
                                        reg_covar=1e-4, random_state=self.random_state)
        self.labels_ = self.mixture_.fit_predict(self.scaler_.transform(x))
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters)
        return self

    def predict(self, X):
        check_is_fitted(self)
        return self.mixture_.predict(self.scaler_.transform(validate_data(self, X, dtype=np.float64, reset=False)))


@register("gmm")
class GaussianMixtureMethod(EstimatorMethod):
    """A mixture of K full-covariance Gaussians fitted by EM (generative)."""

    defaults = {"covariance_type": "full", "n_init": 1}

    def make(self, n_clusters, *, random_state=None, standardize="auto", **params):
        return ScaledGaussianMixture(n_clusters, standardize=standardize, random_state=random_state,
                                     **{**self.defaults, **params})
