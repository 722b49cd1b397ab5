"""Where the work of a piece of code ran: every op that reaches the dispatcher (aten ops and
entclust's own), with the devices of its tensors and its largest tensor's size. Tests use it to
show that a fit on a GPU does its N x K work there and calls entclust's CUDA kernels, with no
silent fallback to the CPU.

    with OpDevices() as ops:
        EntropyClustering(100, device="cuda").fit(x)
    assert not ops.cpu_work(min_numel=n * k // 2)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass(frozen=True)
class OpCall:
    name: str                 # e.g. "aten.mm.default", "entclust.em_rce.default"
    devices: frozenset        # device types of its tensor inputs and outputs
    numel: int                # elements of its largest tensor


class OpDevices(TorchDispatchMode):
    """Records each op dispatched inside the ``with`` block (below autograd: the backward's ops
    too) as an :class:`OpCall` in ``calls``."""

    def __init__(self):
        super().__init__()
        self.calls: list[OpCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if tensors:
            self.calls.append(OpCall(str(func), frozenset(t.device.type for t in tensors),
                                     max(t.numel() for t in tensors)))
        return out

    def entclust_calls(self) -> list[OpCall]:
        """The calls of entclust's compiled ops (``torch.ops.entclust.*``)."""
        return [c for c in self.calls if c.name.startswith("entclust.")]

    def cpu_work(self, min_numel: int) -> list[OpCall]:
        """Calls that ran on the CPU alone with a tensor of at least ``min_numel`` elements (a
        copy between devices touches both and is not counted)."""
        return [c for c in self.calls if c.devices == {"cpu"} and c.numel >= min_numel]
