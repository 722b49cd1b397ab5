"""Writing result files safely: outputs are checked before any work, and written atomically
(a temporary file in the same folder, flushed to disk, then renamed over the target), so a
failed or interrupted write never leaves a truncated file over a good one and a set of
files (table, JSON, figure) appears whole or not at all."""
from __future__ import annotations

import os
import tempfile
from typing import Callable


class OutputError(ValueError):
    """An output path that cannot be written, with the reason (reported before any work)."""


def _probe(folder: str, what: str) -> None:
    """Create and remove a file in ``folder``: the only test that holds for read-only mounts,
    /proc, full disks of inodes, and permissions (``os.access`` is always True for root)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".entclust-probe-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise OutputError(f"{what}: cannot write in folder {folder!r}: {err.strerror or err}") from None


def check_output_file(path: str, what: str = "--out") -> str:
    """``path`` is a file that can be created or replaced (against a command's inputs:
    :func:`plan_files`)."""
    if not path:
        raise OutputError(f"{what}: empty path")
    if os.path.isdir(path):
        raise OutputError(f"{what}: {path!r} is a folder; give a file name")
    folder = os.path.dirname(path) or "."
    if not os.path.exists(folder):
        raise OutputError(f"{what}: folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise OutputError(f"{what}: {folder!r} is not a folder")
    _probe(folder, what)
    return path


def _same(a: str, b: str) -> bool:
    """Whether two paths name one file: the same inode when both exist (hard links, symlinks),
    else the same resolved path (two outputs not yet written)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, folder: str) -> bool:
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def plan_files(reads: dict[str, str | None], writes: dict[str, str | None], *,
               updates: dict[str, str | None] | None = None, read_folders: dict[str, str | None] | None = None) -> None:
    """Check a command's files before any work: every path it ``writes`` (option name -> path)
    can be written and is none of the files it ``reads``, none of the files inside the folders
    it reads (``read_folders``: a dataset root), and no other output; ``updates`` are files the
    command both reads and rewrites on purpose (a checkpoint it resumes), checked as outputs
    against everything else. Raises :class:`OutputError` naming both options."""
    reads = {k: v for k, v in reads.items() if v}
    outputs = {k: v for k, v in {**writes, **(updates or {})}.items() if v}
    folders = {k: v for k, v in (read_folders or {}).items() if v}
    for name, path in outputs.items():
        check_output_file(path, name)
        for source_name, source in reads.items():
            if _same(path, source):
                raise OutputError(f"{name}: {path!r} is also the {source_name} file; writing it would destroy the input")
        for source_name, folder in folders.items():
            if os.path.isdir(folder) and os.path.exists(path) and _inside(path, folder):
                raise OutputError(f"{name}: {path!r} is a file inside the {source_name} folder {folder!r}; "
                                  f"write results elsewhere")
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _same(outputs[a], outputs[b]):
                raise OutputError(f"{a} and {b} are the same file {outputs[a]!r}; give each output its own path")


def check_output_folder(path: str, what: str = "--out") -> str:
    """``path`` is a folder in which files can be written, or can be created as one (it is not
    created here: nothing is written before the work is done)."""
    if not path:
        raise OutputError(f"{what}: empty path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{what}: {path!r} exists and is not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"{what}: cannot create folder {path!r}: {existing!r} is not a folder")
    _probe(existing, what)
    return path


def check_file_name(name: str, what: str) -> str:
    """A plain file name (no folder part), used to name outputs."""
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name) or "\0" in name:
        raise OutputError(f"{what} must be a plain name without a folder part, got {name!r}")
    return name


def write_files(jobs: list[tuple[str, Callable[[str], None]]]) -> list[str]:
    """Atomically write each ``(path, writer)``: ``writer(tmp)`` fills a temporary file with the
    same extension in the target's folder; only when every writer succeeded are the files
    flushed and renamed onto their targets. On any error (or Ctrl-C) the temporaries are
    removed, the targets are untouched, and the error propagates."""
    temps: list[str] = []
    mode = 0o666 & ~_umask()
    try:
        for path, writer in jobs:
            folder, base = os.path.split(path)
            stem, ext = os.path.splitext(base)
            _remove_stale(folder or ".", stem, ext)
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{os.getpid()}.", suffix=f".tmp{ext}", dir=folder or ".")
            os.close(fd)
            temps.append(tmp)
            try:
                writer(tmp)
                os.chmod(tmp, mode)  # mkstemp makes 0600; a result file gets the user's umask
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            except OSError as err:  # name the target, not the temporary
                raise OSError(err.errno, err.strerror or str(err), path) from None
        for tmp, (path, _) in zip(temps, jobs):
            os.replace(tmp, path)
        temps = []
    finally:
        for tmp in temps:
            try:
                os.remove(tmp)
            except OSError:
                pass
    return [path for path, _ in jobs]


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def _remove_stale(folder: str, stem: str, ext: str) -> None:
    """Remove temporaries of the same target left by a writer that was killed (SIGKILL, power
    loss): named ``.<stem>.<pid>.<random>.tmp<ext>``, stale when no process ``pid`` runs."""
    prefix, suffix = f".{stem}.", f".tmp{ext}"
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        pid = name[len(prefix):-len(suffix)].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
            continue
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def text_writer(text: str) -> Callable[[str], None]:
    """A ``write_files`` writer that writes ``text``."""
    def writer(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    return writer


def write_text(path: str, text: str) -> None:
    write_files([(path, text_writer(text))])


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: damaged, of another version or settings, or holding
    anything but tensors and plain data."""


def read_checkpoint(path: str, device, version: int) -> dict:
    """A checkpoint written by ``torch.save`` of a dict of tensors and plain Python data, read
    with ``weights_only=True``: no object in the file is rebuilt by its own code, so a file that
    would run code when unpickled is refused. Every failure is one line (:class:`CheckpointError`)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else ""
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise CheckpointError(f"checkpoint {path!r} holds objects other than tensors and plain data, which could run "
                                  f"code when read; refused") from None
        raise CheckpointError(f"checkpoint {path!r} is damaged: {first}") from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {err.strerror or err}") from None
    except Exception as err:  # truncated zip archives, zero-byte files, other formats
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"checkpoint {path!r} is damaged or not a checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path!r} does not hold a checkpoint (a dict), got {type(state).__name__}")
    if state.get("version") != version:
        raise CheckpointError(f"checkpoint {path!r} has format version {state.get('version')!r}; this entclust reads "
                              f"version {version} (start again without resuming)")
    return state


def check_settings(path: str, mine: dict, theirs) -> None:
    """A resumed run's settings (``mine``) against those a checkpoint was written with: one
    :class:`CheckpointError` naming every setting that differs."""
    if not isinstance(theirs, dict) or theirs != mine:
        differ = sorted(k for k in mine if not isinstance(theirs, dict) or theirs.get(k) != mine[k])
        raise CheckpointError(f"checkpoint {path!r} was written for other settings or data "
                              f"(differing: {', '.join(differ)}); start again without resuming")


def data_fingerprint(x) -> list:
    """Shape, dtype and two float64 checksums of ``x`` (its sum and a position-weighted sum, so a
    permutation or other data of the same shape differ): a resumed run must see the same data."""
    import numpy as np
    import torch

    array = isinstance(x, np.ndarray)  # read block by block (a read-only memory map stays on disk)
    flat = x.reshape(-1) if array else x.detach().reshape(-1)
    sums = torch.zeros(2, dtype=torch.float64, device="cpu" if array else flat.device)
    step = 1 << 22  # float64 temporaries of 32 MB at most
    for i in range(0, flat.shape[0], step):
        part = torch.from_numpy(np.array(flat[i:i + step], dtype=np.float64)) if array else flat[i:i + step].double()
        weights = torch.arange(i + 1, i + 1 + part.numel(), dtype=torch.float64, device=sums.device).remainder_(9973)
        sums[0] += part.sum()
        sums[1] += (part * weights.add_(1)).sum()
    return [list(x.shape), str(x.dtype).replace("torch.", ""), float(sums[0]), float(sums[1])]
