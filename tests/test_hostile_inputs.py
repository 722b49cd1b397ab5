"""Hostile files and conflicting commands against the newer parts (deep trainer, SPC, the
image loaders, the CLI's deep and spc commands): each is built here in a temporary folder and
must give a one-line error (a non-zero exit from the CLI) or correct work, never run code from
a file, crash the interpreter or change a file the user passed."""
import gzip
import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from entclust import cli, images
from entclust._files import CheckpointError, OutputError, plan_files
from entclust.data import DataError
from entclust.deep import SelfLabelingTrainer


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def small_trainer(**kw):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    return SelfLabelingTrainer(net, epochs=1, batch_size=50, seed=0, head=net[1], **kw)


@pytest.fixture
def vectors():
    return torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0))


# ---- 1. checkpoints are data, not code ----------------------------------------------------------
class _Marker:
    """Unpickled by ``weights_only=False``, this would write a file: what a malicious checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({str(self.path)!r}, 'w').write('ran')",))


def test_a_checkpoint_that_would_run_code_is_refused(vectors, tmp_path):
    path, marker = tmp_path / "run.pt", tmp_path / "marker"
    small_trainer(checkpoint=path).fit(vectors)
    state = torch.load(path, weights_only=True)
    state["history"].append({"note": _Marker(marker)})
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="could run code"):
        small_trainer(checkpoint=path).fit(vectors, resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "list"])
def test_damaged_checkpoints_are_one_line_errors(vectors, tmp_path, damage):
    path = tmp_path / "run.pt"
    small_trainer(checkpoint=path).fit(vectors)
    raw = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError) as err:
        small_trainer(checkpoint=path).fit(vectors, resume=True)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_checkpoints_of_other_data_or_shapes_are_refused(vectors, tmp_path):
    path = tmp_path / "run.pt"
    small_trainer(checkpoint=path).fit(vectors)
    other = vectors.flip(0)  # the same values in another order: another data set
    with pytest.raises(CheckpointError, match="differing: data"):
        small_trainer(checkpoint=path).fit(other, resume=True)
    torch.manual_seed(0)
    wider = SelfLabelingTrainer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5)), epochs=1, gamma=0.0,
                                batch_size=50, seed=0, checkpoint=path)
    with pytest.raises(CheckpointError, match="shapes"):
        wider.fit(vectors, resume=True)
    state = torch.load(path, weights_only=True)
    state["version"] = 1
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="format version 1"):
        small_trainer(checkpoint=path).fit(vectors, resume=True)


# ---- 2. the CIFAR reader rebuilds plain numeric arrays only --------------------------------------
class _Reduced:
    """Pickles as ``func(*args)`` followed by ``__setstate__(state)``: lets a test write the exact
    opcodes of a hostile numpy pickle with only the names a CIFAR batch uses."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args, self.state)


def hostile_batch(path, field_dtype) -> None:
    from numpy._core.multiarray import _reconstruct

    # a structured dtype whose one field is an object: numpy would read 8 raw bytes as a pointer
    dtype = _Reduced(np.dtype, ("V8", False, True),
                     (3, "|", None, ("a",), {"a": (field_dtype, 0)}, 8, 1, 0x3F))
    array = _Reduced(_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), dtype, False, b"\x41" * 8))
    with open(path, "wb") as f:
        pickle.dump({b"data": array, b"coarse_labels": [0]}, f, protocol=2)


def test_a_structured_object_dtype_in_a_cifar_batch_cannot_crash_the_interpreter(tmp_path):
    hostile_batch(tmp_path / "test", np.dtype("O"))
    code = ("import sys; from entclust import images; from entclust.data import DataError\n"
            f"try:\n    images.load_cifar100({str(tmp_path)!r}, 'test')\n"
            "except DataError as err:\n    print('refused:', err); sys.exit(3)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, (run.returncode, run.stderr[-2000:])
    assert "refused: CIFAR" in run.stdout and "'V8' are refused" in run.stdout


@pytest.mark.parametrize("case", ["float data", "short data", "codec", "labels", "deep"])
def test_malformed_cifar_batches_are_one_line_errors(tmp_path, case):
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"coarse_labels": [0, 1]}
    if case == "float data":
        batch[b"data"] = np.zeros((2, 3072), np.float64)
    elif case == "labels":
        batch[b"coarse_labels"] = ["x", 1]
    with open(tmp_path / "test", "wb") as f:
        if case == "deep":
            f.write(_nested_pickle(200_000))
        else:
            pickle.dump(batch, f, protocol=2)
    if case == "short data":  # the header of the array promises more bytes than follow
        raw = (tmp_path / "test").read_bytes().replace(b"\x00" * 6144, b"\x00" * 6000, 1)
        (tmp_path / "test").write_bytes(raw)
    if case == "codec":
        (tmp_path / "test").write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x04\x00\x00\x00zlibq\x01"
                                        b"\x86q\x02Rq\x03.")
    with pytest.raises(DataError) as err:
        images.load_cifar100(str(tmp_path), "test")
    assert "\n" not in str(err.value)


def _nested_pickle(depth: int) -> bytes:
    # {b"data": [[[...]]]}: built from opcodes (pickle.dump itself would recurse)
    return b"\x80\x02}q\x00C\x04dataq\x01" + b"]" * depth + b"a" * (depth - 1) + b"s."


# ---- 5 and 6: MNIST files are read header first ---------------------------------------------------
def test_an_idx_file_that_inflates_far_beyond_its_header_is_refused_without_reading_it(tmp_path):
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 28, 28))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + bytes(1568))
        for _ in range(64):  # 64 MiB of zeros after what the header declares
            f.write(bytes(1 << 20))
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write((2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(2))
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(DataError, match="1568 or more bytes"):
        images.load_mnist(str(tmp_path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("case", ["truncated gz", "label 255", "huge header"])
def test_damaged_mnist_files_are_one_line_errors(tmp_path, case):
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 28, 28))
    payload = header + bytes(1568)
    if case == "huge header":
        payload = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (60000, 60000, 60000))
    blob = gzip.compress(payload)
    if case == "truncated gz":
        blob = blob[: len(blob) // 2]
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(blob)
    labels = (2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + (bytes([1, 255]) if case == "label 255" else bytes(2))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(DataError) as err:
        images.load_mnist(str(tmp_path))
    assert "\n" not in str(err.value)


# ---- 3. every path a command writes is checked against every path it reads, before work ----------
def test_plan_files_names_both_options_of_a_conflict(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 2)))
    with pytest.raises(OutputError, match="--checkpoint: .* is also the data file"):
        plan_files({"data": str(data)}, {"--out": str(tmp_path / "a.npy")}, updates={"--checkpoint": str(data)})
    with pytest.raises(OutputError, match="--out and --history are the same file"):
        plan_files({}, {"--out": str(tmp_path / "a.json"), "--history": str(tmp_path / "." / "a.json")})
    os.symlink(data, tmp_path / "link.npy")
    with pytest.raises(OutputError, match="is also the data file"):
        plan_files({"data": str(data)}, {"--out": str(tmp_path / "link.npy")})
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"x")
    with pytest.raises(OutputError, match="inside the data folder"):
        plan_files({}, {"--history": str(folder / "train-images-idx3-ubyte")}, read_folders={"data": str(folder)})


@pytest.fixture
def image_file(tmp_path):
    x = np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "imgs.npy"
    np.save(path, x)
    labels = tmp_path / "partial.npy"
    np.save(labels, np.full(60, -1))
    return path, labels


@pytest.mark.parametrize("command, option", [("deep", "--checkpoint"), ("deep", "--history"), ("deep", "--out"),
                                             ("deep", "--partial-labels"), ("spc", "--checkpoint"), ("spc", "--history"),
                                             ("spc", "--out"), ("spc", "--plot")])
def test_cli_refuses_to_write_over_its_inputs_or_its_other_outputs(tmp_path, capsys, image_file, command, option):
    data, partial = image_file
    before = {p: digest(p) for p in (data, partial)}
    args = [command, str(data), "--k", "3", "--out", str(tmp_path / "out.npy"), "-q"]
    if command == "deep":
        args += ["--epochs", "1", "--partial-labels", str(partial)]
    if option == "--out":  # two outputs on one path
        args += ["--history", str(tmp_path / "out.npy")]
    elif option == "--partial-labels":
        args += ["--history", str(partial)]
    elif option == "--plot":  # (a plot over the data is refused by its extension already)
        args += ["--plot", str(tmp_path / "h.png"), "--history", str(tmp_path / "h.png")]
    else:
        args += [option, str(data)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("destroy" in err or "same file" in err or "exists" in err), err
    assert {p: digest(p) for p in (data, partial)} == before
    assert not (tmp_path / "out.npy").exists()


def test_cli_deep_does_not_replace_a_checkpoint_without_resume(tmp_path, capsys, image_file):
    data, _ = image_file
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"an earlier run")
    assert cli.main(["deep", str(data), "--k", "3", "--out", str(tmp_path / "o.npy"), "--checkpoint", str(ckpt),
                     "--epochs", "1", "-q"]) == 2
    assert "pass --resume" in capsys.readouterr().err and ckpt.read_bytes() == b"an earlier run"
    assert cli.main(["deep", str(data), "--k", "3", "--out", str(tmp_path / "o.npy"), "--checkpoint", str(ckpt),
                     "--epochs", "1", "--resume", "-q"]) == 2
    assert "damaged or not a checkpoint" in capsys.readouterr().err


def test_cli_spc_refuses_a_plot_it_cannot_write_before_the_work(tmp_path, capsys, image_file):
    data, _ = image_file
    assert cli.main(["spc", str(data), "--k", "3", "--out", str(tmp_path / "o.npy"), "--plot",
                     str(tmp_path / "rounds.bmpx"), "-q"]) == 2
    assert "--plot must end in" in capsys.readouterr().err


# ---- image folders: regular files only, sizes from the header --------------------------------------
def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 16)  # a few bytes of pixels: the file is a few hundred bytes
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat)))


def test_an_image_whose_header_declares_a_huge_size_is_refused_before_decoding(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "big.png").write_bytes(_png_header(10000, 10000))
    with pytest.raises(DataError, match="declares 10000 x 10000 pixels"):
        images.load_image_folder(str(tmp_path))


def test_a_fifo_named_like_an_image_does_not_hang_the_loader(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "a" / "ok.png")
    os.mkfifo(tmp_path / "a" / "pipe.png")
    x, y = images.load_image_folder(str(tmp_path), mode="L")
    assert x.shape == (1, 1, 4, 4)


def test_deep_estimator_refuses_points_without_features():
    from entclust.deep import DeepEntropyClustering

    with pytest.raises(ValueError, match="at least one feature"):
        DeepEntropyClustering(2, epochs=1).fit(np.zeros((10, 0), np.float32))


def test_result_files_get_the_umask_and_stale_temporaries_are_removed(tmp_path):
    from entclust._files import write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.{int(dead.stdout)}.abc123.tmp.json"  # left by a killed writer
    stale.write_text("{")
    old = os.umask(0o022)
    try:
        write_text(str(tmp_path / "out.json"), "{}")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "out.json").st_mode & 0o777) == 0o644
    assert not stale.exists()
