"""Failures are said out loud (issue 28, item 6): a fit that ends with empty clusters or whose
objective rose warns at the user's line, and ``entclust fit`` ends with exit status 3 on a
rising objective, as it does on a non-finite loss; ordinary use says nothing."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import entclust
from entclust._warn import say_fit_failures


def overlapping(k=50, n=2000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = 0.8 * rng.normal(size=(k, d))
    truth = rng.integers(0, k, n)
    return (centres[truth] + rng.normal(size=(n, d))).astype(np.float32)


def test_a_random_start_at_large_k_warns_of_empty_clusters_and_a_rising_objective():
    """The issue's case: init='random' with global pseudo-labels at K = 200 emptied 164 clusters
    silently; at K = 50 the loss rises from 3.7 to 4.6 and most clusters empty."""
    x = overlapping()
    with pytest.warns((entclust.EmptyClusterWarning, entclust.DivergenceWarning)) as record:
        est = entclust.EntropyClustering(50, init="random", random_state=0).fit(x)
    assert any(issubclass(w.category, entclust.EmptyClusterWarning)
               and "of 50 clusters are empty after the fit; init='random'" in str(w.message) for w in record)
    assert any(issubclass(w.category, entclust.DivergenceWarning) and "the objective rose during training" in str(w.message)
               for w in record)
    assert all(w.filename == __file__ for w in record)  # the user's line, not the package's
    assert int((est.cluster_sizes_ == 0).sum()) > 0


def test_the_defaults_on_the_same_data_say_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = entclust.EntropyClustering(50, random_state=0).fit(overlapping())
    assert int((est.cluster_sizes_ == 0).sum()) == 0


def test_fewer_distinct_points_than_clusters_is_the_cause_the_warning_gives():
    """10 distinct points repeated, K = 50: identical points get the same label, so 40 clusters
    must stay empty; the warning says so, not that another start or a lower lr would fill them."""
    from entclust.cluster.scale import Shard, distinct_rows

    x = np.repeat(np.random.default_rng(0).normal(size=(10, 8)), 20, axis=0).astype(np.float32)
    with pytest.warns(entclust.EmptyClusterWarning) as record:
        est = entclust.EntropyClustering(50, random_state=0).fit(x)
    message = str(record[0].message)
    assert "40 of 50 clusters are empty" in message and "only 10 distinct points" in message and "lower lr" not in message
    assert len(np.unique(est.labels_)) == 10
    assert distinct_rows(torch.from_numpy(x), Shard(200, None)) == 10
    nearly = torch.from_numpy(x).clone()
    nearly[5, 3] = torch.nextafter(nearly[5, 3], torch.tensor(np.inf))  # one unit in the last place
    assert distinct_rows(nearly, Shard(200, None)) == 11


def test_mi_adm_is_not_a_diverging_fit():
    """MI-ADM's recorded loss (CE to its current labels) rises as its predictions flatten: the
    baseline's collapse, not divergence."""
    from sklearn.datasets import load_iris

    with warnings.catch_warnings():
        warnings.simplefilter("error", entclust.DivergenceWarning)
        entclust.make_estimator("mi-adm", 3, random_state=0, n_init=1).fit(load_iris().data)


def test_fit_command_exits_3_on_a_rising_objective(tmp_path):
    np.save(tmp_path / "x.npy", overlapping())
    done = subprocess.run([sys.executable, "-m", "entclust", "fit", str(tmp_path / "x.npy"), "--k", "50", "--init", "random",
                           "-q", "--out", str(tmp_path / "labels.npy")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    warning, error = done.stderr.strip().splitlines()  # each one line, no traceback
    assert warning.startswith("entclust fit: warning: EntropyClustering('rce'): ") and "clusters are empty" in warning
    assert error.startswith("entclust fit: error: ") and "the objective rose during training" in error and "lower lr" in error
    assert not (tmp_path / "labels.npy").exists()


def test_say_fit_failures_thresholds():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        say_fit_failures("X", np.array([3, 1]), [1.0, 1.09], "", "")  # within 10 % of the first epoch
        say_fit_failures("X", np.array([3, 1]), [1.0], "", "")  # one epoch: no trend
    with pytest.warns(entclust.DivergenceWarning, match="from 1 in epoch 1 to 1.2 in epoch 2"):
        say_fit_failures("X", np.array([3, 1]), [1.0, 1.2], "", "")
    with pytest.warns(entclust.EmptyClusterWarning, match="X: 1 of 3 clusters are empty after the fit; hint"):
        say_fit_failures("X", np.array([3, 0, 1]), [], "hint", "")


def test_the_warning_points_at_the_users_line_through_scikit_learns_wrappers():
    x = overlapping()
    with pytest.warns((entclust.EmptyClusterWarning, entclust.DivergenceWarning)) as record:
        entclust.EntropyClustering(50, init="random", random_state=0).fit_predict(x)  # ClusterMixin.fit_predict
    assert {w.filename for w in record} == {__file__}
