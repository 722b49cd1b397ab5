"""The one place that exchanges tensors between the ranks of a ``torch.distributed`` group, on
the device the backend needs (CUDA for NCCL, the CPU for gloo), whatever device the data is on."""
from __future__ import annotations

import torch


def all_reduce(t: torch.Tensor, group, op: str = "sum") -> torch.Tensor:
    """``t`` summed (``op="max"``: maximised) over the ranks of ``group``, as a new tensor on
    ``t``'s device; ``t`` itself when ``group`` is None."""
    if group is None:
        return t
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        where = torch.device("cuda", torch.cuda.current_device())
    else:
        where = torch.device("cpu")
    buffer = t.to(where, copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return buffer.to(t.device)


def agree(what: dict, group) -> None:
    """Check that every rank of ``group`` passes the same ``what`` (name -> number; each number
    exact in float64): one all-reduce of the values and of their negatives (max and min).
    Raises a one-line ValueError on every rank, naming what differs, before any work."""
    if group is None or not what:
        return
    names = list(what)
    values = torch.tensor([float(what[n]) for n in names], dtype=torch.float64)
    high = all_reduce(torch.cat([values, -values]), group, "max")
    top, bottom = high[:len(names)], -high[len(names):]
    differ = [n for n, a, b in zip(names, top.tolist(), bottom.tolist()) if a != b]
    if differ:
        import torch.distributed as dist

        raise ValueError(f"rank {dist.get_rank(group)}: the processes disagree on {', '.join(differ)} "
                         f"(this rank: {', '.join(f'{n}={what[n]}' for n in differ)}); every rank must get the "
                         f"same data layout and settings")


def fingerprint(text: str) -> float:
    """A number (exact in float64) that differs between different ``text``s, for :func:`agree`."""
    import hashlib

    return float(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=6).digest(), "big"))
