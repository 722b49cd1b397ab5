"""``EntropyClustering``: discriminative entropy clustering of fixed feature vectors as a
scikit-learn estimator (the papers' "low-level" setting, MATH.md "Models and training")."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ..data import SCALINGS, Scaler
from ..ops.checks import prior_vector
from . import methods as _builtin  # noqa: F401  (registers the built-in methods)
from .registry import EstimatorMethod, HeadMethod, get


class EntropyClustering(ClusterMixin, BaseEstimator):
    """Cluster feature vectors with a linear softmax head trained by self-labeling.

    A linear layer ``x -> softmax(v^T x + b)`` (Kaiming-normal ``v``, zero bias) is trained by
    plain SGD over shuffled mini-batches; on each batch the method's objective is minimised,
    for ``method="rce"`` (default) ``mean_i H(sigma_i, y_i) + lam KL(u || y_bar) + gamma ||v||^2``
    with the pseudo-labels ``y`` re-solved on the batch by the fused EM solver (the papers'
    "batch version"). Every registered head method can be picked by name
    (:func:`entclust.cluster.available`): ``"rce"``, ``"cce"`` (ours), ``"mi-gd"``, ``"sela"``,
    ``"mi-adm"`` (baselines); K-means is :func:`entclust.make_estimator` ``("kmeans", K)``.

    Parameters
    ----------
    n_clusters : K, the number of clusters (1 <= K <= number of points).
    method : head method name (see above).
    lam : fairness weight lambda of "rce"/"cce" (100 in the papers; mean-form loss, so the solver
        uses ``c = lam * batch size``).
    gamma : margin weight ``gamma ||v||^2`` (bias excluded), used by every head method.
    epochs, batch_size, lr : SGD schedule. The points are split each epoch into
        ``max(1, round(N / batch_size))`` near-equal batches (no tiny tail batch).
    prior : target cluster proportions u, ``(K,)`` summing to 1 (uniform when None).
    standardize : ``"auto"`` (default: ``"features"`` for features in different units, else
        ``"global"``), ``"global"`` (centre, divide by one overall scale; keeps the
        geometry), ``"features"`` (z-score each feature) or ``"none"``; see :class:`entclust.data.Scaler`.
    method_params : dict of the method's own parameters (``entclust.cluster.get(name).defaults``),
        e.g. ``{"solver": "newton"}`` for "rce" or ``{"weight": 1.3}`` for "mi-gd".
    n_init : independent trainings from different random heads; the one with the lowest
        objective on all points (the method's loss, pseudo-labels solved on all points) is kept,
        as K-means keeps its best restart. Linear entropy clustering has poor local minima
        (seed 004 Fig. 3): on elongated clusters a run can lock onto the cut along the long axis.
    device : torch device for training (CPU kernels everywhere; on CUDA the solvers run their
        pure-PyTorch versions on the device).
    random_state : int, RandomState or None; a fixed value makes ``fit`` reproducible.
    verbose : show a tqdm progress bar over epochs.

    Attributes
    ----------
    labels_ : cluster of each training point. cluster_sizes_ : points per cluster, ``(K,)``.
    history_ : one dict per epoch of the kept run: mean batch loss, seconds, number of empty clusters
        and, for "rce"/"cce", the pseudo-label solves of the epoch, how many stopped unconverged
        (at ``method_params["max_iter"]``) and their largest Frank-Wolfe gap.
    objective_ : the kept run's objective on all points.
    head_ : the trained ``nn.Linear``. scaler_ : the fitted preprocessing. n_features_in_.
    """

    def __init__(self, n_clusters: int = 10, method: str = "rce", lam: float = 100.0, gamma: float = 0.01,
                 epochs: int = 50, batch_size: int = 250, lr: float = 1.0, prior=None, standardize: str = "auto",
                 method_params=None, n_init: int = 1, device: str = "cpu", random_state=None, verbose: bool = False):
        self.n_clusters = n_clusters
        self.method = method
        self.lam = lam
        self.gamma = gamma
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.prior = prior
        self.standardize = standardize
        self.method_params = method_params
        self.n_init = n_init
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ---- checks -------------------------------------------------------------------------
    def _method(self):
        method = get(self.method)
        if not isinstance(method, HeadMethod):
            raise ValueError(f"method {self.method!r} is not a linear-head method; use "
                             f"entclust.make_estimator({self.method!r}, n_clusters)")
        params = dict(method.defaults)
        unknown = set(self.method_params or {}) - set(params)
        if unknown:
            raise ValueError(f"method_params {sorted(unknown)} are not parameters of method {self.method!r} "
                             f"(it takes {sorted(params)})")
        params.update(self.method_params or {})
        return method, params

    def _check_params(self, n: int) -> None:
        def positive_int(name, value, low=1):
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low):
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

        positive_int("n_clusters", self.n_clusters)
        if self.n_clusters > n:
            raise ValueError(f"n_clusters={self.n_clusters} is larger than the number of points N={n}")
        positive_int("epochs", self.epochs, 0)
        positive_int("batch_size", self.batch_size)
        positive_int("n_init", self.n_init)
        for name in ("lam", "gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.standardize not in SCALINGS:
            raise ValueError(f"standardize must be one of {SCALINGS}, got {self.standardize!r}")

    def _prior(self):
        if self.prior is None:
            return None
        return prior_vector(self.prior, self.n_clusters, torch.zeros(1, dtype=torch.float64))

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train on ``X`` ``(N, D)``; ``y`` is ignored (unsupervised)."""
        x = validate_data(self, X, dtype=np.float64, ensure_min_samples=1)
        self._check_params(x.shape[0])
        method, params = self._method()
        self.prior_ = self._prior()
        rng = check_random_state(self.random_state)
        generator = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        device = torch.device(self.device)

        self.scaler_ = Scaler(self.standardize).fit(x)
        features = torch.as_tensor(self.scaler_.transform(x), dtype=torch.float32).to(device)
        criterion = method.build(_Settings(self), params).to(device)
        best = None
        for run in range(self.n_init):
            head, history = self._train(features, criterion, generator, run)
            with torch.no_grad():  # the method's own objective on all points picks the restart
                objective = float(criterion(head(features), head))
            if best is None or objective < best[0]:
                best = (objective, head, history)
        self.objective_, head, self.history_ = best
        self.head_ = head.cpu().eval()
        self.n_iter_ = self.epochs
        self.labels_ = self._logits(features.cpu()).argmax(1).numpy()
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters)
        return self

    def _train(self, features: torch.Tensor, criterion, generator: torch.Generator, run: int):
        n, d = features.shape
        # skip_init: nn.Linear's own initialisation would draw from (and advance) the global RNG
        head = torch.nn.utils.skip_init(nn.Linear, d, self.n_clusters)
        with torch.no_grad():  # Kaiming normal (fan-in, gain sqrt 2), zero bias
            head.weight.copy_(torch.randn(self.n_clusters, d, generator=generator) * math.sqrt(2.0 / d))
            head.bias.zero_()
        head = head.to(features.device)
        optimizer = torch.optim.SGD(head.parameters(), lr=self.lr)
        n_batches = max(1, round(n / self.batch_size))
        history = []
        epochs = range(self.epochs)
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            desc = f"EntropyClustering({self.method})" + (f" run {run + 1}/{self.n_init}" if self.n_init > 1 else "")
            epochs = bar = tqdm(epochs, desc=desc, unit="epoch", disable=None)  # none when not a terminal
        for epoch in epochs:
            start, total = time.perf_counter(), 0.0
            order = torch.randperm(n, generator=generator).to(features.device)
            for idx in torch.tensor_split(order, n_batches):
                loss = criterion(head(features[idx]), head)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"EntropyClustering({self.method!r}): the loss became {loss.item()} in epoch {epoch}; "
                        f"lower lr (now {self.lr}) or check the features")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx) / n
            with torch.no_grad():
                sizes = torch.bincount(head(features).argmax(1), minlength=self.n_clusters)
            history.append({"epoch": epoch + 1, "loss": total, "seconds": time.perf_counter() - start,
                            "empty_clusters": int((sizes == 0).sum())})
            stats = getattr(criterion, "stats", None)
            if stats is not None:  # SelfLabeling: the epoch's pseudo-label solves that did not converge
                history[-1].update(solves=stats["solves"], unconverged_solves=stats["unconverged"],
                                   max_fw_gap=stats["max_gap"])
                criterion.reset_stats()
            if bar is not None:
                bar.set_postfix(loss=f"{total:.4f}", empty=history[-1]["empty_clusters"])
        return head, history

    # ---- inference ----------------------------------------------------------------------
    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.head_(features)

    def _transform(self, X) -> torch.Tensor:
        check_is_fitted(self)
        x = validate_data(self, X, dtype=np.float64, reset=False)
        return torch.as_tensor(self.scaler_.transform(x), dtype=torch.float32)

    def predict_proba(self, X) -> np.ndarray:
        """Soft cluster memberships ``softmax(v^T x + b)``, ``(N, K)``."""
        return torch.softmax(self._logits(self._transform(X)), 1).numpy().astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """The most probable cluster of each point."""
        return self._logits(self._transform(X)).argmax(1).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class _Settings:
    """The estimator's hyperparameters as the method's ``build`` reads them (the prior validated)."""

    def __init__(self, est: EntropyClustering):
        self.lam, self.gamma, self.prior, self.n_clusters = float(est.lam), float(est.gamma), est.prior_, est.n_clusters


def make_estimator(name: str, n_clusters: int, *, random_state=None, **params):
    """An unfitted estimator for method ``name``: :class:`EntropyClustering` for head methods
    (``params`` are its arguments), the method's own estimator otherwise."""
    method = get(name)
    if isinstance(method, EstimatorMethod):
        return method.make(n_clusters, random_state=random_state, **params)
    return EntropyClustering(n_clusters, method=name, random_state=random_state, **params)


__all__ = ["EntropyClustering", "make_estimator"]
