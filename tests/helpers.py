"""Shared test helpers: dtypes, devices, tensor makers, tolerances."""
from __future__ import annotations

import pytest
import torch

import entclust

FLOAT_DTYPES = [torch.float32, torch.float64]
HALF_DTYPES = [torch.float16, torch.bfloat16]
DTYPES = FLOAT_DTYPES + HALF_DTYPES


def devices() -> list:
    out = ["cpu"]
    if torch.cuda.is_available() and "cuda" in entclust.build_info()["kernels"]:
        out.append("cuda")
    return out


DEVICES = devices()
requires_cuda = pytest.mark.skipif("cuda" not in DEVICES, reason="needs a GPU and entclust's CUDA kernels")


def make_logits(shape, dtype=torch.float32, device="cpu", scale=3.0, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)


def make_simplex(shape, dtype=torch.float32, device="cpu", temperature=2.0, dim=-1, seed=1) -> torch.Tensor:
    """Rows on the simplex along ``dim``, normalised in float64 then cast; mixed with 10%
    uniform mass so that no entry underflows to 0 in half precision."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(temperature * torch.randn(shape, generator=g, dtype=torch.float64), dim=dim)
    k = shape[dim] if len(shape) else 1
    return (0.9 * p + 0.1 / max(k, 1)).to(dtype=dtype, device=device)


def tolerances(dtype: torch.dtype) -> dict:
    """Tolerances for kernel vs reference. Half types: the reference itself runs in float32 on
    upcast inputs, so the kernel is compared to the same rounding of that float32 result."""
    return {
        torch.float64: dict(rtol=1e-10, atol=1e-12),
        torch.float32: dict(rtol=2e-5, atol=2e-6),
        torch.float16: dict(rtol=1e-2, atol=1e-3),
        torch.bfloat16: dict(rtol=2e-2, atol=4e-3),
    }[dtype]


# Every instruction-set path of the CPU kernels this machine can run (default, avx2, avx512 on
# an AVX-512 x86-64 machine). Modules that test kernels import `every_cpu_capability`, which
# runs each of their tests once per path, so that no path ships untested.
CPU_CAPABILITIES = entclust.available_cpu_capabilities()


@pytest.fixture(scope="module", autouse=False, params=CPU_CAPABILITIES, ids=lambda c: f"isa={c}")
def every_cpu_capability(request):
    with entclust.use_cpu_capability(request.param):
        yield request.param


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def load_script(path: str):
    """A script of the source tree (``benchmarks/x.py``, ``examples/x.py``) as a module; its folder
    goes on ``sys.path`` as when it runs (a script may import its neighbours)."""
    import importlib.util
    import sys

    full = ROOT / path
    if str(full.parent) not in sys.path:
        sys.path.insert(0, str(full.parent))
    spec = importlib.util.spec_from_file_location(full.stem, full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(path: str, *args: str):
    """``python path args...`` from the repository root: the finished process."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(ROOT / path), *args], capture_output=True, text=True, cwd=ROOT)


def script_main(path: str, *argv: str) -> int:
    """A script's command line run in this process (the CLI's error handling): its exit status."""
    from entclust.cli import run_script as run

    module = load_script(path)
    return run(module.__name__, "", module.add_arguments, getattr(module, "run", None) or module.main, list(argv))
