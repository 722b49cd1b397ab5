"""The command line (`entclust info`, `entclust demo`) and the demo's building blocks."""
import math
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from entclust import cli

from .helpers import load_script, run_script, script_main

demo = load_script("examples/losses_demo.py")


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
    proc = run_script("examples/losses_demo.py", "--noise", "1.5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "losses_demo.py: error: --noise must be in [0, 1), got 1.5"
    with pytest.raises(SystemExit):
        cli.main(["nonsense"])


def test_every_public_name_is_documented():
    import entclust

    undocumented = [name for name in entclust.__all__ if not (getattr(entclust, name).__doc__ or "").strip()]
    assert undocumented == []


# ---- fit / compare / demo / plot-toy --------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "entclust", *args], capture_output=True, text=True)


def test_fit_writes_labels_and_scores_them(tmp_path, capsys):
    import numpy as np

    from entclust import data

    x, y = data.make_blobs(200, 3, random_state=0)
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "y.csv", y, fmt="%d")
    out = tmp_path / "labels.npy"
    assert cli.main(["fit", str(tmp_path / "x.npy"), "--k", "3", "--labels", str(tmp_path / "y.csv"),
                     "--out", str(out), "--epochs", "20", "-q"]) == 0
    labels = np.load(out)
    assert labels.shape == (200,) and set(labels.tolist()) <= {0, 1, 2}
    printed = capsys.readouterr().out
    assert "ACC" in printed and "NMI" in printed and "ARI" in printed
    assert cli.main(["fit", "blobs", "--k", "4", "--method", "kmeans", "--out", str(tmp_path / "km.csv")]) == 0
    assert len((tmp_path / "km.csv").read_text().split()) == 1000


@pytest.mark.parametrize("make,args,message", [
    ("nan", ["--k", "2"], "must be finite"),
    ("flat", ["--k", "2"], "must be a 2-D array"),
    ("ok", ["--k", "50"], "--k must be between 1 and the number of points (10), got 50"),
    ("ok", ["--k", "2", "--labels", "short"], "has 3 entries but the features have 10 rows"),
    ("ok", ["--k", "2", "--method", "spectral"], "unknown method(s) spectral"),
    ("missing", ["--k", "2"], "not found"),
    ("junk", ["--k", "2"], "cannot read features file"),
])
def test_fit_errors_are_one_line_and_write_nothing(tmp_path, make, args, message):
    import numpy as np

    files = {"nan": np.array([[0.0, np.nan]] * 10), "flat": np.arange(10.0), "ok": np.random.rand(10, 2)}
    path = tmp_path / f"{make}.npy"
    if make in files:
        np.save(path, files[make])
    elif make == "junk":
        path.write_text("garbage")
    np.save(tmp_path / "short.npy", np.zeros(3, int))
    args = [a if a != "short" else str(tmp_path / "short.npy") for a in args]
    out = tmp_path / "labels.npy"
    proc = run_cli("fit", str(path), *args, "--out", str(out))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_fit_rejects_an_unknown_output_format(tmp_path):
    proc = run_cli("fit", "blobs", "--k", "2", "--out", str(tmp_path / "labels.parquet"))
    assert proc.returncode == 2 and "--out must end in .npy, .csv or .txt" in proc.stderr


def test_compare_writes_table_json_and_chart(tmp_path):
    assert cli.main(["compare", "blobs", "--methods", "kmeans,rce,mi-gd", "--seeds", "2", "--epochs", "5",
                     "--out", str(tmp_path), "-q"]) == 0
    saved = json.loads((tmp_path / "compare_blobs.json").read_text())
    assert set(saved["summary"]) == {"kmeans", "rce", "mi-gd"}
    assert len(saved["runs"]) == 6 and all(0 <= r["acc"] <= 1 for r in saved["runs"])
    table = (tmp_path / "compare_blobs.md").read_text()
    assert "| kmeans |" in table and "ACC %" in table
    assert (tmp_path / "compare_blobs.png").stat().st_size > 0


def test_compare_needs_labels(tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.rand(20, 3))
    proc = run_cli("compare", str(tmp_path / "x.npy"), "--out", str(tmp_path / "res"))
    assert proc.returncode == 2 and "no labels to evaluate against" in proc.stderr
    assert not (tmp_path / "res").exists()


def test_plot_toy_writes_the_figures(tmp_path):
    toy = load_script("examples/plot_toy.py")
    scores = toy.anisotropic_figure(str(tmp_path / "a.png"), n_init=2)
    assert (tmp_path / "a.png").stat().st_size > 0
    assert scores["kmeans K=2"] < 0.7
    norms = toy.margin_figure(str(tmp_path / "m.png"), gammas=(1e-4, 1e-1))
    assert norms[1e-4] > norms[1e-1]  # larger gamma, smaller ||v||, wider margin


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_bench_cuda_without_gpu_is_a_clear_error(capsys, tmp_path):
    assert cli.main(["bench", "solvers", "--device", "cuda", "--quick", "--out", str(tmp_path / "o")]) == 2
    assert "--device cuda needs a GPU" in capsys.readouterr().err
    assert script_main("benchmarks/bench_kernels.py", "--device", "cuda", "--quick", "--out", str(tmp_path / "o")) == 2
    assert "--device cuda needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_bench_large_k_cuda_without_gpu_is_a_clear_error(capsys, tmp_path):
    assert script_main("benchmarks/bench_large_k.py", "--device", "cuda", "--quick", "--out", str(tmp_path)) == 2
    assert "--device cuda needs a GPU" in capsys.readouterr().err


def test_large_k_fit_script(capsys):
    """The docs' command for one verbose fit beyond the benchmark's sizes, smallest size."""
    assert script_main("benchmarks/large_k_fit.py", "--n", "3000", "--k", "300", "--d", "8") == 0
    out, err = capsys.readouterr()
    assert "'n': 3000, 'k': 300," in out and "'empty': 0," in out
    assert "EntropyClustering: self-labeled centroids (K=300): k-means++ seeds from 3000 points" in err


def test_bench_large_k_quick(tmp_path, capsys):
    """Issue 11's benchmark, smallest size: entclust and MiniBatchKMeans side by side."""
    assert script_main("benchmarks/bench_large_k.py", "--quick", "--out", str(tmp_path)) == 0
    saved = json.loads((tmp_path / "bench_large_k.json").read_text())
    rows = {r["method"]: r for r in saved["rows"]}
    assert {"entclust", "entclust-start", "kmeans", "minibatch-kmeans", "torch-kmeans"} <= set(rows)
    assert not any("error" in r for r in rows.values())
    # faiss's recipe in PyTorch (random points, 20 Lloyd steps) is a K-means: near Lloyd's from k-means++
    assert rows["torch-kmeans"]["acc"] >= rows["kmeans"]["acc"] - 0.1
    # overlapping clusters: the defaults beat their own start and Lloyd's K-means
    assert rows["entclust"]["pseudo_labels"] == "global" and rows["entclust"]["init"] == "balanced"
    assert rows["entclust"]["acc"] >= max(rows["kmeans"]["acc"], rows["entclust-start"]["acc"] + 0.2)
    assert rows["entclust"]["largest_over_mean"] <= rows["kmeans"]["largest_over_mean"]
    assert "| 5000 | 16 | 50 | entclust |" in capsys.readouterr().out


def test_bench_large_k_on_a_users_file(tmp_path, capsys):
    """``--data FILE --k ...``: the same rows on real data of the user's; the mean squared distance to
    the cluster means is K-means's objective (scikit-learn's inertia over N)."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "digits.npz", X=x.astype(np.float32), y=y)
    assert script_main("benchmarks/bench_large_k.py", "--data", str(tmp_path / "digits.npz"), "--k", "20", "40",
                       "--out", str(tmp_path)) == 0
    saved = json.loads((tmp_path / "bench_large_k.json").read_text())
    assert saved["preset"] == "digits.npz" and {r["k"] for r in saved["rows"]} == {20, 40}
    assert not any("error" in r for r in saved["rows"])
    kmeans = next(r for r in saved["rows"] if r["method"] == "kmeans" and r["k"] == 20)
    inertia = KMeans(20, n_init=1, random_state=0).fit(x.astype(np.float32)).inertia_
    assert kmeans["msd"] == pytest.approx(inertia / len(x), rel=1e-3)
    assert "| digits.npz | 1797 | 64 | 40 | entclust |" in capsys.readouterr().out
    assert script_main("benchmarks/bench_large_k.py", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)) == 2


def test_bench_large_k_gpu_rows_run_the_baselines_on_the_gpu_and_minibatch_kmeans_on_the_cpu():
    """Issue 26's rows: entclust, its start and torch-kmeans (faiss's recipe) on the device; faiss
    only where it sees a GPU; MiniBatchKMeans on the CPU as the floor unless left out."""
    bench = load_script("benchmarks/bench_large_k.py")
    rows = bench._methods("cuda", 10**6, 10**4)
    assert rows[:3] == [("entclust", "cuda"), ("entclust-start", "cuda"), ("torch-kmeans", "cuda")]
    assert rows[-1] == ("minibatch-kmeans", "cpu")
    assert (("faiss-kmeans", "cuda") in rows) == bench._faiss("cuda")
    assert ("minibatch-kmeans", "cpu") not in bench._methods("cuda", 10**6, 10**4, cpu_floor=False)
    assert bench.PRESETS["gpu"] == [("overlap", 10**6, 64, 10**4, 1.5)]


def test_bench_kernels_quick_runs_every_section(tmp_path):
    assert script_main("benchmarks/bench_kernels.py", "--quick", "--out", str(tmp_path / "new")) == 0
    saved = json.loads((tmp_path / "new" / "bench_kernels.json").read_text())
    assert {r["solver"] for r in saved["per_iteration"]} == {"Sinkhorn-Knopp (float64)", "EM reverse CE",
                                                           "EM collision CE", "PGD collision CE"}
    assert saved["batch"]["max_abs_diff"] < 1e-4


def test_gpu_section_of_the_solver_benchmark_runs_its_code_on_the_cpu(capsys):
    """`benchmarks/bench_kernels.py --device cuda` runs on a GPU only, and GPU time is scarce: this runs the
    same code (fused, eager and torch.compile rows, copy bandwidth) on the CPU at its quick sizes
    so a bug in it cannot first show on the GPU machine."""
    bench = load_script("benchmarks/bench_kernels.py")
    batch_rows, bw_rows, copy = bench.gpu_section(True, "cpu")
    assert copy > 0 and len(batch_rows) == 2 and len(bw_rows) == 2
    rce, cce = batch_rows
    assert rce["compiled_iterations"] is not None and rce["compiled_s"] > 0 and math.isnan(cce["compiled_s"])
    assert all(r["max_abs_diff"] < 1e-4 for r in batch_rows)
    assert bw_rows[0]["compiled_ms"] > 0 and all(r["fused_tb_s"] > 0 and r["fraction_of_copy"] > 0 for r in bw_rows)
    bench.print_gpu_section(batch_rows, bw_rows, copy)
    out = capsys.readouterr().out
    assert "| EM reverse CE | 2000 × 100 |" in out and "of copy bandwidth" in out


def test_the_moved_commands_run_their_scripts_with_a_deprecation_notice():
    """bench kernels, bench large-k, noisy-labels, plot-toy and losses-demo left the installed
    package for benchmarks/ and examples/; their old commands still run the scripts here."""
    assert set(cli.MOVED) == {"bench kernels", "bench large-k", "noisy-labels", "plot-toy", "losses-demo"}
    proc = run_cli("plot-toy", "--n-init", "0")
    assert proc.returncode == 2
    notice, error = proc.stderr.strip().splitlines()
    assert "'entclust plot-toy' is deprecated" in notice and "python examples/plot_toy.py" in notice
    assert error == "plot_toy.py: error: --n-init must be >= 1, got 0"
    proc = run_cli("bench", "kernels", "--help")
    assert proc.returncode == 0 and "bench_kernels.py" in proc.stdout
    proc = run_cli("bench", "--quick", "large-k")  # not the solver benchmark in its place
    assert proc.returncode == 2 and "moved to benchmarks/bench_large_k.py" in proc.stderr


def test_every_option_of_every_command_has_help_and_every_method_is_listed():
    """Issue 28: --seed had no help, fit --help listed 6 of the 9 methods."""
    import argparse

    from entclust.cluster import available

    parser = cli.build_parser()
    assert set(cli.METHODS) == set(available())
    missing = []
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    fit_help = commands["fit"].format_help()
    assert all(method in fit_help for method in available())


def test_version_threads_save_model_and_predict(tmp_path, capsys):
    import entclust

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"entclust {entclust.__version__}"
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    x[:100] += 4
    np.save(tmp_path / "x.npy", x)
    model, out = tmp_path / "model.pt", tmp_path / "labels.npy"
    assert cli.main(["fit", str(tmp_path / "x.npy"), "--k", "2", "--threads", "1", "-q", "--out", str(out),
                     "--save-model", str(model)]) == 0
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    torch.load(model, weights_only=True)  # data only
    assert cli.main(["predict", str(model), str(tmp_path / "x.npy"), "--out", str(tmp_path / "new.npy"),
                     "--proba", str(tmp_path / "proba.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "new.npy"), np.load(out))
    assert np.load(tmp_path / "proba.npy").shape == (200, 2)
    capsys.readouterr()
    assert cli.main(["predict", str(model), str(tmp_path / "x.npy")[:-4] + "_no.npy", "--out", str(tmp_path / "b.npy")]) == 2
    np.save(tmp_path / "wide.npy", np.zeros((5, 7), np.float32))
    assert cli.main(["predict", str(model), str(tmp_path / "wide.npy"), "--out", str(tmp_path / "b.npy")]) == 2
    assert "7 features a point, the model was fitted on 4" in capsys.readouterr().err
    assert cli.main(["fit", str(tmp_path / "x.npy"), "--k", "2", "--method", "kmeans", "--out", str(out),
                     "--save-model", str(model)]) == 2
    assert cli.main(["fit", str(tmp_path / "x.npy"), "--k", "2", "--threads", "0", "--out", str(out)]) == 2
