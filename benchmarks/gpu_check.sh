#!/usr/bin/env bash
# Everything issue 14 needs from a CUDA machine, in one command, most important first, inside a
# time budget (a session is lent such a machine for 15 minutes, its start included):
#
#   info            GPU, driver, CUDA, torch, nvcc, compute-sanitizer versions
#   build           the extension with CUDA kernels, in place, for the GPU that is here
#   cuda-tests      tests/test_cuda.py (every kernel against the CPU kernels; estimator, SelfLabeling,
#                   deep and SPC on CUDA) and the CUDA cases of tests/test_linear_self_labeling.py
#                   (the fused linear op against its reference); fails when torch sees no GPU or the
#                   build has no CUDA
#   memcheck        compute-sanitizer memcheck on benchmarks/cuda_sanitize.py (every kernel at
#                   every launch configuration, small sizes, PyTorch's caching allocator off)
#   racecheck, synccheck   the other two compute-sanitizer tools on the same program
#   bench-solvers   `benchmarks/bench_kernels.py --device cuda`: B = 1024 problems of 250 x 200 to
#                   max|dy| <= 1e-6 in one launch, one EM iteration at N K = 1e8, against the eager
#                   reference and torch.compile, with the copy bandwidth of the same run; then
#                   `entclust bench solvers --device cuda` (every solver to a relative gap of 1e-6,
#                   K = 20, 200, 2000, B = 16, 5 s each)
#   bench-losses    forward + backward at the issue's 16384 x 16384 and 4096 x 1000, float32 and
#                   bfloat16, against the eager reference, torch.compile (8 compilations: the
#                   stage's main cost) and F.cross_entropy, with the copy bandwidth of the same run;
#                   `python benchmarks/bench_losses.py --device cuda` alone has more shapes
#   bench-linear    one training step of the fused linear self-labeling op at B = 4096, K = 1e5,
#                   D = 256 against the unfused composition and plain PyTorch (time, peak memory)
#   suite           the rest of the test suite with the CUDA build (pytest-xdist when installed)
#   large-k         `benchmarks/bench_large_k.py --device cuda` (N = 1e6, K = 1e4: entclust, its start and
#                   torch-kmeans, faiss's recipe in PyTorch, on the GPU; MiniBatchKMeans on the CPU)
#   deep            `entclust compare-deep digits --device cuda`, 1 seed
#   spc             `entclust spc digits --device cuda` (convolutional members)
#
#   bash benchmarks/gpu_check.sh                  # every stage, in that order
#   bash benchmarks/gpu_check.sh bench-losses     # named stages only (a rerun on a warm machine)
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh  # rehearsal on a CPU machine: no build, CPU device,
#                                                 # tiny sizes, no sanitizer (tests/test_gpu_check.py)
#
# GPU_CHECK_BUDGET (seconds, default 540) bounds the whole run: each stage runs under `timeout`
# with what is left, and a stage whose usual time no longer fits is skipped and says so. Logs,
# JSON and PNG go to GPU_CHECK_WORK (default results/gpu_check, outside $OUT); after every stage
# they are packed into $OUT/gpu_check.tar.gz, and summary.md (stage, status, seconds) and the
# CUDA test log are copied beside it, so a run stopped at any point still brings its results
# back (the device tool returns at most 8 files from $OUT). Exit status: 1 if a stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python3}
export DRY=${GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_BUDGET:-540}
FINAL=${OUT:-results}
export WORK=${GPU_CHECK_WORK:-results/gpu_check}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ALL="info build cuda-tests memcheck racecheck synccheck bench-solvers bench-losses bench-linear suite large-k deep spc"
STAGES=${*:-$ALL}
for s in $STAGES; do
  case " $ALL " in *" $s "*) ;; *) echo "gpu_check: unknown stage '$s'; stages: $ALL" >&2; exit 2 ;; esac
done
# A full run starts clean; named stages add to the results of the last run (a rerun).
if [ $# -eq 0 ]; then rm -rf "$WORK"; fi
mkdir -p "$WORK" "$FINAL"
SUMMARY="$WORK/summary.md"
[ -f "$SUMMARY" ] || printf '| stage | status | seconds |\n|---|---|---|\n' > "$SUMMARY"
START=$(date +%s)
FAILED=0

pack() {
  tar czf "$FINAL/gpu_check.tar.gz.tmp" -C "$WORK" . && mv "$FINAL/gpu_check.tar.gz.tmp" "$FINAL/gpu_check.tar.gz"
  cp "$SUMMARY" "$FINAL/summary.md"
  if [ -f "$WORK/cuda-tests.log" ]; then cp "$WORK/cuda-tests.log" "$FINAL/cuda-tests.log"; fi
}

# Sanitizer options that this compute-sanitizer knows (an unknown option would fail the stage).
sanitizer() {
  local tool=$1 opts=(--tool "$tool" --error-exitcode 9)
  local help
  help=$(compute-sanitizer --help 2>&1)
  case "$help" in *--report-api-errors*) opts+=(--report-api-errors no) ;; esac
  case "$help" in *--print-limit*) opts+=(--print-limit 50) ;; esac
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer "${opts[@]}" "$PYTHON" benchmarks/cuda_sanitize.py
}

# One function per stage; DRY=1 runs a CPU stand-in that exercises the same scripts.
st_info() {
  date -u
  git log -1 --format='commit %H %s' 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || true
  nvcc --version 2>&1 | tail -n 2 || true
  compute-sanitizer --version 2>&1 | head -n 2 || true
  "$PYTHON" - <<'PY'
import os, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, {os.cpu_count()} CPUs")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
PY
}
st_build() {
  if [ "$DRY" = 1 ]; then echo "dry run: the installed build is used"; "$PYTHON" -m entclust info; return; fi
  local arch=${TORCH_CUDA_ARCH_LIST:-$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
  echo "TORCH_CUDA_ARCH_LIST=$arch"
  TORCH_CUDA_ARCH_LIST=$arch ENTCLUST_FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} "$PYTHON" setup.py build_ext --inplace \
    || return 1
  "$PYTHON" -m entclust info
}
st_cuda_tests() {
  if [ "$DRY" != 1 ]; then
    "$PYTHON" -c "import torch, entclust; assert torch.cuda.is_available(), 'torch sees no GPU'; \
assert entclust.ops.compiled_with_cuda(), 'entclust was built without CUDA kernels'" || return 1
  fi
  "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_linear_self_labeling.py -k "cuda or not cpu" \
    2>&1 | tee "$WORK/cuda-tests.pytest"
  local rc=${PIPESTATUS[0]}
  # on a GPU machine a skipped CUDA test is a test that did not run
  if [ "$DRY" != 1 ] && grep -q " skipped" "$WORK/cuda-tests.pytest"; then
    echo "gpu_check: CUDA tests were skipped on a machine with a GPU"
    return 1
  fi
  return "$rc"
}
st_memcheck() { if [ "$DRY" = 1 ]; then "$PYTHON" benchmarks/cuda_sanitize.py --device cpu; else sanitizer memcheck; fi; }
st_racecheck() { if [ "$DRY" = 1 ]; then echo "dry run: no sanitizer"; else sanitizer racecheck; fi; }
st_synccheck() { if [ "$DRY" = 1 ]; then echo "dry run: no sanitizer"; else sanitizer synccheck; fi; }
st_bench_solvers() {
  if [ "$DRY" = 1 ]; then
    "$PYTHON" -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_kernels as b; b.print_gpu_section(*b.gpu_section(True, 'cpu'))"
    "$PYTHON" -m entclust bench solvers --k 20 --batch 2 --time-limit 0.2 --problem rce --out "$WORK/solvers"
  else
    "$PYTHON" benchmarks/bench_kernels.py --device cuda --out "$WORK"
    "$PYTHON" -m entclust bench solvers --device cuda --k 20 200 2000 --batch 16 --time-limit 5 --problem rce \
      --out "$WORK/solvers"
  fi
}
st_bench_losses() {
  if [ "$DRY" = 1 ]; then
    "$PYTHON" benchmarks/bench_losses.py --device cpu --dtype float32,bfloat16 --shapes 64x100 --repeat 3 \
      --capabilities "$("$PYTHON" -c 'import entclust; print(entclust.cpu_capability())')" --out "$WORK"
  else
    "$PYTHON" benchmarks/bench_losses.py --device cuda --dtype float32,bfloat16 \
      --shapes 16384x16384,4096x1000 --out "$WORK"
  fi
}
st_bench_linear() {
  if [ "$DRY" = 1 ]; then "$PYTHON" benchmarks/linear_self_labeling.py --b 64 --k 500 --d 16 --repeat 1
  else "$PYTHON" benchmarks/linear_self_labeling.py --device cuda --repeat 5; fi
}
st_suite() {
  if [ "$DRY" = 1 ]; then echo "dry run: the CPU suite is CI's"; return; fi
  local xdist=()
  if "$PYTHON" -c "import xdist" 2>/dev/null; then xdist=(-n 8); fi
  "$PYTHON" -m pytest -q -p no:cacheprovider "${xdist[@]}" tests --ignore=tests/test_cuda.py
}
st_large_k() {
  if [ "$DRY" = 1 ]; then "$PYTHON" benchmarks/bench_large_k.py --quick --out "$WORK"
  else "$PYTHON" benchmarks/bench_large_k.py --device cuda --out "$WORK"; fi
}
st_deep() {
  if [ "$DRY" = 1 ]; then echo "dry run: skipped (minutes on a CPU)"; return; fi
  "$PYTHON" -m entclust compare-deep digits --seeds 1 --methods rce,cce,mi-gd,iic --device cuda -q --out "$WORK"
}
st_spc() {
  if [ "$DRY" = 1 ]; then echo "dry run: skipped (minutes on a CPU)"; return; fi
  "$PYTHON" -m entclust spc digits --k 10 --device cuda -q --out "$WORK/spc_labels.npy" \
    --history "$WORK/spc_history.json" --plot "$WORK/spc_rounds.png"
}
export -f sanitizer st_info st_build st_cuda_tests st_memcheck st_racecheck st_synccheck st_bench_solvers \
  st_bench_losses st_suite st_large_k st_deep st_spc

# Seconds a stage usually needs on an H100/H200 machine (estimates until measured there): a stage
# is skipped when less than this is left of the budget.
need() {
  case $1 in
    info) echo 5 ;; build) echo 90 ;; cuda-tests) echo 60 ;; memcheck | racecheck | synccheck) echo 60 ;;
    bench-solvers) echo 150 ;; bench-losses) echo 150 ;; suite) echo 120 ;; *) echo 90 ;;
  esac
}

for s in $ALL; do
  case " $STAGES " in *" $s "*) ;; *) continue ;; esac
  left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt "$(need "$s")" ]; then
    echo "== $s: skipped, $left s of the budget left (needs about $(need "$s"))"
    echo "| $s | skipped: $left s left of $BUDGET | 0 |" >> "$SUMMARY"
    pack
    continue
  fi
  echo "== $s (at most $left s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$left" bash -c "st_${s//-/_}" > "$WORK/$s.log" 2>&1
  rc=$?
  took=$(($(date +%s) - t0))
  case $rc in
    0) status=ok ;;
    124 | 137) status="timed out"; FAILED=1 ;;
    *) status="failed (exit $rc)"; FAILED=1 ;;
  esac
  tail -n 12 "$WORK/$s.log"
  echo "| $s | $status | $took |" >> "$SUMMARY"
  pack
  if [ "$s" = build ] && [ $rc -ne 0 ]; then
    echo "gpu_check: the build failed; nothing else can run"
    break
  fi
done
echo
cat "$SUMMARY"
exit "$FAILED"
