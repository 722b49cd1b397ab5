"""Datasets without internet: scikit-learn's bundled digits, synthetic 2-D generators (blobs,
the anisotropic clusters of Zhang & Boykov 2024 Fig. 1, moons) and user files (``.npy``, ``.npz``, ``.csv``,
``.pt``). Every loader returns ``(X, labels)``: ``X`` a float ``(N, D)`` numpy array, ``labels``
an int64 ``(N,)`` array or None. Bad files raise :class:`DataError` with one clear line."""
from __future__ import annotations

import os

import numpy as np


class DataError(ValueError):
    """A dataset or label file that cannot be used, with the reason."""


def load_digits():
    """scikit-learn's 8x8 handwritten digits: 1797 points, 64 features (0..16), 10 classes."""
    from sklearn.datasets import load_digits as sk_digits

    x, labels = sk_digits(return_X_y=True)
    return x.astype(np.float64), labels.astype(np.int64)


def make_blobs(n_samples: int = 1000, n_clusters: int = 4, *, cluster_std: float = 1.0, random_state=None):
    """Isotropic Gaussian blobs in 2-D (the textbook case where K-means is right)."""
    from sklearn.datasets import make_blobs as sk_blobs

    x, labels = sk_blobs(n_samples=n_samples, centers=n_clusters, cluster_std=cluster_std,
                         random_state=random_state)
    return x, labels.astype(np.int64)


def make_anisotropic(n_samples: int = 1000, n_clusters: int = 2, *, length: float = 3.0, width: float = 0.3,
                     gap: float = 4.5, random_state=None):
    """Parallel elongated Gaussian clusters in 2-D (Zhang & Boykov 2024 Fig. 1, Zhang & Boykov 2023a Fig. 1): each is
    ``length`` long (std along x) and ``width`` wide (std along y), stacked ``gap`` apart along y.
    K-means prefers to cut across the long axis (compact halves beat the true clusters in
    squared error); a linear softmax classifier trained for decisiveness and fairness finds the
    gaps. Balanced classes."""
    rng = np.random.default_rng(random_state)
    labels = np.arange(n_samples) % n_clusters
    rng.shuffle(labels)
    centres = (np.arange(n_clusters) - (n_clusters - 1) / 2) * gap
    x = np.stack([rng.normal(0.0, length, n_samples), centres[labels] + rng.normal(0.0, width, n_samples)], 1)
    return x, labels.astype(np.int64)


def make_moons(n_samples: int = 1000, *, noise: float = 0.08, random_state=None):
    """scikit-learn's two interleaving half circles (not linearly separable: a hard case for
    every linear method here)."""
    from sklearn.datasets import make_moons as sk_moons

    x, labels = sk_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    return x, labels.astype(np.int64)


SYNTHETIC = {"blobs": make_blobs, "anisotropic": make_anisotropic, "moons": make_moons}


def _as_array(name: str, a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as err:  # ragged lists, objects
        raise DataError(f"{name}: cannot be read as an array ({err})") from None


FEATURE_KEYS, LABEL_KEYS = ("X", "x", "features", "data"), ("y", "labels", "target")


def _keys(path: str, keys, kind: str):
    """(features key, labels key or None) of an .npz / .pt container."""
    xkey = next((k for k in FEATURE_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    if xkey is None:
        raise DataError(f"{path}: a {kind} needs an array named {', '.join(FEATURE_KEYS)}; it has {list(keys)}")
    return xkey, next((k for k in LABEL_KEYS if k in keys), None)


def _read_csv(path: str, what: str) -> np.ndarray:
    # numbers separated by commas; a first line with a field that is not a number (column names,
    # as spreadsheets and pandas write them) is skipped; a byte-order mark is not part of a field
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline()
    header = False
    for field in first.split(","):
        field = field.strip().strip('"').strip("'")
        try:
            float(field)
        except ValueError:
            header = header or field != ""  # (an empty field is a missing number, not a name)
    return np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2 if what == "features" else 1,
                      encoding="utf-8-sig")


def sparse_advice(n: int, v: int, who: str) -> str:
    """What to do with sparse features of ``n`` rows and ``v`` columns (a TF-IDF matrix, often): the
    end of an error message."""
    return (f"a sparse matrix ({n} x {v}); {who} needs dense features: reduce it first, e.g. "
            f"sklearn.decomposition.TruncatedSVD(n_components=128).fit_transform(X) for text (TF-IDF), or densify it "
            f"where its {n * v * 4 / 2**30:.2g} GiB as float32 fit in memory")


def read_array(path: str, what: str):
    """Array(s) stored in ``path`` (.npy memory-mapped, .npz, .csv with or without a header
    line, .pt read with weights_only): returns (array, labels or None); ``what`` names the file
    in errors."""
    if not os.path.isfile(path):
        raise DataError(f"{what} file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            # memory-mapped: a large file is read block by block (scaling, checks), not copied
            try:
                return np.load(path, mmap_mode="r", allow_pickle=False), None
            except ValueError:  # empty or object arrays cannot be mapped: the plain load says why
                return np.load(path, allow_pickle=False), None
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if {"indptr", "indices", "data", "shape", "format"} <= set(z.keys()):  # scipy.sparse.save_npz
                    n, v = (int(a) for a in z["shape"])
                    raise DataError(f"{what} file {path} is {sparse_advice(n, v, 'entclust')}")
                xkey, lkey = _keys(path, list(z.keys()), "an .npz")
                return z[xkey], (z[lkey] if lkey else None)
        if ext == ".csv":
            return _read_csv(path, what), None
        if ext == ".pt":
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                xkey, lkey = _keys(path, list(obj), "a .pt dict")
                return _as_array(path, obj[xkey]), (_as_array(path, obj[lkey]) if lkey else None)
            return _as_array(path, obj), None
    except DataError:
        raise
    except Exception as err:  # corrupt or unreadable files: one line, no traceback
        raise DataError(f"cannot read {what} file {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    raise DataError(f"{what} file {path}: unsupported extension {ext!r} (use .npy, .npz, .csv or .pt)")


def check_features(x, name: str = "features") -> np.ndarray:
    """A finite float ``(N, D)`` array with N >= 1, D >= 1, else :class:`DataError`. float32 and
    float64 arrays (memory-mapped ones too) are returned as they are, checked block by block;
    other numeric types become float64."""
    x = _as_array(name, x)
    if x.ndim == 1:
        raise DataError(f"{name} must be a 2-D array (N points, D features), got a 1-D array of length {x.shape[0]}")
    if x.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (N points, D features), got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"{name} must have N >= 1 points and D >= 1 features, got shape {x.shape}")
    if np.iscomplexobj(x):
        raise DataError(f"{name} must be real numbers, got complex dtype {x.dtype} (split it into real and "
                        f"imaginary features yourself if that is meant)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{name} must be numeric, got dtype {x.dtype}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    count, first = 0, None
    for start in range(0, x.shape[0], CHUNK):
        bad = ~np.isfinite(x[start:start + CHUNK])
        if bad.any():
            count += int(bad.sum())
            if first is None:
                i, j = np.argwhere(bad)[0]
                first = (start + i, j)
    if count:
        raise DataError(f"{name} must be finite: {count} NaN/Inf values, first at row {first[0]}, column {first[1]}")
    return x


def check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    """Integer ``(n,)`` labels, else :class:`DataError`."""
    a = _as_array(name, labels)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D vector, got shape {a.shape}")
    if a.shape[0] != n:
        raise DataError(f"{name} has {a.shape[0]} entries but the features have {n} rows")
    if np.iscomplexobj(a):
        raise DataError(f"{name} must be integers, got complex dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise DataError(f"{name} must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def load(source: str, labels: str | None = None, *, random_state=None):
    """``(X, labels)`` from a name (``digits``, ``blobs``, ``anisotropic``, ``moons``) or a file
    (``.npy``/``.csv``: the features; ``.npz``/``.pt``: features under ``X``/``features``/``data``,
    labels under ``y``/``labels``/``target`` if present). ``labels`` is an optional separate label
    file (``.npy``, ``.csv``, ``.pt``) and overrides labels found with the features."""
    if source == "digits":
        x, y = load_digits()
    elif source in SYNTHETIC:
        x, y = SYNTHETIC[source](random_state=0 if random_state is None else random_state)
    else:
        if not os.path.exists(source) and os.path.splitext(source)[1] == "":
            raise DataError(f"unknown dataset {source!r}: use digits, {', '.join(SYNTHETIC)} or a .npy/.npz/.csv/.pt file")
        x, y = read_array(source, "features")
    x = check_features(x)
    if labels is not None:
        y, _ = read_array(labels, "labels")
    if y is not None:
        y = check_labels(y, x.shape[0])
    return x, y


SCALINGS = ("auto", "global", "features", "none")
# "auto" z-scores each feature when the largest feature standard deviation exceeds this many
# times the median one: features in different units (wine 388, breast cancer 7829), not
# features of one kind whose spread varies (digits' pixels 1.5, iris 2.2).
MIXED_UNITS_RATIO = 10.0


class Scaler:
    """Feature preprocessing shared by every method of the harness, fitted on training data:

    - ``"auto"`` (default): ``"features"`` when the features look like different units (the
      largest standard deviation above :data:`MIXED_UNITS_RATIO` times the median one), else
      ``"global"``; the choice is ``mode_``. Measured with reverse CE, 3 seeds: it picks the
      better of the two on digits (global 84.7 % vs 67.9 %), iris (84.4 vs 81.8), wine
      (features 94.4 vs 71.9) and breast cancer (87.6 vs 85.9).
    - ``"global"``: subtract the mean point, divide by one scalar, the root mean square
      deviation over all features. Keeps the geometry (relative feature scales, anisotropy), so
      K-means and linear heads see the same data up to a similarity transform.
    - ``"features"``: z-score each feature (constant features map to 0). Changes the geometry.
    - ``"none"``: the features as given.
    """

    def __init__(self, mode: str = "auto"):
        if mode not in SCALINGS:
            raise ValueError(f"standardize must be one of {SCALINGS}, got {mode!r}")
        self.mode = mode

    def fit(self, x: np.ndarray, group=None) -> "Scaler":
        """Fit on ``x`` ``(N, D)``: statistics in float64, streamed over blocks of rows (a
        memory-mapped file is read block by block, with no float64 copy of it). With ``group``
        (a ``torch.distributed`` process group) ``x`` is this rank's shard and the statistics
        are those of all ranks' rows (all-reduced sums and maxima, D numbers each)."""
        if self.mode == "none":
            self.mode_ = "none"
            self.mean_, self.scale_ = np.zeros(x.shape[1]), np.ones(x.shape[1])
            return self
        # Statistics of x / a, a = max |x| per feature, then scaled back: squares of data at 1e160
        # would overflow and at 1e-170 underflow, collapsing every point to one. One set serves
        # "auto"'s choice and both scalings.
        a = _abs_max(x, group)
        a = np.where(a > 0, a, 1.0)
        mean, var = _moments(x, a, group)
        std = np.sqrt(var) * a  # (var <= 1: no overflow)
        self.mode_ = self.mode if self.mode != "auto" else _auto_mode(std)
        if self.mode_ == "global":
            # the root mean square deviation over all features, sqrt(mean_f var_f a_f^2), without overflow
            big = a.max()
            scale = np.sqrt((var * (a / big) ** 2).mean())
            scale = np.full(x.shape[1], scale * big if scale > 0 else 1.0)
        else:
            scale = np.where(std > 0, std, 1.0)
        self.mean_, self.scale_ = mean * a, scale
        return self

    def transform(self, x: np.ndarray, dtype=None) -> np.ndarray:
        """``(x - mean_) / scale_`` computed in float64 block by block, returned as ``dtype``
        (default: float32 for float32 input, else float64)."""
        if dtype is None:
            dtype = np.float32 if x.dtype == np.float32 else np.float64
        out = np.empty(x.shape, dtype=dtype)

        def block(i):
            b = _block64(x, i)
            b -= self.mean_
            b /= self.scale_
            out[i:i + CHUNK] = b

        _over_blocks(block, x)
        return out


def validate_features(estimator, X, **kwargs) -> np.ndarray:
    """scikit-learn's ``validate_data`` for features ``(N, D)``, float32 and float64 kept as given. A
    float32 or float64 torch tensor goes in as the numpy view of its CPU copy (no copy on the
    CPU): scikit-learn reads a tensor as an unknown type and would convert it to float64, twice
    the memory of the data. float16 and bfloat16 (tensors, and float16 arrays) become float32,
    which holds each of their values exactly (numpy has no bfloat16: scikit-learn could not read
    such a tensor at all)."""
    import scipy.sparse
    import torch
    from sklearn.utils.validation import validate_data

    if scipy.sparse.issparse(X) or (isinstance(X, torch.Tensor) and X.layout != torch.strided):
        raise TypeError(f"X is {sparse_advice(*X.shape, type(estimator).__name__)}")
    if isinstance(X, torch.Tensor):
        X = X.detach()
        if X.dtype in (torch.float16, torch.bfloat16):
            X = X.float()
        if X.dtype in (torch.float32, torch.float64):
            X = X.cpu().numpy()
    elif isinstance(X, np.ndarray) and X.dtype == np.float16:
        X = X.astype(np.float32)
    return validate_data(estimator, X, dtype=[np.float64, np.float32], **kwargs)


# Rows per block of the streamed statistics and transforms.
CHUNK = 1 << 15


def _reduce(values: np.ndarray, group, op: str = "sum") -> np.ndarray:
    """``values`` summed (or maximised) over the ranks of ``group``; as they are without one."""
    if group is None:
        return values
    import torch

    from ._dist import all_reduce

    return all_reduce(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)), group, op).numpy()


def _block64(x: np.ndarray, i: int) -> np.ndarray:
    """Rows ``i:i + CHUNK`` of ``x`` as a new float64 array (never a view: the callers work in it)."""
    return np.array(x[i:i + CHUNK], dtype=np.float64)


def _over_blocks(fn, x: np.ndarray) -> list:
    """``[fn(i) for i in range(0, N, CHUNK)]``, the blocks on ``torch.get_num_threads()`` threads
    (numpy lets go of the GIL in its loops); results in block order, so whatever combines them
    does it in the same order on any number of threads."""
    starts = range(0, x.shape[0], CHUNK)
    import torch

    threads = min(torch.get_num_threads(), len(starts))
    if threads <= 1:
        return [fn(i) for i in starts]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, starts))


def _abs_max(x: np.ndarray, group=None) -> np.ndarray:
    """Per-feature max |x|, block by block (over all ranks of ``group``)."""
    out = np.zeros(x.shape[1])

    def block(i):
        b = _block64(x, i)
        return np.abs(b, out=b).max(0)

    for part in _over_blocks(block, x):
        out = np.maximum(out, part)
    return _reduce(out, group, "max")


def _moments(x: np.ndarray, a: np.ndarray, group=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of ``x / a`` in float64, two passes over blocks of rows
    (over all ranks of ``group``); the blocks' sums added in block order."""
    def sums(i):
        b = _block64(x, i)
        b /= a
        return b.sum(0)

    def squares(i):
        b = _block64(x, i)
        b /= a
        b -= mean
        b *= b
        return b.sum(0)

    total = np.zeros(x.shape[1] + 1)
    for part in _over_blocks(sums, x):
        total[:-1] += part
    total[-1] = x.shape[0]
    total = _reduce(total, group)
    n = total[-1]
    mean = total[:-1] / n
    total_squares = np.zeros(x.shape[1])
    for part in _over_blocks(squares, x):
        total_squares += part
    return mean, _reduce(total_squares, group) / n


def _auto_mode(std: np.ndarray) -> str:
    """"features" where the per-feature standard deviations ``std`` look like different units."""
    spread = std[std > 0]
    if spread.size < 2:
        return "global"
    return "features" if spread.max() > MIXED_UNITS_RATIO * np.median(spread) else "global"
