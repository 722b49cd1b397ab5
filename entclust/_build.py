"""What the compiled extension contains and whether its kernels run."""
from __future__ import annotations

import torch

from . import _C

REBUILD_HINT = (
    "rebuild entclust with CUDA kernels on a machine whose torch has CUDA and a CUDA toolkit "
    "(nvcc): `ENTCLUST_FORCE_CUDA=1 pip install --no-build-isolation -e .`"
)


def compiled_with_cuda() -> bool:
    return bool(_C.build_info()["cuda"])


def check_device(name: str, t: torch.Tensor) -> None:
    """Raise a readable error when no entclust kernel exists for ``t``'s device."""
    kind = t.device.type
    if kind == "cpu" or (kind == "cuda" and compiled_with_cuda()):
        return
    if kind == "cuda":
        raise RuntimeError(f"{name} is a CUDA tensor, but this entclust build has CPU kernels only: {REBUILD_HINT}")
    raise RuntimeError(f"{name} is on device {t.device}; entclust has kernels for cpu and cuda only")


def _kernels_run(device: str) -> str:
    from .losses import reverse_cross_entropy

    try:
        logits = torch.zeros(2, 3, device=device, requires_grad=True)
        y = torch.full((2, 3), 1.0 / 3.0, device=device)
        loss = reverse_cross_entropy(logits, y)
        loss.backward()
        ok = abs(loss.item() - torch.log(torch.tensor(3.0)).item()) < 1e-5
        return "ok" if ok else f"wrong result {loss.item()}"
    except Exception as exc:  # reported, not raised: this is a diagnostic
        return f"failed: {exc}"


def build_info() -> dict:
    """Torch version compiled against and running, compiled kernels, and whether they run."""
    info = dict(_C.build_info())
    info = {
        "torch_compiled": info["torch_version"],
        "torch_running": torch.__version__,
        "kernels": ["cpu"] + (["cuda"] if info["cuda"] else []),
        "cuda_arch_list": info["cuda_arch_list"] or None,
        "cuda_available": torch.cuda.is_available(),
        "cpu_kernels": _kernels_run("cpu"),
    }
    if info["cuda_available"]:
        info["cuda_kernels"] = _kernels_run("cuda") if "cuda" in info["kernels"] else "not compiled"
        info["gpu"] = torch.cuda.get_device_name()
    return info
