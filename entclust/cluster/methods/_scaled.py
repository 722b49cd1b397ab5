"""The shared shape of the scikit-learn baselines in the harness: the method's Scaler, then a
scikit-learn clusterer (``_make``), ``labels_`` and ``cluster_sizes_`` from its fit."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ...data import Scaler


class ScaledClusterer(ClusterMixin, BaseEstimator):
    """Subclasses set ``n_clusters``, ``standardize`` and ``random_state`` and define ``_make()``."""

    def _make(self):  # pragma: no cover - interface
        raise NotImplementedError

    def fit(self, X, y=None):
        x = validate_data(self, X, dtype=np.float64)
        if self.n_clusters > x.shape[0]:
            raise ValueError(f"n_clusters={self.n_clusters} is larger than the number of points N={x.shape[0]}")
        self.scaler_ = Scaler(self.standardize).fit(x)
        self.model_ = self._make()
        self.labels_ = self.model_.fit_predict(self.scaler_.transform(x))
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters)
        return self

    def predict(self, X):
        check_is_fitted(self)
        return self.model_.predict(self.scaler_.transform(validate_data(self, X, dtype=np.float64, reset=False)))
