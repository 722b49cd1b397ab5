"""The README's three journeys, as the scripts in examples/, run at a small size (issue 28):
each finishes, prints what it promises, and writes what it is asked to."""
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd=None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stderr, done.stderr  # ordinary use does not warn
    return done.stdout


def test_cluster_embeddings_on_a_stand_in_and_on_a_file(tmp_path):
    out = run("cluster_embeddings.py", "--k", "15", "--n", "1500", "--d", "8", "--scale", "1.5")
    assert "start (k-means++ head): ACC" in out and "entclust: ACC" in out and "0 empty clusters" in out
    x = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    np.save(tmp_path / "emb.npy", x)
    out = run("cluster_embeddings.py", str(tmp_path / "emb.npy"), "--k", "4", "--out", str(tmp_path / "labels.npy"))
    labels = np.load(tmp_path / "labels.npy")
    assert labels.shape == (300,) and set(labels.tolist()) <= set(range(4)) and "labels written" in out


def test_self_labeling_in_your_own_loop():
    out = run("self_labeling_loop.py", "--epochs", "2")
    assert out.count("epoch ") == 2 and "(0 short of their rule)" in out


def test_compare_solvers_on_a_trained_heads_problem_and_on_a_file(tmp_path):
    out = run("compare_solvers.py", "--epochs", "1", "--target-gap", "1e-3", "--solvers", "em_rce", "newton_rce",
              "--plot", str(tmp_path / "solvers.png"))
    assert "| em_rce |" in out and "| newton_rce |" in out and (tmp_path / "solvers.png").stat().st_size > 0
    sigma = np.random.default_rng(1).dirichlet(np.ones(5), size=(2, 40))
    np.save(tmp_path / "sigma.npy", sigma)
    out = run("compare_solvers.py", str(tmp_path / "sigma.npy"), "--problem", "cce", "--solvers", "em_cce", "pgd_cce",
              "--target-gap", "1e-4")
    assert "| em_cce |" in out and "| pgd_cce |" in out
