"""The comparison harness and command line as users compare with them (issue 15 item 9):
GaussianMixture, purity, settings and versions in the JSON, prior and method flags, clean logs."""
import json
import subprocess
import sys

import numpy as np

import entclust
from entclust.cluster import compare


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "entclust", *args], capture_output=True, text=True)


def test_purity_is_many_to_one():
    truth = np.array([0, 0, 0, 1, 1, 1])
    assert entclust.metrics.purity(truth, [0, 1, 2, 3, 3, 4]) == 1.0  # over-clustering keeps purity
    assert entclust.metrics.purity(truth, [0, 0, 0, 0, 0, 0]) == 0.5
    pred = np.array([1, 1, 0, 0, 0, 1])
    assert entclust.metrics.purity(truth, pred) == entclust.clustering_accuracy(truth, pred)


def test_gaussian_mixture_is_in_the_harness_with_settings_and_versions(tmp_path):
    x, y = entclust.data.make_blobs(300, 3, random_state=0)
    assert "gmm" in entclust.cluster.DEFAULT_METHODS and "gmm" in entclust.cluster.available()
    result = compare.compare(x, y, ("kmeans", "gmm", "rce"), seeds=1, params={"rce": {"epochs": 3}})
    assert result["summary"]["gmm"]["acc"]["mean"] > 0.9
    assert {"acc", "nmi", "ari", "purity", "seconds"} <= set(result["summary"]["gmm"])
    assert result["settings"]["rce"]["epochs"] == 3 and result["settings"]["gmm"]["covariance_type"] == "full"
    assert {"entclust", "torch", "scikit-learn", "numpy", "python"} <= set(result["versions"])
    paths = compare.save(result, str(tmp_path), "t")
    assert json.loads(open(paths[1]).read())["settings"]["kmeans"]["n_init"] == 10


def test_prior_and_method_parameters_from_the_command_line(tmp_path):
    out = str(tmp_path / "l.npy")
    proc = run_cli("fit", "blobs", "--k", "4", "--prior", "0.25,0.25,0.25,0.25", "--param", "max_iter=300",
                   "--epochs", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # no progress-bar redraws in a log (stderr is not a terminal)
    proc = run_cli("fit", "blobs", "--k", "4", "--method", "gmm", "--param", "covariance_type=diag", "--out", out)
    assert proc.returncode == 0 and "PURITY" in proc.stdout
    for args, message in [(("--param", "nope=1"), "not a parameter of method 'rce'"),
                          (("--param", "novalue"), "--param must be KEY=VALUE"),
                          (("--prior", "a,b"), "--prior must be comma-separated numbers"),
                          (("--prior", "0.5,0.6,0.1,0.1"), "rows of prior must sum to 1")]:
        proc = run_cli("fit", "blobs", "--k", "4", *args, "--out", out)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = run_cli("compare", "blobs", "--methods", "kmeans,gmm", "--param", "solver=em", "--out", str(tmp_path))
    assert proc.returncode == 2 and "no selected method has it" in proc.stderr


def test_auto_scaling_z_scores_features_in_different_units():
    from sklearn import datasets

    chosen = {name: entclust.data.Scaler().fit(getattr(datasets, f"load_{name}")(return_X_y=True)[0]).mode_
              for name in ("digits", "iris", "wine", "breast_cancer")}
    assert chosen == {"digits": "global", "iris": "global", "wine": "features", "breast_cancer": "features"}
    x, _ = entclust.data.make_anisotropic(500, 2, random_state=0)
    assert entclust.data.Scaler().fit(x).mode_ == "global"  # the geometry of seed 004 Fig. 1 is kept
    x, y = datasets.load_wine(return_X_y=True)  # 13 features in different units
    accs = [entclust.clustering_accuracy(y, entclust.EntropyClustering(3, random_state=s).fit(x).labels_)
            for s in range(3)]
    assert np.mean(accs) > 0.9  # 71.9 % with the former default (one global scale)
