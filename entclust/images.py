"""Image datasets from local files, never downloaded (issue 12): MNIST (IDX files, optionally
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
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    head = 4 + 4 * dims
    if len(data) < head or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"MNIST: {path!r} is not an IDX file with magic number {magic}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(data) - head != int(np.prod(shape)):
        raise DataError(f"MNIST: {path!r} holds {len(data) - head} bytes after its header, "
                        f"its header says {shape} = {int(np.prod(shape))}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape)


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
            if labels.shape[0] != images.shape[0]:
                raise DataError(f"MNIST: {images.shape[0]} images but {labels.shape[0]} labels in {place!r}")
            return images[:, None], labels
    raise DataError(f"MNIST: expected the files {', '.join(stems)} (or .gz) in one of "
                    f"{', '.join(map(repr, tried))} (entclust never downloads: fetch and unpack them)")


# ---- CIFAR ------------------------------------------------------------------------------
class _ArraysOnly(pickle.Unpickler):
    """The CIFAR batches hold dicts, lists, bytes and numpy arrays: nothing else is rebuilt
    (an arbitrary pickle could run code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"CIFAR: the batch file asks for {module}.{name}, which a CIFAR batch never holds")


def _cifar_batch(path: str) -> dict:
    with open(path, "rb") as f:
        try:
            batch = _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise DataError(f"CIFAR: {path!r} is not a CIFAR python batch: {err}") from None
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR: {path!r} does not hold a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_images(batch: dict, path: str) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR: {path!r}: 'data' must be (N, 3072), got {data.shape}")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)


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
        labels.append(np.asarray(batch.get("labels"), dtype=np.int64))
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
    return _cifar_images(batch, path), np.asarray(batch[key], dtype=np.int64)


# ---- STL-10 -----------------------------------------------------------------------------
def load_stl10(root: str, split: str = "train"):
    """STL-10 from ``{train,test,unlabeled}_X.bin`` (and ``_y.bin``): ``(N, 3, 96, 96)`` uint8
    images and labels 0..9 (the files' 1..10), or None for the unlabelled split."""
    _split(split, ("train", "test", "unlabeled"))
    names = [f"{split}_X.bin"] + ([f"{split}_y.bin"] if split != "unlabeled" else [])
    place = _find(root, names, ("stl10_binary",), "STL-10")
    path = os.path.join(place, names[0])
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise DataError(f"STL-10: {path!r} holds {raw.size} bytes, not a whole number of 3x96x96 images")
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
    files = [(os.path.join(root, c, f), label) for label, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
        raise DataError(f"image folder: no images ({', '.join(IMAGE_SUFFIXES)}) in the subfolders of {root!r}; "
                        f"expected root/<class>/<image>")
    target = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    pictures = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                image = image.convert(mode)
                if target is not None:
                    image = image.resize((target[1], target[0]), Image.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"image folder: cannot read {path!r}: {err}") from None
        if pictures and array.shape != pictures[0].shape:
            raise DataError(f"image folder: {path!r} is {array.shape[:2]}, {files[0][0]!r} is "
                            f"{pictures[0].shape[:2]}; pass size= to resize them to one size")
        pictures.append(array)
    stacked = np.stack(pictures)
    stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return (np.ascontiguousarray(stacked), labels, classes) if return_classes else (np.ascontiguousarray(stacked), labels)
