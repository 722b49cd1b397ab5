#!/usr/bin/env bash
# On a CUDA machine, in one command: build the extension with CUDA kernels in place, run the
# whole test suite (the CUDA tests included), then the loss benchmark on the GPU and on the CPU,
# the solver benchmark on the GPU and on the CPU, the digits comparison, the large-K benchmark,
# the deep comparison and selective pseudo-label clustering on digit images.
# Results go under $OUT (or ./results): logs, JSON and PNG, and all of them packed in
# $OUT/gpu_check.tar.gz (the device tool brings back at most 8 files from $OUT; with
# GPU_CHECK_PACK=1, the default when OUT is set, only the summary and the archive stay).
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=${GPU_CHECK_PACK:-${OUT:+1}}
FINAL=${OUT:-results}
OUT="$FINAL/gpu_check"
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Build for the GPU that is here (9.0 on H100/H200) unless the caller says otherwise.
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$($PYTHON -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  export TORCH_CUDA_ARCH_LIST
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
echo "== build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
ENTCLUST_FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} $PYTHON setup.py build_ext --inplace > "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
$PYTHON -m entclust info | tee "$OUT/info.txt"
echo "== tests"
$PYTHON -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -15
tests_rc=${PIPESTATUS[0]}
echo "== benchmarks"
$PYTHON benchmarks/bench_losses.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench_cuda.md"
$PYTHON benchmarks/bench_losses.py --device cpu --out "$OUT" 2>&1 | tee "$OUT/bench_cpu.md"
# Solvers: the GPU section (batch of 1024 problems in one launch, bandwidth at N K = 10^8),
# then the CPU tables, then the method comparison.
$PYTHON -m entclust bench --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench_solvers_cuda.md"
$PYTHON -m entclust bench --out "$OUT" 2>&1 | tee "$OUT/bench_solvers.md"
$PYTHON -m entclust compare digits --seeds 5 -q --out "$OUT" 2>&1 | tee "$OUT/compare_digits.txt"
# Large K: the CPU rows and N = 10^6, K = 10 000 on the GPU (issue 11)
$PYTHON -m entclust bench large-k --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench_large_k.md"
# Deep clustering (issue 12): the deep methods on digit images with the defaults, on the GPU
$PYTHON -m entclust compare-deep digits --seeds 3 --methods rce,cce,mi-gd,iic --device cuda -q --out "$OUT" 2>&1 \
  | tee "$OUT/compare_deep_digits.txt"
# Selective pseudo-label clustering (issue 13): conv members on digit images, on the GPU
$PYTHON -m entclust spc digits --k 10 --device cuda -q --out "$OUT/spc_labels.npy" --history "$OUT/spc_history.json" \
  --plot "$OUT/spc_rounds.png" 2>&1 | tee "$OUT/spc_digits.txt"
tar czf "$FINAL/gpu_check.tar.gz" -C "$OUT" .
cp "$OUT/tests.log" "$FINAL/tests.log"
if [ "$PACK" = 1 ]; then rm -rf "$OUT"; fi
exit "$tests_rc"
