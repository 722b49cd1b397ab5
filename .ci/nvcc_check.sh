#!/usr/bin/env bash
# Compile (no link) every csrc/cuda/*.cu with nvcc against the installed torch's headers, so
# CUDA code that does not compile cannot land even where CI has no GPU. A CPU-only torch wheel
# lacks one generated header, c10/cuda/impl/cuda_cmake_macros.h; a CUDA build of torch ships
# it with the single definition below, so a shim directory supplies it here.
# NVCC_CHECK_FILES limits the check to some files (default: all of csrc/cuda/*.cu).
# NVCC_CHECK_FLAGS adds flags, e.g. NVCC_CHECK_FLAGS="-Xptxas -v" for registers and spills per kernel.
set -euo pipefail
PYTHON=${PYTHON:-python3}
ARCH=${ENTCLUST_NVCC_CHECK_ARCH:-90}
cd "$(dirname "$0")/.."

includes=$($PYTHON -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
if ! $PYTHON - <<'PY'
import os, sys, torch.utils.cpp_extension as c
sys.exit(0 if any(os.path.exists(os.path.join(p, "c10/cuda/impl/cuda_cmake_macros.h")) for p in c.include_paths()) else 1)
PY
then
  mkdir -p "$shim/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$shim/c10/cuda/impl/cuda_cmake_macros.h"
fi

status=0
for f in ${NVCC_CHECK_FILES:-csrc/cuda/*.cu}; do
  echo "nvcc -c $f (sm_$ARCH)"
  # shellcheck disable=SC2086
  if ! nvcc -c "$f" -o /dev/null -std=c++20 -O3 -I"$shim" $includes \
      -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
      -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr -Werror all-warnings \
      -gencode "arch=compute_$ARCH,code=sm_$ARCH" -Xcompiler -Wno-c++20-extensions ${NVCC_CHECK_FLAGS:-} 2>&1; then
    status=1
  fi
done
[ $status -eq 0 ] && echo "nvcc check: all CUDA sources compile" || echo "nvcc check: FAILED"
exit $status
