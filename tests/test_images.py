"""Image loaders from local files (issue 12): small files written here in each dataset's own
format (IDX, the CIFAR python pickles, STL-10's column-major binaries), read back exactly."""
import gzip
import os
import pickle

import numpy as np
import pytest

from entclust import images
from entclust.data import DataError


def write_idx(path, array: np.ndarray, magic: int, compress: bool = False):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if compress else ""
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", pictures, 2051, compress)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", labels, 2049, compress)
    x, y = images.load_mnist(str(tmp_path), "test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], pictures)
    np.testing.assert_array_equal(y, labels.astype(np.int64))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        images.load_mnist(str(tmp_path), "train")


def test_mnist_rejects_a_wrong_header(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)), 2049)  # the labels' magic
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2), 2049)
    with pytest.raises(DataError, match="magic number 2051"):
        images.load_mnist(str(tmp_path))


def pickle_batch(path, batch: dict):
    with open(path, "wb") as f:  # protocol 2 with bytes keys, as the published batches are
        pickle.dump({k.encode(): v for k, v in batch.items()}, f, protocol=2)


def test_cifar10_batches_round_trip(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    data = [rng.integers(0, 256, (3, 3072), dtype=np.uint8) for _ in range(5)]
    for i, block in enumerate(data, 1):
        pickle_batch(folder / f"data_batch_{i}", {"data": block, "labels": [i % 10, 0, 9]})
    x, y = images.load_cifar10(str(tmp_path), "train")
    assert x.shape == (15, 3, 32, 32)
    # row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32 x 32
    np.testing.assert_array_equal(x[0, 1, 2, 3], data[0][0, 1024 + 2 * 32 + 3])
    np.testing.assert_array_equal(y[:3], [1, 0, 9])
    with pytest.raises(DataError, match="test_batch"):
        images.load_cifar10(str(tmp_path), "test")


def test_cifar100_gives_superclasses_or_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    pickle_batch(folder / "test", {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [55, 3],
                                   "coarse_labels": [0, 19]})
    x, coarse = images.load_cifar100(str(tmp_path), "test")
    _, fine = images.load_cifar100(str(folder), "test", coarse=False)
    assert x.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(coarse, [0, 19])
    np.testing.assert_array_equal(fine, [55, 3])


def test_a_pickle_that_is_not_a_cifar_batch_is_refused(tmp_path):
    with open(tmp_path / "test", "wb") as f:
        pickle.dump({b"data": os.getcwd}, f)  # a callable: what a malicious pickle would use
    with pytest.raises(DataError, match="never holds"):
        images.load_cifar100(str(tmp_path), "test")


def test_stl10_binaries_are_column_major(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(2)
    pictures = rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
    pictures.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")  # the file stores (N, C, W, H)
    np.array([1, 10], np.uint8).tofile(folder / "train_y.bin")
    x, y = images.load_stl10(str(tmp_path), "train")
    np.testing.assert_array_equal(x, pictures)
    np.testing.assert_array_equal(y, [0, 9])
    pictures[:1].transpose(0, 1, 3, 2).tofile(folder / "unlabeled_X.bin")
    x, y = images.load_stl10(str(tmp_path), "unlabeled")
    assert x.shape == (1, 3, 96, 96) and y is None
    with pytest.raises(DataError, match="test_X.bin, test_y.bin"):
        images.load_stl10(str(tmp_path), "test")
    with pytest.raises(ValueError, match="split must be one of"):
        images.load_stl10(str(tmp_path), "val")


def test_digit_images_are_the_bundled_real_dataset():
    x, y = images.load_digit_images()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and len(np.unique(y)) == 10


def test_a_missing_root_is_named(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        images.load_cifar10(str(tmp_path / "nowhere"))


def test_image_folders_one_subfolder_per_class(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    written = {}
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
            written[(name, i)] = pixels
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    x, y, classes = images.load_image_folder(str(tmp_path), return_classes=True)
    assert classes == ["cat", "dog"] and x.shape == (4, 3, 6, 5)
    np.testing.assert_array_equal(y, [0, 0, 1, 1])
    np.testing.assert_array_equal(x[2].transpose(1, 2, 0), written[("dog", 0)])  # png is lossless
    gray, _ = images.load_image_folder(str(tmp_path), mode="L", size=4)
    assert gray.shape == (4, 1, 4, 4)
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp_path / "cat" / "big.png")
    with pytest.raises(DataError, match="pass size="):
        images.load_image_folder(str(tmp_path))
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read"):
        images.load_image_folder(str(tmp_path), size=4)
    with pytest.raises(DataError, match="no images"):
        images.load_image_folder(str(tmp_path / "cat"))
