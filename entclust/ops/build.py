"""What the compiled extension contains and whether its kernels run; which instruction set
("CPU capability") the CPU kernels use."""
from __future__ import annotations

import contextlib
import platform
from typing import Iterator

import torch

from .. import _C

# Fail at import, naming the variable, when ENTCLUST_CPU_CAPABILITY asks for a path this
# machine cannot run (rather than at the first kernel call, deep inside a training loop).
_C.cpu_capability()

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


def cpu_capability() -> str:
    """The instruction set the CPU kernels run with: ``"avx512"``, ``"avx2"`` or ``"default"``
    (the build target's baseline: SSE2 on x86-64, NEON on aarch64). Chosen at the first call as
    the best this CPU supports, or forced by the environment variable
    ``ENTCLUST_CPU_CAPABILITY=default|avx2|avx512`` (an error if this CPU cannot run it)."""
    return _C.cpu_capability()


def available_cpu_capabilities() -> list[str]:
    """Capabilities this build has kernels for and this CPU can run, from the baseline up."""
    return list(_C.supported_cpu_capabilities())


def set_cpu_capability(name: str | None) -> None:
    """Switch every CPU kernel of this process to ``name`` (one of
    :func:`available_cpu_capabilities`); ``None`` or ``""`` picks the best supported again.
    Raises ``RuntimeError`` naming the capabilities this CPU supports otherwise."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    _C.set_cpu_capability(name or "")


@contextlib.contextmanager
def use_cpu_capability(name: str) -> Iterator[None]:
    """Run the CPU kernels with capability ``name`` inside the ``with`` block, then restore the
    previous one (tests and benchmarks use it to reach every path on one machine)."""
    previous = cpu_capability()
    set_cpu_capability(name)
    try:
        yield
    finally:
        _C.set_cpu_capability(previous)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for benchmark records."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_kernels(device: torch.device) -> bool:
    """Whether the fused kernels run on ``device`` in this build (CPU always; CUDA when entclust
    was compiled with its CUDA kernels)."""
    return device.type == "cpu" or (device.type == "cuda" and compiled_with_cuda())


def _kernels_run(device: str) -> str:
    """Runs the raw fused op once (forward and its fused gradient) on ``device``."""
    try:
        logits = torch.zeros(2, 3, device=device)
        y = torch.full((2, 3), 1.0 / 3.0, device=device)
        loss, _, grad, _ = torch.ops.entclust.reverse_cross_entropy(logits, y, 1, True, False, 1e-4)
        ok = abs(loss.item() - torch.log(torch.tensor(3.0)).item()) < 1e-5 and float(grad.abs().max()) < 1e-6
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
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(),
        "cpu_capabilities_supported": available_cpu_capabilities(),
        "cpu_capabilities_compiled": list(_C.compiled_cpu_capabilities()),
    }
    if info["cuda_available"]:
        info["cuda_kernels"] = _kernels_run("cuda") if "cuda" in info["kernels"] else "not compiled"
        info["gpu"] = torch.cuda.get_device_name()
    return info
