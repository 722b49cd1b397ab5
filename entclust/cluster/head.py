"""The fitted linear head of :class:`~entclust.EntropyClustering`: what a fitted model does
(:class:`FittedHead`: ``predict``, ``predict_proba``, ``transform``, ``coef_``, ``intercept_``,
``save``, ``load``) and its file, which is data, not code: the head's weight and bias, the
scaler's statistics and the plain parameters, written with ``torch.save`` of tensors and plain
values and read with ``torch.load(weights_only=True)`` (a file that would run code when read is
refused). ``entclust fit --save-model`` writes one, ``entclust predict`` reads it."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._files import CheckpointError, read_checkpoint, write_files
from ..data import Scaler, validate_features
from .scale import MemoryPlanError, available_bytes, head_argmax, head_blocks

FORMAT = "entclust.EntropyClustering"
VERSION = 1
# the estimator parameters kept in the file (plain values: no process group, no RandomState)
KEPT = ("n_clusters", "method", "lam", "gamma", "epochs", "batch_size", "lr", "standardize", "method_params",
        "pseudo_labels", "init", "n_init", "device")
# what fit resolved ("auto" settings, the validated prior)
RESOLVED = ("gamma_", "lr_", "epochs_", "pseudo_labels_", "init_", "n_init_")


def save_model(est, path: str) -> None:
    """Write the fitted estimator ``est`` to ``path`` (atomically)."""
    params = {name: value for name, value in est.get_params(deep=False).items() if name in KEPT}
    if est.prior is not None:
        params["prior"] = np.asarray(est.prior, dtype=np.float64).tolist()
    scaler = est.scaler_
    state = {"format": FORMAT, "version": VERSION, "params": params,
             "weight": est.head_.weight.detach().cpu().clone(), "bias": est.head_.bias.detach().cpu().clone(),
             "scaler": {"mode": scaler.mode, "fitted_mode": scaler.mode_, "mean": torch.from_numpy(np.asarray(scaler.mean_)),
                        "scale": torch.from_numpy(np.asarray(scaler.scale_))},
             "resolved": {name: getattr(est, name) for name in RESOLVED},
             "prior_": None if est.prior_ is None else est.prior_.detach().cpu().clone(),
             "n_features_in": int(est.n_features_in_), "objective": float(est.objective_),
             "cluster_sizes": torch.from_numpy(np.asarray(est.cluster_sizes_, dtype=np.int64))}
    write_files([(str(path), lambda tmp: torch.save(state, tmp))])


def load_model(path: str):
    """The estimator saved in ``path``, ready to ``predict``: an :class:`~entclust.EntropyClustering`
    with its fitted head and scaler (``labels_`` and ``history_`` are not kept)."""
    from .estimator import EntropyClustering

    state = read_checkpoint(str(path), "cpu", VERSION)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a saved EntropyClustering model (format {state.get('format')!r})")
    try:
        est = EntropyClustering(**state["params"])
        weight, bias = state["weight"], state["bias"]
        head = torch.nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0])
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        scaler = Scaler(state["scaler"]["mode"])
        scaler.mode_ = state["scaler"]["fitted_mode"]
        scaler.mean_, scaler.scale_ = state["scaler"]["mean"].numpy(), state["scaler"]["scale"].numpy()
        est.head_, est.scaler_ = head.eval(), scaler
        for name, value in state["resolved"].items():
            setattr(est, name, value)
        est.prior_ = state["prior_"]
        est.n_features_in_ = int(state["n_features_in"])
        est.objective_ = float(state["objective"])
        est.cluster_sizes_ = state["cluster_sizes"].numpy()
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise CheckpointError(f"{path!r} is not a complete EntropyClustering model ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if weight.shape != (est.n_clusters, est.n_features_in_):
        raise CheckpointError(f"{path!r}: the head's weight {tuple(weight.shape)} does not match n_clusters="
                              f"{est.n_clusters} and {est.n_features_in_} features")
    return est


class FittedHead:
    """Inference of a fitted linear softmax head ``softmax(v^T x + b)`` on scaled features
    (``head_``, ``scaler_``), shared by :class:`~entclust.EntropyClustering`."""

    # ---- inference ----------------------------------------------------------------------
    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.head_(features)

    def _transform(self, X) -> torch.Tensor:
        check_is_fitted(self)
        x = validate_features(self, X, reset=False)
        return torch.from_numpy(self.scaler_.transform(x, np.float32))

    def _refuse_above_free(self, n: int, per_entry: int, what: str, held: str, hint: str) -> None:
        """:class:`MemoryPlanError` before any work where ``per_entry`` bytes for each of the n x K
        entries exceed 90 % of the memory this machine has free."""
        need, free = per_entry * n * self.n_clusters, available_bytes()
        if free is not None and need > 0.9 * free:
            raise MemoryPlanError(f"{type(self).__name__}.{what}: {held} ({n} x {self.n_clusters}) needs "
                                  f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are free; {hint}")

    def _dense(self, X, fn, what: str) -> np.ndarray:
        """``fn`` of the head's float32 logits, ``(N, K)`` float64, computed over blocks of rows into
        the output: the output and one block in memory (whole, predict_proba held the float32
        softmax beside the output, 12 bytes an entry, and transform float64 copies of the logits,
        up to 24). An output that cannot fit in the memory this machine has free is refused before
        any work."""
        features = self._transform(X)
        n, k = features.shape[0], self.n_clusters
        self._refuse_above_free(n, 8, what, "the float64 result", "pass fewer rows at a time, or use predict "
                                "for the labels alone")
        out = np.empty((n, k), dtype=np.float64)
        with torch.no_grad():
            for i, logits in head_blocks(self.head_, features):
                out[i:i + logits.shape[0]] = fn(logits).numpy()
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Soft cluster memberships ``softmax(v^T x + b)``, ``(N, K)`` float64 (computed over blocks
        of rows; refused up front where the result cannot fit in free memory)."""
        return self._dense(X, lambda z: torch.softmax(z, 1), "predict_proba")  # float32, as before

    def predict(self, X) -> np.ndarray:
        """The most probable cluster of each point (over blocks of rows: never N x K logits)."""
        features = self._transform(X)  # (checks that the model is fitted)
        with torch.no_grad():
            return head_argmax(self.head_, features).numpy()

    def transform(self, X) -> np.ndarray:
        """The head's log-probabilities ``log softmax(v^T x + b)``, ``(N, K)``: the model's
        analogue of K-means' distances (larger is nearer), e.g. for a classifier downstream
        (over blocks of rows, as :meth:`predict_proba`)."""
        return self._dense(X, lambda z: torch.log_softmax(z.double(), 1), "transform")

    @property
    def _n_features_out(self) -> int:  # transform's columns, for get_feature_names_out
        return self.n_clusters

    @property
    def coef_(self) -> np.ndarray:
        """The head's weight ``v``, ``(K, D)``, on the scaled features (``scaler_``): row k is the
        direction cluster k's logit grows along (for a centroid head, ``beta`` times its centre)."""
        check_is_fitted(self)
        return self.head_.weight.detach().numpy().copy()

    @property
    def intercept_(self) -> np.ndarray:
        """The head's bias ``b``, ``(K,)``."""
        check_is_fitted(self)
        return self.head_.bias.detach().numpy().copy()

    def save(self, path: str) -> None:
        """Write the fitted model to ``path`` as data (tensors and plain values, read back with
        ``torch.load(weights_only=True)``: :mod:`entclust.cluster.head`)."""
        check_is_fitted(self)
        save_model(self, path)

    @classmethod
    def load(cls, path: str):
        """A model written by :meth:`save`, ready to ``predict``, ``transform`` and ``score``."""
        return load_model(path)


__all__ = ["FittedHead", "load_model", "save_model"]
