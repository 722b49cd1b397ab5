"""``DeepEntropyClustering``: a network trained end to end by self-labeling, as a scikit-learn
style clusterer of images ``(N, C, H, W)`` or vectors ``(N, D)``."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._params import Int, Real, check_params
from .._warn import say_fit_failures
from ..data import Scaler
from .models import default_network
from .trainer import SelfLabelingTrainer


class DeepEntropyClustering(ClusterMixin, BaseEstimator):
    """Cluster images or vectors with a network trained by self-labeling (the papers' deep setting).

    The network is picked from the input's shape: VGG4 (Zhang & Boykov 2023a Table 5: the 28x28x1 column
    for one channel, the 32x32x3 column for colour, the strided 96x96x3 column from 64 pixels a
    side) for images, IMSAT's MLP ``d-1200-1200`` for vectors; ``width`` scales its channels.
    Images are scaled to [0, 1] when they are integers, then standardised per channel; vectors
    by :class:`entclust.data.Scaler`. Training: :class:`entclust.deep.SelfLabelingTrainer`
    (``views`` augmentations per image averaged, pseudo-labels solved per batch or kept
    for all points, Adam).

    Parameters
    ----------
    n_clusters : K. method : ``"rce"`` or ``"cce"`` (ours), or a baseline in the same harness:
        ``"mi-gd"`` (IMSAT), ``"sela"``, ``"mi-adm"``, ``"renyi"``, ``"iic"`` (see the trainer);
        ``method_params`` overrides a baseline's own parameters, and for ours sets the
        pseudo-label solve (e.g. ``{"solver": "newton", "tol_gap": 1e-6}``: the trainer's
        ``SOLVE_OPTIONS``). lam, gamma,
        prediction_fairness : the objective's weights (Zhang & Boykov 2023a E.3: lam 100, the head's weight
        decay 0.01).
    network : ``"auto"`` or a callable ``(sample_shape, n_clusters, n_heads) -> nn.Module`` whose
        forward returns ``(H, N, K)`` or ``(N, K)`` logits (and ``.heads`` for the margin term).
    width : channel multiplier of the default network; ``"auto"``: the papers' widths (1.0) for
        vectors and for images of 16 pixels a side or more, 0.5 below (8x8 digits: the last two
        5x5 convolutions see 2x2 and 1x1 maps; half the channels reached 92 % on digits in
        about a fifth of the time a run, see the README). n_heads : sub-heads trained side by side;
        the one with the lowest objective on all points is kept (label-free).
    overcluster : clusters of IIC's auxiliary overclustering head (0: none).
    views, augment : self-augmentation (``"auto"``: the preset for the input, see
        :mod:`entclust.deep.augment`). consistency : > 0 for Zhang & Boykov 2024's consistency form of
        self-augmentation instead of the averaged prediction (see the trainer).
    pseudo_labels : ``"auto"`` (global labels of all points when ``batch_size < 20 K``, method
        "rce"), ``"batch"`` or ``"global"`` (see the trainer). epochs, batch_size, lr, optimizer : the schedule (the
        seeds': Adam 1e-4, batch 250, 50 epochs; 1e-3 did better on digits but stalled on one
        of two MNIST seeds, see docs/guides/deep.md).
    checkpoint : a path for resumable checkpoints (``fit(..., resume=True)`` continues).
    device, random_state, verbose : as :class:`entclust.EntropyClustering`.

    Attributes: ``labels_``, ``model_``, ``history_`` (per epoch, see the trainer),
    ``objectives_`` (each sub-head's objective), ``selected_head_``, ``trainer_``.
    """

    PARAMETERS = {"n_clusters": Int(1), "width": Real(0, "auto", strict=True), "n_heads": Int(1)}

    def __init__(self, n_clusters: int = 10, method: str = "rce", *, lam: float = 100.0, gamma: float = 0.01,
                 prediction_fairness: float | None = None, network="auto", width="auto", n_heads: int = 1,
                 overcluster: int = 0, views: int = 2, augment="auto", consistency: float = 0.0,
                 pseudo_labels: str = "auto", epochs: int = 50, batch_size: int = 250, lr: float = 1e-4,
                 optimizer: str = "adam", method_params=None, checkpoint=None, device: str = "cpu",
                 random_state=None, verbose: bool = False):
        self.n_clusters = n_clusters
        self.method = method
        self.lam = lam
        self.gamma = gamma
        self.prediction_fairness = prediction_fairness
        self.network = network
        self.width = width
        self.n_heads = n_heads
        self.overcluster = overcluster
        self.views = views
        self.augment = augment
        self.consistency = consistency
        self.pseudo_labels = pseudo_labels
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.method_params = method_params
        self.checkpoint = checkpoint
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ---- input ----------------------------------------------------------------------------
    def _inputs(self, X, fitting: bool) -> torch.Tensor:
        x = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"X must be numbers, got dtype {x.dtype}")
        if np.iscomplexobj(x):
            raise TypeError("X must be real numbers, got complex values")
        if x.ndim not in (2, 4):
            raise ValueError(f"X must be images (N, C, H, W) or vectors (N, D), got shape {x.shape}")
        if fitting and x.shape[0] < 2:
            raise ValueError(f"X needs at least 2 points, got {x.shape[0]}")
        if 0 in x.shape[1:]:
            raise ValueError(f"X must have at least one feature (and pixel) per point, got shape {x.shape}")
        if fitting:
            self.sample_shape_ = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != self.sample_shape_:
            raise ValueError(f"X has sample shape {tuple(x.shape[1:])}, the model was fitted on {self.sample_shape_}")
        if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
            x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("X contains NaN or Inf")
        if x.ndim == 4:
            if fitting:
                self.mean_ = x.mean((0, 2, 3), dtype=np.float64).astype(np.float32)
                std = x.std((0, 2, 3), dtype=np.float64).astype(np.float32)
                self.std_ = np.where(std > 0, std, 1.0).astype(np.float32)
            x = (x - self.mean_[None, :, None, None]) / self.std_[None, :, None, None]
        else:
            if fitting:
                self.scaler_ = Scaler("auto").fit(x)
            x = self.scaler_.transform(x, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x))

    def _width(self) -> float:
        if self.width == "auto":
            small = len(self.sample_shape_) == 3 and min(self.sample_shape_[1:]) < 16
            return 0.5 if small else 1.0
        return float(self.width)

    def _network(self, seed: int):
        with torch.random.fork_rng(devices=[]):  # the user's global RNG is left as it was
            torch.manual_seed(seed)
            if self.network == "auto":
                return default_network(self.sample_shape_, self.n_clusters, n_heads=self.n_heads, width=self._width(),
                                       overcluster=self.overcluster)
            if not callable(self.network):
                raise ValueError(f"network must be 'auto' or a callable (shape, n_clusters, n_heads) -> module, "
                                 f"got {self.network!r}")
            if self.overcluster:
                raise ValueError("overcluster builds the default network's extra head: with your own network, "
                                 "give it an over_heads (entclust.deep.ClusteringNet(..., overcluster=...))")
            return self.network(self.sample_shape_, self.n_clusters, self.n_heads)

    # ---- fitting --------------------------------------------------------------------------
    def fit(self, X, y=None, *, partial_labels=None, eval_labels=None, resume: bool = False):
        """Train on ``X``; ``y`` is ignored (unsupervised). ``partial_labels``: semi-supervised
        mode (class indices, -1 for unlabelled points; the labelled points' pseudo-labels are
        clamped to their labels and a cross-entropy term is added, Zhang & Boykov 2024 Sec. 4.4).
        ``eval_labels``: true labels used only for the history's ACC. ``resume``: continue
        from ``checkpoint``."""
        check_params(self.get_params(deep=False), self.PARAMETERS)  # the trainer checks the rest
        x = self._inputs(X, fitting=True)
        if self.n_clusters > x.shape[0]:
            raise ValueError(f"n_clusters={self.n_clusters} is larger than the number of points N={x.shape[0]}")
        if partial_labels is not None:
            partial = np.asarray(partial_labels)
            if partial.shape != (x.shape[0],) or not np.issubdtype(partial.dtype, np.integer):
                raise ValueError(f"partial_labels must be ({x.shape[0]},) integers (-1: unlabelled), "
                                 f"got {partial.dtype} of shape {partial.shape}")
            if partial.max(initial=-1) >= self.n_clusters or partial.min(initial=0) < -1:
                raise ValueError(f"partial_labels must lie in -1 ... {self.n_clusters - 1}, got values in "
                                 f"[{partial.min()}, {partial.max()}]")
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        self.model_ = self._network(seed)
        self.trainer_ = SelfLabelingTrainer(
            self.model_, method=self.method, lam=self.lam, gamma=self.gamma,
            prediction_fairness=self.prediction_fairness, views=self.views, augment=self.augment,
            consistency=self.consistency, pseudo_labels=self.pseudo_labels,
            optimizer=self.optimizer, lr=self.lr, epochs=self.epochs, batch_size=self.batch_size,
            method_params=self.method_params, checkpoint=self.checkpoint, seed=seed, device=self.device, verbose=self.verbose)
        self.trainer_.fit(x, labels=eval_labels, partial_labels=partial_labels, resume=resume)
        self.history_ = self.trainer_.history
        self.objectives_ = self.trainer_.objectives
        self.selected_head_ = self.trainer_.selected
        self.labels_ = self._logits(x).argmax(1).numpy()
        if self.history_:  # epochs=0 builds the network and the scaling and trains nothing: no fit to fault
            losses = [h["head_losses"][self.selected_head_] for h in self.history_] \
                if getattr(self.trainer_.criterion, "descends", True) else []
            say_fit_failures(f"DeepEntropyClustering({self.method!r})", np.bincount(self.labels_, minlength=self.n_clusters),
                             losses, f"epochs={self.epochs}, lr={self.lr:g}: more epochs, a lower lr, or "
                                     f"pseudo_labels='global' at large K",
                             f"lower lr (now {self.lr:g})")
        return self

    def fit_predict(self, X, y=None, **params):
        return self.fit(X, y, **params).labels_

    # ---- inference ------------------------------------------------------------------------
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.trainer_.logits(x)[self.selected_head_].cpu()

    def predict(self, X) -> np.ndarray:
        """The most probable cluster of each point (the selected sub-head, no augmentation)."""
        check_is_fitted(self, "model_")
        return self._logits(self._inputs(X, fitting=False)).argmax(1).numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Soft cluster memberships ``(N, K)`` of the selected sub-head."""
        check_is_fitted(self, "model_")
        return torch.softmax(self._logits(self._inputs(X, fitting=False)).double(), 1).numpy()


__all__ = ["DeepEntropyClustering"]
