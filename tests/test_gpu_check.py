"""benchmarks/gpu_check.sh is run where device time is scarce (a GPU machine lent for minutes):
its shell plumbing (stage selection, budget, summary, the archive rebuilt after each stage) and
the kernel-coverage program it runs under compute-sanitizer are rehearsed here, on the CPU."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_check(tmp_path, *stages, budget=540, dry=True):
    env = dict(os.environ, GPU_CHECK_DRY="1" if dry else "0", GPU_CHECK_BUDGET=str(budget), OUT=str(tmp_path / "out"),
               GPU_CHECK_WORK=str(tmp_path / "work"), PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *stages], capture_output=True, text=True, env=env, cwd=ROOT)


def test_gpu_check_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_gpu_check_rehearsal_runs_stages_skips_what_does_not_fit_and_packs_after_each(tmp_path):
    # memcheck's dry stand-in is benchmarks/cuda_sanitize.py on the CPU: every kernel
    # configuration's inputs built and checked; bench-losses needs ~120 s, more than is left.
    proc = run_check(tmp_path, "info", "memcheck", "bench-losses", budget=70)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| info | ok |" in summary and "| memcheck | ok |" in summary
    assert "| bench-losses | skipped" in summary
    with tarfile.open(tmp_path / "out" / "gpu_check.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
        assert {"info.log", "memcheck.log", "summary.md"} <= names
        log = tar.extractfile("./memcheck.log").read().decode()
    assert "0 mismatches" in log and "ok   em_cce 1x8x30000 float32" in log


def test_gpu_check_refuses_an_unknown_stage(tmp_path):
    proc = run_check(tmp_path, "memchek")
    assert proc.returncode == 2 and "unknown stage 'memchek'" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the stage passes: gpu_check runs it")
def test_gpu_check_reports_a_failed_stage_and_exits_1(tmp_path):
    """Not a rehearsal: on a GPU-less machine the CUDA tests stage must fail (a GPU run that
    quietly skipped every CUDA test would look green), be recorded, and the script exit 1."""
    proc = run_check(tmp_path, "cuda-tests", dry=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "| cuda-tests | failed (exit 1) |" in (tmp_path / "out" / "summary.md").read_text()
    assert "torch sees no GPU" in (tmp_path / "out" / "cuda-tests.log").read_text()
