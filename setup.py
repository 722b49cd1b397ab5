"""Build of the single extension module ``entclust._C``.

CPU kernels are always compiled. CUDA kernels are compiled when torch was built with CUDA and
a CUDA toolkit is found (``CUDA_HOME``/``nvcc``), not when a GPU happens to be visible, so a
GPU-less build machine still produces GPU kernels. ``ENTCLUST_FORCE_CUDA=1`` and
``ENTCLUST_CPU_ONLY=1`` override the decision; ``DEBUG=1`` builds with ``-O0 -g``.
"""
import glob
import os
import sys

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def cuda_decision():
    if os.environ.get("ENTCLUST_CPU_ONLY", "0") == "1":
        return False, "ENTCLUST_CPU_ONLY=1"
    if os.environ.get("ENTCLUST_FORCE_CUDA", "0") == "1":
        return True, "ENTCLUST_FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} was built without CUDA"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    return True, f"torch {torch.__version__} has CUDA {torch.version.cuda}, toolkit at {CUDA_HOME}"


def extension():
    debug = os.environ.get("DEBUG", "0") == "1"
    with_cuda, why = cuda_decision()
    print(f"entclust: CUDA kernels {'enabled' if with_cuda else 'skipped'}: {why}")

    # csrc/cpu/isa/cap_*.cpp compile the same row kernels once per instruction set (each file sets
    # its own target by pragma); csrc/cpu/isa/capability.cpp picks one at run time.
    sources = [os.path.join("csrc", "entclust.cpp")] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "isa", "*.cpp")))
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # `#pragma omp simd` loops; masked AVX-512 epilogues so rows shorter than a vector stay vectorised.
    cxx = opt + ["-fopenmp-simd", "--param", "vect-partial-vector-usage=1"]
    link = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is header code built on `#pragma omp parallel`: without -fopenmp it
        # silently runs on one thread. torch ships libgomp.so.1, which the loader then shares.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    macros = [("ENTCLUST_BUILD_TORCH_VERSION", f'"{torch.__version__}"')]
    if not with_cuda:
        return CppExtension(
            "entclust._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link, define_macros=macros
        )

    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    macros += [("ENTCLUST_WITH_CUDA", "1"), ("ENTCLUST_CUDA_ARCH_LIST", f'"{arch_list or "auto"}"')]
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    nvcc = opt + ["-lineinfo", "--expt-relaxed-constexpr"]
    return CUDAExtension(
        "entclust._C",
        sources,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=link,
        define_macros=macros,
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension})
