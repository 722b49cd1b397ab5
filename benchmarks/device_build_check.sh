#!/usr/bin/env bash
# Before a GPU lease, without a GPU: build entclust with its CUDA kernels against the torch of
# the GPU machine (by default torch 2.11.0+cu130, what the lent H200 machines have; see
# /work/.library/device/KINDS.md) in a throw-away virtual environment, then run the whole test
# suite with that build (the CUDA tests skip; everything else runs on the CUDA-enabled library).
# A build or import failure found here costs no device time. Needs nvcc (a CUDA toolkit) and
# the pip index that has CUDA wheels of torch (several GB are installed into the environment).
#
#   bash benchmarks/device_build_check.sh                      # torch==2.11.0, sm_90
#   DEVICE_TORCH=torch==2.12.0 bash benchmarks/device_build_check.sh
#
# DEVICE_VENV (default /tmp/entclust-device-venv) is kept between runs; the build happens in a
# clean clone of this checkout's HEAD under DEVICE_BUILD_DIR (default /tmp/entclust-device-build).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${DEVICE_TORCH:-torch==2.11.0}
VENV=${DEVICE_VENV:-/tmp/entclust-device-venv}
BUILD=${DEVICE_BUILD_DIR:-/tmp/entclust-device-build}
command -v nvcc >/dev/null || { echo "device_build_check: needs nvcc on PATH" >&2; exit 2; }
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" numpy scipy "scikit-learn>=1.6" tqdm matplotlib pytest hypothesis \
  pytest-benchmark setuptools ninja
"$VENV/bin/python" -c "import torch; assert torch.version.cuda, 'this torch has no CUDA: ' + torch.__version__; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
rm -rf "$BUILD"
git clone -q "$PWD" "$BUILD"
cd "$BUILD"
# A toolkit with nvcc but no runtime library (as on the CPU machines here) links against the
# libcudart that torch's CUDA wheels bring.
libdir=$(mktemp -d)
cudart=$(find "$VENV" -name "libcudart.so*" 2>/dev/null | sort | head -n 1)
if [ -n "$cudart" ]; then ln -s "$cudart" "$libdir/libcudart.so"; fi
LIBRARY_PATH="$libdir${LIBRARY_PATH:+:$LIBRARY_PATH}" ENTCLUST_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
  MAX_JOBS=${MAX_JOBS:-2} "$VENV/bin/python" setup.py build_ext --inplace > build.log 2>&1 \
  || { tail -30 build.log; echo "device_build_check: the CUDA build failed (log: $BUILD/build.log)"; exit 1; }
"$VENV/bin/python" -m entclust info
PYTHONPATH="$BUILD" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
