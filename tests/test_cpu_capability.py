"""Runtime choice of the CPU kernels' instruction set: detection, the ENTCLUST_CPU_CAPABILITY
override, switching in-process, and that every path computes the same thing."""
import os
import subprocess
import sys

import pytest
import torch

import entclust
from entclust import _C

from .helpers import CPU_CAPABILITIES, make_logits, make_simplex

KNOWN = ["default", "avx2", "avx512"]


def _python(code, capability=None):
    env = {k: v for k, v in os.environ.items() if k != "ENTCLUST_CPU_CAPABILITY"}
    if capability is not None:
        env["ENTCLUST_CPU_CAPABILITY"] = capability
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_default_is_supported_and_the_best_is_chosen():
    supported = entclust.available_cpu_capabilities()
    assert supported[0] == "default"
    assert set(supported) <= set(_C.compiled_cpu_capabilities()) <= set(KNOWN)
    out = _python("import entclust; print(entclust.cpu_capability())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == supported[-1]
    info = entclust.build_info()
    assert info["cpu_capabilities_supported"] == supported and info["cpu_capability"] in supported


@pytest.mark.parametrize("capability", CPU_CAPABILITIES)
def test_environment_override_is_used(capability):
    out = _python("import entclust; print(entclust.cpu_capability())", capability.upper())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == capability


def test_unknown_or_unsupported_capability_fails_at_import_with_the_name():
    out = _python("import entclust", "sse9")
    assert out.returncode != 0
    assert "ENTCLUST_CPU_CAPABILITY" in out.stderr and "unknown CPU capability 'sse9'" in out.stderr
    unsupported = [c for c in _C.compiled_cpu_capabilities() if c not in CPU_CAPABILITIES]
    if unsupported:  # an AVX2-only machine: asking for avx512 is an error, not a silent fallback
        out = _python("import entclust", unsupported[0])
        assert out.returncode != 0 and "not supported by this CPU" in out.stderr


def test_set_and_scope_restore():
    before = entclust.cpu_capability()
    with entclust.use_cpu_capability("default"):
        assert entclust.cpu_capability() == "default"
    assert entclust.cpu_capability() == before
    with pytest.raises(RuntimeError, match="unknown CPU capability 'bogus'.*supports: default"):
        entclust.set_cpu_capability("bogus")
    assert entclust.cpu_capability() == before
    with pytest.raises(TypeError, match="name must be a str"):
        entclust.set_cpu_capability(2)
    entclust.set_cpu_capability(None)
    assert entclust.cpu_capability() == CPU_CAPABILITIES[-1]
    entclust.set_cpu_capability(before)


@pytest.mark.parametrize("k", [1, 7, 16, 33, 1000])
def test_every_path_agrees(k):
    """The paths differ only in vector width: same formulas, so their results agree to a few
    float32 roundings (sums are grouped differently)."""
    logits = make_logits((37, k)).requires_grad_()
    y = make_simplex((37, k)).requires_grad_()
    results = {}
    for capability in CPU_CAPABILITIES:
        with entclust.use_cpu_capability(capability):
            for name, fn in [("rce", entclust.reverse_cross_entropy), ("cce", entclust.collision_cross_entropy)]:
                logits.grad = y.grad = None
                loss = fn(logits, y, reduction="none")
                loss.sum().backward()
                results[capability, name] = (loss.detach(), logits.grad.clone(), y.grad.clone())
            sigma = torch.softmax(logits.detach(), 1)[None]
            results[capability, "em"] = (entclust.em_rce(sigma, max_iter=20, tol=0.0).y,)
    for (capability, name), values in results.items():
        for got, want in zip(values, results["default", name]):
            torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6, msg=f"{capability} vs default, {name}")
