"""Issue 13: selective pseudo-label clustering (seed 002) — alignment, consensus, the estimator,
label-freedom, checkpoints, the plot, the registry and the command line."""
import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

import entclust
from entclust.deep import SelectivePseudoLabelClustering as SPC
from entclust.deep.consensus import align, consensus
from entclust.metrics import clustering_accuracy

FAST = dict(n_members=2, hidden=32, latent_dim=4, pretrain_epochs=3, epochs_per_round=1, max_rounds=3,
            reducer="none", clusterer="kmeans", batch_size=64)


def _blobs(n=300, k=3, seed=0):
    x, t = make_blobs(n, n_features=6, centers=k, cluster_std=1.0, random_state=seed)
    return x, t


def test_align_recovers_a_permutation_and_consensus_takes_the_mode():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 5, 200)
    perm = np.array([3, 0, 4, 1, 2])
    assert np.array_equal(align(perm[ref], ref, 5), ref)
    labellings = np.array([[0, 1, 2, 2], [0, 1, 1, 2], [0, 2, 1, 2]])
    mode, agreed = consensus(labellings, 3)
    assert mode.tolist()[:2] == [0, 1] and mode[3] == 2
    assert agreed.tolist() == [True, False, False, True]


def test_spc_is_label_free():
    """Labels given to fit fill the history only: the clustering is the same without them and
    with shuffled ones."""
    x, t = _blobs()
    a = SPC(3, random_state=0, **FAST).fit(x)
    b = SPC(3, random_state=0, **FAST).fit(x, t)
    c = SPC(3, random_state=0, **FAST).fit(x, np.random.default_rng(1).permutation(t))
    assert np.array_equal(a.labels_, b.labels_) and np.array_equal(a.labels_, c.labels_)
    assert [h["agreed"] for h in a.history_] == [h["agreed"] for h in b.history_]
    assert "acc" in b.history_[0] and "acc" not in a.history_[0]


def test_spc_clusters_blobs_and_records_rounds(tmp_path):
    x, t = _blobs(400, 4, seed=2)
    est = SPC(4, random_state=0, checkpoint=str(tmp_path / "spc.pt"), **FAST).fit(x, t)
    assert clustering_accuracy(t, est.labels_) >= 0.95
    assert est.labels_.shape == (400,) and est.agreed_.dtype == bool
    assert est.history_[0]["round"] == 0 and 0 < est.history_[0]["agreed"] <= 400
    assert est.initial_labels_.shape == (400,)
    saved = torch.load(tmp_path / "spc.pt", weights_only=True)  # data only
    assert saved["round"] >= 0 and "model" in saved and saved["history"]
    est.plot_history(str(tmp_path / "rounds.png"))
    assert (tmp_path / "rounds.png").stat().st_size > 0
    assert est.predict(x[:10]).shape == (10,)


@pytest.mark.parametrize("loss", ["rce", "cce"])
def test_spc_robust_losses_and_images(loss):
    x, t = _blobs(200, 2, seed=3)
    images = np.tile(x[:, None, :, None], (1, 1, 1, 2)).astype(np.float32)  # (N, 1, 6, 2)
    est = SPC(2, random_state=0, loss=loss, **FAST).fit(images)
    assert clustering_accuracy(t, est.labels_) >= 0.9
    assert est.n_features_in_ == 12


def test_spc_parameter_errors():
    x, _ = _blobs(50)
    for kwargs, match in [({"n_members": 0}, "n_members"), ({"clusterer": "x"}, "clusterer"),
                          ({"loss": "x"}, "loss"), ({"reducer": "x"}, "reducer"), ({"lr": 0}, "lr")]:
        with pytest.raises(ValueError, match=match):
            SPC(3, **{**FAST, **kwargs}).fit(x)
    with pytest.raises(ValueError, match="larger than the number of points"):
        SPC(60, **FAST).fit(x)


def test_spc_in_the_registry_and_the_cli(tmp_path, capsys):
    assert "spc" in entclust.cluster.available()
    est = entclust.make_estimator("spc", 3, random_state=0, n_members=2)
    assert isinstance(est, SPC) and est.n_members == 2
    from entclust import cli

    out = tmp_path / "labels.npy"
    args = ["fit", "blobs", "--k", "4", "--method", "spc", "--out", str(out)]
    for key, value in FAST.items():
        args += ["--param", f"{key}={value}"]
    assert cli.main(args) == 0
    assert np.load(out).shape == (1000,)
    assert "ACC" in capsys.readouterr().out


def test_hdbscan_cut_gives_exactly_k_clusters():
    """The tree cut scans distances (the count of clusters is not monotone in the cut) and gives
    noise points to the nearest cluster."""
    from entclust.deep.consensus import hdbscan_cut

    for seed in range(3):
        x, t = make_blobs(600, n_features=2, centers=4, random_state=seed)
        labels = hdbscan_cut(x, 4, 10)
        assert sorted(set(labels.tolist())) == [0, 1, 2, 3]
        assert clustering_accuracy(t, labels) >= 0.9
    x, t = _blobs(300, 3, seed=4)
    est = SPC(3, random_state=0, **{**FAST, "clusterer": "hdbscan"}).fit(x)
    assert clustering_accuracy(t, est.labels_) >= 0.9


def test_spc_conv_members_on_images_of_odd_sizes():
    """Images get convolutional members by default (grouped convolutions, one group per member);
    odd sizes and sizes too small to stride come back at their own shape, and a last batch of one
    point (batch norm needs two) is merged into the one before."""
    rng = np.random.default_rng(0)
    for shape, n in [((1, 7, 9), 65), ((3, 5, 5), 40), ((2, 2, 3), 40)]:
        x = rng.random((n, *shape)).astype(np.float32)
        est = SPC(2, random_state=0, **{**FAST, "max_rounds": 1}).fit(x)
        assert est.architecture_ == "conv" and est.image_shape_ == shape
        recon = est.model_.decoder(est.model_.encoder(est._stack(torch.from_numpy(x[:3]))))
        assert recon.shape == (2, 3, *shape)
        assert est.predict(x).shape == (n,)
    with pytest.raises(ValueError, match="shape fitted"):
        est.predict(x[:, :1])
    with pytest.raises(ValueError, match="architecture='conv' needs images"):
        SPC(2, architecture="conv", **FAST).fit(rng.random((30, 4)))
    with pytest.raises(ValueError, match="architecture"):
        SPC(2, **{**FAST, "architecture": "resnet"}).fit(rng.random((30, 4)))


def test_spc_conv_members_are_independent_and_label_free():
    """The grouped convolutions keep the members apart: member 1's gradient does not reach member
    0's weights. And labels do not change the clustering of images either."""
    from entclust.deep.ensembles import ConvEnsemble

    gen = torch.Generator().manual_seed(0)
    model = ConvEnsemble(3, (1, 8, 8), 4, 8, 3, 2, gen, seed=0)
    x = torch.randn(3, 5, 1, 8, 8)
    z = model.encoder(x)
    model.decoder(z)[1].sum().backward()
    first = model.encoder.convs[0].conv.weight.grad  # (M * width, 1, 3, 3), member j's rows j*width...
    assert first[:4].abs().sum() == 0 and first[4:8].abs().sum() > 0 and first[8:].abs().sum() == 0
    xs, t = _blobs(120, 2, seed=5)
    images = np.tile(xs[:, None, :, None], (1, 1, 1, 4)).astype(np.float32)  # (N, 1, 6, 4)
    a = SPC(2, random_state=0, **FAST).fit(images)
    b = SPC(2, random_state=0, **FAST).fit(images, np.random.default_rng(1).permutation(t))
    assert np.array_equal(a.labels_, b.labels_)
    assert clustering_accuracy(t, a.labels_) >= 0.9


def test_spc_command_on_images_writes_labels_history_and_plot(tmp_path, capsys):
    """``entclust spc``: images from a file (conv members), true labels for the history only."""
    import json

    from entclust import cli

    xs, t = _blobs(150, 3, seed=6)
    np.save(tmp_path / "images.npy", np.tile(xs[:, None, :, None], (1, 1, 1, 3)).astype(np.float32))
    np.save(tmp_path / "truth.npy", t)
    out, hist, plot = tmp_path / "labels.npy", tmp_path / "h.json", tmp_path / "rounds.png"
    args = ["spc", str(tmp_path / "images.npy"), "--k", "3", "--members", "2", "--out", str(out), "--labels",
            str(tmp_path / "truth.npy"), "--history", str(hist), "--plot", str(plot), "-q",
            "--param", "conv_width=4"]
    for key, value in FAST.items():
        if key != "n_members":
            args += ["--param", f"{key}={value}"]
    assert cli.main(args) == 0
    assert clustering_accuracy(t, np.load(out)) >= 0.9
    record = json.loads(hist.read_text())
    assert record["architecture"] == "conv" and "acc" in record["history"][0]
    assert plot.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "M=2 conv members" in printed and "ACC" in printed
    assert cli.main(["spc", str(tmp_path / "images.npy"), "--k", "3", "--out", str(out), "--param", "depth=3"]) != 0
    assert "not a parameter of spc" in capsys.readouterr().err


def test_spc_reducers_spectral_fallback_and_warm_start(monkeypatch):
    """reducer="auto" is UMAP when umap-learn is importable, else scikit-learn's spectral
    embedding (no extra dependency); warm starts of the clusterer (GMM and K-means) work."""
    import entclust.deep.spc as spc

    monkeypatch.setattr(spc, "umap_class", lambda: None)
    x, t = _blobs(300, 3, seed=7)
    est = SPC(3, random_state=0, **{**FAST, "reducer": "auto", "clusterer": "gmm"}).fit(x)
    assert est.reducer_ == "spectral" and clustering_accuracy(t, est.labels_) >= 0.9
    with pytest.raises(ValueError, match="needs umap-learn"):
        SPC(3, **{**FAST, "reducer": "umap"}).fit(x)
    for clusterer in ("kmeans", "gmm"):
        warm = SPC(3, random_state=0, warm_start=True, **{**FAST, "clusterer": clusterer}).fit(x)
        assert clustering_accuracy(t, warm.labels_) >= 0.9 and warm.n_rounds_ >= 1
    e = spc.spectral_embedding(np.random.default_rng(0).normal(size=(40, 3)), 4, 0)
    assert e.shape == (40, 4) and np.isfinite(e).all()
    for kwargs, match in [({"warm_start": 1}, "warm_start"), ({"latent_noise": -1}, "latent_noise"),
                          ({"agreed_reconstruction": float("nan")}, "agreed_reconstruction"),
                          ({"patience": 0}, "patience"), ({"pretrain_epochs": "x"}, "pretrain_epochs")]:
        with pytest.raises(ValueError, match=match):
            SPC(3, **{**FAST, **kwargs}).fit(x)


def test_spectral_step_joins_graph_components_beyond_k():
    """Two close blobs and a far one, k = 2: the 15-neighbour graph has three components, whose
    three null eigenvectors two dimensions cannot hold (the split then groups components
    arbitrarily); the neighbours grow until the graph has two, and the split is {close pair} vs
    {far blob}."""
    from sklearn.cluster import KMeans

    from entclust.deep.consensus import spectral_embedding

    x, t = make_blobs(90, n_features=2, centers=[[0, 0], [5, 0], [100, 0]], cluster_std=0.5, random_state=0)
    for seed in range(3):
        e = spectral_embedding(x, 2, seed)
        assert e.shape == (90, 2) and np.isfinite(e).all()
        split = KMeans(2, n_init=5, random_state=0).fit_predict(e)
        assert clustering_accuracy(np.where(t == 2, 1, 0), split) == 1.0


class _RunsCode:
    """Unpickled by ``weights_only=False``, this would write a file: what a malicious checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_spc_resumes_bit_exactly_from_its_checkpoint(tmp_path):
    """Issue 28, item 5: a run stopped after some rounds and resumed ends where the run in one
    go ends (labels, agreed points, history), and the checkpoint is read as data only."""
    x, t = _blobs(300, 3, seed=4)
    params = {**FAST, "max_rounds": 4, "patience": 10}
    whole = SPC(3, random_state=0, **params).fit(x, t)
    path = tmp_path / "spc.pt"
    SPC(3, random_state=0, checkpoint=str(path), **{**params, "max_rounds": 2}).fit(x, t)  # rounds 0..2, saved 0, 1
    state = torch.load(path, weights_only=True)
    assert state["round"] == 1 and state["version"] == 1
    # the run resumed with the full number of rounds must not see the first run's max_rounds
    state["settings"]["max_rounds"] = 4
    torch.save(state, path)
    resumed = SPC(3, random_state=0, checkpoint=str(path), **params).fit(x, t, resume=True)
    assert np.array_equal(resumed.labels_, whole.labels_) and np.array_equal(resumed.agreed_, whole.agreed_)
    assert resumed.best_round_ == whole.best_round_ and np.array_equal(resumed.initial_labels_, whole.initial_labels_)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(resumed.history_) == drop(whole.history_)


def test_spc_resume_refuses_other_data_settings_and_code(tmp_path):
    from entclust._files import CheckpointError

    x, t = _blobs(120, 3, seed=5)
    path = tmp_path / "spc.pt"
    SPC(3, random_state=0, checkpoint=str(path), **FAST).fit(x)
    with pytest.raises(CheckpointError, match="differing: data"):
        SPC(3, random_state=0, checkpoint=str(path), **FAST).fit(x + 1, resume=True)
    with pytest.raises(CheckpointError, match="differing: lr"):
        SPC(3, random_state=0, checkpoint=str(path), **{**FAST, "lr": 0.01}).fit(x, resume=True)
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        SPC(3, **FAST).fit(x, resume=True)
    victim = tmp_path / "written-by-the-checkpoint"
    torch.save({"version": 1, "round": 0, "model": _RunsCode(str(victim))}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        SPC(3, random_state=0, checkpoint=str(path), **FAST).fit(x, resume=True)
    assert not victim.exists()


def test_spc_cli_resume(tmp_path, capsys):
    from entclust import cli

    x, _ = _blobs(120, 3, seed=6)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    common = ["spc", str(tmp_path / "x.npy"), "--k", "3", "--members", "2", "-q", "--checkpoint", str(tmp_path / "c.pt"),
              "--param", "reducer=none", "--param", "clusterer=kmeans", "--param", "pretrain_epochs=2",
              "--param", "max_rounds=2", "--param", "epochs_per_round=1", "--param", "hidden=16"]
    assert cli.main(common + ["--out", str(tmp_path / "a.npy")]) == 0
    assert cli.main(common + ["--out", str(tmp_path / "b.npy")]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main(common + ["--out", str(tmp_path / "b.npy"), "--resume"]) == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
