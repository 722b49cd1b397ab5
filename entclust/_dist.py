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
