"""Writing result files safely: outputs are checked before any work, and written atomically
(a temporary file in the same folder, flushed to disk, then renamed over the target), so a
failed or interrupted write never leaves a truncated file over a good one and a set of
files (table, JSON, figure) appears whole or not at all."""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable


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


def check_output_file(path: str, what: str = "--out", *, inputs: Iterable[str | None] = ()) -> str:
    """``path`` is a file that can be created or replaced, and is none of ``inputs``."""
    if not path:
        raise OutputError(f"{what}: empty path")
    if os.path.isdir(path):
        raise OutputError(f"{what}: {path!r} is a folder; give a file name")
    folder = os.path.dirname(path) or "."
    if not os.path.exists(folder):
        raise OutputError(f"{what}: folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise OutputError(f"{what}: {folder!r} is not a folder")
    for source in inputs:
        if source and os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
            raise OutputError(f"{what}: {path!r} is the input file {source!r}; writing it would destroy the input")
    _probe(folder, what)
    return path


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
    try:
        for path, writer in jobs:
            folder, base = os.path.split(path)
            stem, ext = os.path.splitext(base)
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder or ".")
            os.close(fd)
            temps.append(tmp)
            try:
                writer(tmp)
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


def text_writer(text: str) -> Callable[[str], None]:
    """A ``write_files`` writer that writes ``text``."""
    def writer(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    return writer


def write_text(path: str, text: str) -> None:
    write_files([(path, text_writer(text))])
