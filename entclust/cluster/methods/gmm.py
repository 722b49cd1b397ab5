"""Gaussian mixture (scikit-learn's ``GaussianMixture``, full covariances, EM) on the harness's
features: the generative baseline users compare with first on small tabular data."""
from __future__ import annotations

from ..registry import EstimatorMethod, register
from ._scaled import ScaledClusterer


class ScaledGaussianMixture(ScaledClusterer):
    """``GaussianMixture`` after the same :class:`~entclust.data.Scaler` the other methods use;
    ``labels_`` are the most probable components."""

    def __init__(self, n_clusters: int = 8, *, covariance_type: str = "full", n_init: int = 1,
                 standardize: str = "auto", random_state=None):
        self.n_clusters, self.covariance_type, self.n_init = n_clusters, covariance_type, n_init
        self.standardize, self.random_state = standardize, random_state

    def _make(self):
        from sklearn.mixture import GaussianMixture

        # reg_covar keeps a component's covariance invertible on constant or duplicated features
        return GaussianMixture(self.n_clusters, covariance_type=self.covariance_type, n_init=self.n_init,
                               reg_covar=1e-4, random_state=self.random_state)

    @property
    def mixture_(self):
        return self.model_


@register("gmm")
class GaussianMixtureMethod(EstimatorMethod):
    """A mixture of K full-covariance Gaussians fitted by EM (generative)."""

    defaults = {"covariance_type": "full", "n_init": 1}

    def make(self, n_clusters, *, random_state=None, standardize="auto", **params):
        return ScaledGaussianMixture(n_clusters, standardize=standardize, random_state=random_state,
                                     **{**self.defaults, **params})
