"""Image datasets from local files, never downloaded: MNIST (IDX files, optionally
gzipped), CIFAR-10 and CIFAR-100 (the python pickle batches; CIFAR-100 with its 20
superclasses), STL-10 (the binary files), folders of images (one subfolder per class, read
with Pillow), and scikit-learn's digits as 1x8x8 images (the bundled real dataset).

Every loader returns ``(images, labels)``: ``images`` a ``uint8`` numpy array ``(N, C, H, W)``
(digits: float32 in [0, 1]), ``labels`` an int64 ``(N,)`` array, or None for STL-10's unlabelled
split. ``root`` may be the folder that holds the files or the one above it (the archives'
own folder names: ``cifar-10-batches-py``, ``cifar-100-python``, ``stl10_binary``,
``MNIST/raw``). A missing file raises :class:`~entclust.data.DataError` naming the files
expected and where they were looked for.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import stat
import warnings
import zlib

import numpy as np

from .data import DataError

SPLITS = ("train", "test")


def load_digit_images():
    """scikit-learn's digits as ``(1797, 1, 8, 8)`` float32 images in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target.astype(np.int64)


def _split(split: str, allowed=SPLITS) -> str:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")
    return split


def _find(root: str, names: list[str], folders: tuple[str, ...], dataset: str) -> str:
    """The folder among ``root`` and ``root/<folder>`` that holds all of ``names`` (each may
    also be gzipped where the caller allows it: names are tried as given)."""
    if not os.path.isdir(root):
        raise DataError(f"{dataset}: {root!r} is not a folder")
    tried = [root] + [os.path.join(root, f) for f in folders]
    for place in tried:
        if all(os.path.isfile(os.path.join(place, n)) for n in names):
            return place
    raise DataError(f"{dataset}: expected the files {', '.join(names)} in one of {', '.join(map(repr, tried))}; "
                    f"they are not all there (entclust never downloads: fetch the archive and unpack it)")


# ---- MNIST ------------------------------------------------------------------------------
def _idx_file(place: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        if os.path.isfile(os.path.join(place, name)):
            return os.path.join(place, name)
    return ""


def _read_idx(path: str, magic: int, dims: int) -> np.ndarray:
    """An IDX file (gzipped or not), read header first: never more than the header promises
    plus one byte (a file with more is refused), so a small file that inflates to gigabytes
    costs the memory of a valid file of its header, not of the inflated one."""
    opener = gzip.open if path.endswith(".gz") else open
    head = 4 + 4 * dims
    try:
        with opener(path, "rb") as f:
            header = f.read(head)
            if len(header) < head or int.from_bytes(header[:4], "big") != magic:
                raise DataError(f"MNIST: {path!r} is not an IDX file with magic number {magic}")
            shape = tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
            size = int(np.prod(shape, dtype=np.float64))
            if size > MAX_IDX_BYTES:
                raise DataError(f"MNIST: {path!r} declares {shape} = {size} bytes, more than an MNIST-style file "
                                f"holds ({MAX_IDX_BYTES})")
            data = f.read(size)
            extra = f.read(1)
    except (EOFError, OSError, zlib.error) as err:  # truncated or damaged gzip streams
        raise DataError(f"MNIST: {path!r} is damaged or truncated ({type(err).__name__}: {err})") from None
    if len(data) != size or extra:
        raise DataError(f"MNIST: {path!r} holds {len(data)}{' or more' if extra else ''} bytes after its header, "
                        f"its header says {shape} = {size}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


MAX_IDX_BYTES = 1 << 32  # EMNIST's largest file is ~0.6 GB; a header beyond 4 GiB is not an image set


def load_mnist(root: str, split: str = "train"):
    """MNIST (or Fashion-MNIST: the same files) from ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
    (``.gz`` too): ``(N, 1, 28, 28)`` uint8 images and labels."""
    prefix = {"train": "train", "test": "t10k"}[_split(split)]
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    tried = [root, os.path.join(root, "MNIST", "raw"), os.path.join(root, "raw")]
    for place in tried:
        paths = [_idx_file(place, s) for s in stems]
        if all(paths):
            images = _read_idx(paths[0], 2051, 3)
            labels = _read_idx(paths[1], 2049, 1).astype(np.int64)
            if labels.size and labels.max() > 9:
                raise DataError(f"MNIST: {paths[1]!r} holds label {int(labels.max())}; MNIST labels are 0..9")
            if labels.shape[0] != images.shape[0]:
                raise DataError(f"MNIST: {images.shape[0]} images but {labels.shape[0]} labels in {place!r}")
            return images[:, None], labels
    raise DataError(f"MNIST: expected the files {', '.join(stems)} (or .gz) in one of "
                    f"{', '.join(map(repr, tried))} (entclust never downloads: fetch and unpack them)")


# ---- CIFAR ------------------------------------------------------------------------------
class _Pickled:
    """What a pickled numpy ``dtype`` or ``ndarray`` becomes while a CIFAR batch is read: a record
    of its arguments and state, never the numpy object itself. numpy's own ``__setstate__``
    trusts its input (a structured dtype with an object field turns raw bytes into object
    pointers and crashes the interpreter), so the arrays are rebuilt afterwards by
    :func:`_rebuild`, only as plain numeric arrays."""

    def __init__(self, kind: str, *args):
        self.kind, self.args, self.state = kind, args, None

    def __setstate__(self, state):
        self.state = state


def _latin1(text, encoding="latin1", errors="strict"):
    # Python 2 pickles store bytes as _codecs.encode(str, "latin1"); nothing else is accepted
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is only accepted as encode(str, 'latin1')")
    return text.encode("latin1")


class _ArraysOnly(pickle.Unpickler):
    """The CIFAR batches hold dicts, lists, bytes and numeric numpy arrays: nothing else is
    rebuilt (an arbitrary pickle could run code), and arrays only through :func:`_rebuild`."""

    def find_class(self, module, name):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return lambda cls, shape, code: _Pickled("array", cls, shape, code)
        if (module, name) == ("numpy", "dtype"):
            return lambda code, align=False, copy=True: _Pickled("dtype", code)
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        raise DataError(f"CIFAR: the batch file asks for {module}.{name}, which a CIFAR batch never holds")


_NDARRAY = object()  # stands for numpy.ndarray inside a pickle (only as _reconstruct's first argument)
_NUMERIC = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"}


def _dtype(record) -> np.dtype:
    """A plain numeric dtype from a pickled one: no fields, no sub-array, no objects."""
    if not isinstance(record, _Pickled) or record.kind != "dtype" or not isinstance(record.args[0], str):
        raise DataError("CIFAR: an array's dtype is not a numpy dtype")
    code = record.args[0]
    if code not in _NUMERIC:
        raise DataError(f"CIFAR: arrays of dtype {code!r} are refused (only plain numeric arrays are read)")
    state = record.state
    order = "|"
    if state is not None:
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            raise DataError("CIFAR: structured or sub-array dtypes are refused (only plain numeric arrays are read)")
        order = state[1]
    if order not in ("|", "<", ">", "="):
        raise DataError(f"CIFAR: unknown byte order {order!r}")
    return np.dtype(code).newbyteorder(order) if order in "<>" else np.dtype(code)


def _rebuild(obj, budget: int):
    """``obj`` with every :class:`_Pickled` array replaced by a real numeric numpy array, each
    checked against its raw bytes (a header cannot claim more than the file holds)."""
    if isinstance(obj, dict):
        return {k: _rebuild(v, budget) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebuild(v, budget) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_rebuild(v, budget) for v in obj)
    if not isinstance(obj, _Pickled):
        return obj
    state = obj.state
    if obj.kind != "array" or obj.args[0] is not _NDARRAY or not isinstance(state, tuple) or len(state) != 5:
        raise DataError("CIFAR: the file holds a numpy object that is not a plain array")
    _, shape, dtype, fortran, raw = state
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and 0 <= n for n in shape)):
        raise DataError(f"CIFAR: an array has a malformed shape {shape!r}")
    dtype = _dtype(dtype)
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise DataError("CIFAR: an array's data is not raw bytes")
    expected = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if expected != len(raw) or expected > budget:
        raise DataError(f"CIFAR: an array of shape {shape} {dtype} needs {expected} bytes, the file holds {len(raw)}")
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _cifar_batch(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except DataError:
        raise
    except Exception as err:  # malformed pickles: one line (TypeError for wrong arguments, and more)
        raise DataError(f"CIFAR: {path!r} is not a CIFAR python batch: {type(err).__name__}: {err}") from None
    try:
        batch = _rebuild(batch, len(raw))
    except RecursionError:
        raise DataError(f"CIFAR: {path!r} nests containers too deeply for a CIFAR batch") from None
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR: {path!r} does not hold a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_images(batch: dict, path: str) -> np.ndarray:
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"CIFAR: {path!r}: 'data' must be a uint8 array (N, 3072), got {got}")
    return data.reshape(-1, 3, 32, 32)


def _cifar_labels(batch: dict, key: str, n: int, path: str) -> np.ndarray:
    labels = batch.get(key)
    if not isinstance(labels, (list, np.ndarray)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < 100 for v in labels):
        raise DataError(f"CIFAR: {path!r}: {key!r} must be a list of class indices 0..99")
    if len(labels) != n:
        raise DataError(f"CIFAR: {path!r} holds {n} images but {len(labels)} {key!r}")
    return np.asarray(labels, dtype=np.int64)


def load_cifar10(root: str, split: str = "train"):
    """CIFAR-10 from ``data_batch_1`` … ``data_batch_5`` / ``test_batch``:
    ``(N, 3, 32, 32)`` uint8 images and labels 0..9."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if _split(split) == "train" else ["test_batch"]
    place = _find(root, names, ("cifar-10-batches-py",), "CIFAR-10")
    images, labels = [], []
    for name in names:
        path = os.path.join(place, name)
        batch = _cifar_batch(path)
        images.append(_cifar_images(batch, path))
        labels.append(_cifar_labels(batch, "labels", images[-1].shape[0], path))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar100(root: str, split: str = "train", *, coarse: bool = True):
    """CIFAR-100 from ``train`` / ``test``: ``(N, 3, 32, 32)`` uint8 images and the 20
    superclass labels (``coarse=True``, the papers' CIFAR-100-20) or the 100 fine labels."""
    place = _find(root, [_split(split)], ("cifar-100-python",), "CIFAR-100")
    path = os.path.join(place, split)
    batch = _cifar_batch(path)
    key = "coarse_labels" if coarse else "fine_labels"
    if key not in batch:
        raise DataError(f"CIFAR-100: {path!r} has no {key!r}")
    images = _cifar_images(batch, path)
    return images, _cifar_labels(batch, key, images.shape[0], path)


# ---- STL-10 -----------------------------------------------------------------------------
def load_stl10(root: str, split: str = "train"):
    """STL-10 from ``{train,test,unlabeled}_X.bin`` (and ``_y.bin``): ``(N, 3, 96, 96)`` uint8
    images and labels 0..9 (the files' 1..10), or None for the unlabelled split."""
    _split(split, ("train", "test", "unlabeled"))
    names = [f"{split}_X.bin"] + ([f"{split}_y.bin"] if split != "unlabeled" else [])
    place = _find(root, names, ("stl10_binary",), "STL-10")
    path = os.path.join(place, names[0])
    size = os.path.getsize(path)
    if size % (3 * 96 * 96):
        raise DataError(f"STL-10: {path!r} holds {size} bytes, not a whole number of 3x96x96 images")
    raw = np.fromfile(path, dtype=np.uint8)
    # stored column-major per channel: (N, C, W, H) in C order
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    if split == "unlabeled":
        return np.ascontiguousarray(images), None
    labels = np.fromfile(os.path.join(place, names[1]), dtype=np.uint8).astype(np.int64) - 1
    if labels.shape[0] != images.shape[0] or (labels.size and not (0 <= labels.min() and labels.max() <= 9)):
        raise DataError(f"STL-10: {names[1]} must hold one label in 1..10 per image of {names[0]} "
                        f"({images.shape[0]}), got {labels.shape[0]} values")
    return np.ascontiguousarray(images), labels


# ---- image folders ----------------------------------------------------------------------
MAX_IMAGE_PIXELS = 1 << 26  # 8192 x 8192: far beyond a clustering data set's images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_image_folder(root: str, *, size=None, mode: str = "RGB", return_classes: bool = False):
    """Images in ``root/<class>/<file>`` (one subfolder per class, sorted by name: labels
    0..C-1), read with Pillow and converted to ``mode`` ("RGB" or "L"). ``size`` (an int or
    ``(H, W)``) resizes every image (bilinear); without it all images must have one size.
    Returns ``(images, labels)`` (uint8 ``(N, C, H, W)``), and the class names with
    ``return_classes=True``."""
    from PIL import Image, UnidentifiedImageError

    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if not os.path.isdir(root):
        raise DataError(f"image folder: {root!r} is not a folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    # regular files only: a FIFO or device named like an image would block or stream forever
    files = [(os.path.join(root, c, f), label) for label, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(root, c)))
             if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(root, c, f))
             and stat.S_ISREG(os.stat(os.path.join(root, c, f)).st_mode)]
    if not files:
        raise DataError(f"image folder: no images ({', '.join(IMAGE_SUFFIXES)}) in the subfolders of {root!r}; "
                        f"expected root/<class>/<image>")
    target = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    pictures = []
    for path, _ in files:
        try:
            with warnings.catch_warnings():  # PIL's bomb warning: the size check below says it in one line
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(path)
            with image:
                if image.width * image.height > MAX_IMAGE_PIXELS:  # header first: before decoding
                    raise DataError(f"image folder: {path!r} declares {image.width} x {image.height} pixels, more "
                                    f"than {MAX_IMAGE_PIXELS}; resize it beforehand")
                image = image.convert(mode)
                if target is not None:
                    image = image.resize((target[1], target[0]), Image.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"image folder: cannot read {path!r}: {first}") from None
        if pictures and array.shape != pictures[0].shape:
            raise DataError(f"image folder: {path!r} is {array.shape[:2]}, {files[0][0]!r} is "
                            f"{pictures[0].shape[:2]}; pass size= to resize them to one size")
        pictures.append(array)
    stacked = np.stack(pictures)
    stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return (np.ascontiguousarray(stacked), labels, classes) if return_classes else (np.ascontiguousarray(stacked), labels)
