"""The command line (`entclust info`, `entclust demo`) and the demo's building blocks."""
import json
import subprocess
import sys

import pytest
import torch

from entclust import __main__ as cli
from entclust import demo


def test_info_runs_and_reports_cpu_kernels(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "cpu_kernels" in out and "ok" in out


def test_demo_writes_results_and_learns(tmp_path):
    summary = demo.main(epochs=3, out=str(tmp_path))
    assert (tmp_path / "demo_digits.png").stat().st_size > 0
    saved = json.loads((tmp_path / "demo_digits.json").read_text())
    assert saved["accuracy"] == summary["accuracy"]
    for result in summary["accuracy"].values():
        assert result["final_acc"] > 0.5  # 10 classes: chance is 0.1
    assert {t["loss"] for t in summary["timing"]} == {"reverse CE", "collision CE"}


def test_corrupt_changes_exactly_the_drawn_labels():
    labels = torch.arange(10).repeat(100)
    noisy = demo.corrupt(labels, 0.4, 10, seed=0)
    changed = (noisy != labels).float().mean().item()
    assert 0.35 < changed < 0.45
    assert noisy.min() >= 0 and noisy.max() <= 9


def test_bad_arguments_exit_with_a_message():
    proc = subprocess.run([sys.executable, "-m", "entclust", "demo", "--noise", "1.5"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--noise must be in [0, 1), got 1.5" in proc.stderr
    with pytest.raises(SystemExit):
        cli.main(["nonsense"])


def test_every_public_name_is_documented():
    import entclust

    undocumented = [name for name in entclust.__all__ if not (getattr(entclust, name).__doc__ or "").strip()]
    assert undocumented == []
