"""Selective pseudo-label clustering (SPC, Mahon & Lukasiewicz 2021; docs/maths.md "Selective pseudo-label clustering").

M autoencoders (one batched model: every layer holds the M members' weights; MLP layers run as
one batched matrix product, the convolutional members of images as grouped convolutions with one
group per member) are pre-trained on L1 reconstruction. Then, in rounds: each member's latent
space is clustered into K clusters (after a manifold step: UMAP, the paper's, or scikit-learn's
spectral embedding when umap-learn is not installed), and so is the concatenation of all
latent spaces (the paper's extra element); every labelling is aligned to the concatenation's by
the Hungarian algorithm; a point is *agreed* when all labellings give it the same cluster; each
member is trained on its pseudo-classifier's cross-entropy to the consensus label on agreed points
and on reconstruction on the others (and, by default, on the agreed points too:
``agreed_reconstruction``). Rounds stop when the number of agreed points has not reached a new
high for ``patience`` rounds; the result is the consensus (the most common aligned label) of the
round with the most agreed points.

Label-free: labels passed to ``fit`` are used for the per-round history (ACC) only; alignment is
to the concatenated latent space's clustering and stopping is on the agreement count (the
authors' code aligns to, and stops on, the ground truth; this does not). Tested: the result does
not change when labels are given or shuffled.

Where this departs from the paper's text (measurements in the README): pre-training runs at least
1500 steps (the paper's 10 epochs are 11 000 steps on MNIST, 290 on digits); agreed points keep
their reconstruction loss (the authors' code gets the same effect from 8 epochs of plain
reconstruction after every round; on digits it measured within the spread of the paper's text);
latent noise is an option (``latent_noise``), off by default, as it lowered accuracy on digits;
the manifold step falls back to a spectral embedding so that the core install needs no extra
package; the stopping rule has a patience (the authors' code: 7), because one member's
clustering falling into another local optimum moves the agreement count by hundreds of points
between rounds.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._files import CheckpointError, check_settings, data_fingerprint, read_checkpoint, write_files
from .._loop import EpochLoop, Progress
from .._params import Bool, Int, OneOf, Real, check_params
from ..data import SCALINGS, Scaler, validate_features
from .consensus import align, consensus, hdbscan_cut, spectral_embedding, umap_class
from .ensembles import ConvEnsemble, MLPEnsemble

CLUSTERERS = ("gmm", "hdbscan", "kmeans")
CHECKPOINT_VERSION = 1  # resumable: model, optimiser, generator, round, history, best consensus, settings, data
LOSSES = ("ce", "rce", "cce")
ARCHITECTURES = ("auto", "mlp", "conv")
REDUCERS = ("auto", "umap", "spectral", "none")
# The paper's 10 pre-training epochs are 11 000 steps on MNIST's 70 000 points but 290 on the 1797
# digits, where the autoencoders are then far from trained (A3 77.8 % with 10 epochs, 82.9 % with
# 50 = 1450 steps; README): pretrain_epochs="auto" runs at least this many steps.
PRETRAIN_STEPS = 1500
# Label smoothing of the consensus targets for the reverse / collision CE pseudo-classifier:
# reverse CE needs y_k > 0 wherever sigma_k > 0 (ln 0), and with one-hot targets collision CE
# is forward CE.
SMOOTHING = 0.1


class SelectivePseudoLabelClustering(ClusterMixin, BaseEstimator):
    """Selective pseudo-label clustering (Mahon & Lukasiewicz 2021) of vectors ``(N, D)`` or images ``(N, C, H, W)``:
    see the module docstring.

    Parameters
    ----------
    n_clusters : K.
    n_members : M, the ensemble size (default 4: on digits, 3 seeds, see the README's table).
    latent_dim, hidden : latent size of each member, and the hidden width of its MLP autoencoder
        and of its pseudo-classifier (an MLP with one hidden layer).
    architecture : "auto" (default: "conv" for images, "mlp" for vectors), "mlp" (images are
        flattened) or "conv": an encoder of a 3x3 convolution and two 4x4 stride-2 convolutions
        (width, 2 width, 4 width channels; batch norm, leaky ReLU 0.2; fewer strides when the
        image is smaller than 4 pixels a side) and a linear map to the latent; the decoder mirrors
        it with transposed convolutions (linear output: the inputs are standardised).
    conv_width : the first convolution's channels (32).
    clusterer : "gmm" (scikit-learn GaussianMixture, full covariance; the paper's SPC-GMM),
        "hdbscan" (the hdbscan package if installed, else scikit-learn's HDBSCAN; the tree cut at
        the distance that gives K clusters) or "kmeans".
    reducer : the manifold step before the clusterer: "umap" (umap-learn,
        ``UMAP(n_components=2, min_dist=0, n_neighbors=30)``; the paper's setting, needs
        ``pip install entclust[spc]``), "spectral" (scikit-learn's Laplacian eigenmap of the
        15-nearest-neighbour graph into K dimensions, rows normalised), "none" (the latent
        itself), or "auto" (default: "umap" when umap-learn is installed, else "spectral").
    loss : pseudo-classifier loss on agreed points: "ce" (the seed), or this package's reverse
        ("rce") or collision ("cce") cross-entropy to the consensus smoothed by 0.1.
    pretrain_epochs, epochs_per_round, max_rounds, batch_size, lr : the paper's schedule
        (10, 8, 30, 64, Adam 1e-3), except that ``pretrain_epochs="auto"`` (default) is 10 epochs
        or enough epochs for 1500 steps, whichever is more (52 epochs on the 1797 digits).
    patience : stop after this many rounds without a new high of agreed points (5).
    warm_start : also start each round's clusterings from the last consensus and keep the better
        objective (GMM likelihood, K-means inertia); off by default (no gain measured on digits).
    agreed_reconstruction : weight of the reconstruction loss on agreed points, beside their
        pseudo-classifier loss (1.0; 0 is the paper's text: reconstruction on the others only).
    latent_noise : std of Gaussian noise added to the latent in training, in units of each
        latent coordinate's batch std (0: off; the seed injects noise).
    standardize : the harness's feature scaling (:class:`entclust.data.Scaler`).
    checkpoint : a path: the ensemble, optimiser, random generator, round, history and best
        consensus are saved there after every round (atomically); ``fit(X, resume=True)``
        continues from it bit-exactly.
    device, random_state, verbose (tqdm over rounds).

    Attributes: ``labels_``, ``agreed_`` (mask of the final agreed points), ``history_`` (one dict
    per round: agreed points, seconds, and ACC / agreed ACC when labels were given to ``fit``),
    ``initial_labels_`` (member 0's clustering after pre-training: the ablation without an
    ensemble), ``n_rounds_``, ``best_round_``, ``architecture_``, ``pretrain_epochs_``.
    """

    PARAMETERS = {**{name: Int(1) for name in ("n_clusters", "n_members", "latent_dim", "hidden", "conv_width",
                                                "batch_size", "patience")},
                  "epochs_per_round": Int(0), "max_rounds": Int(0), "pretrain_epochs": Int(0, "auto"),
                  "lr": Real(0, strict=True), "warm_start": Bool(), "latent_noise": Real(0),
                  "agreed_reconstruction": Real(0), "clusterer": OneOf(*CLUSTERERS), "reducer": OneOf(*REDUCERS),
                  "architecture": OneOf(*ARCHITECTURES), "loss": OneOf(*LOSSES), "standardize": OneOf(*SCALINGS)}

    def __init__(self, n_clusters: int = 10, *, n_members: int = 4, latent_dim: int = 10, hidden: int = 256,
                 architecture: str = "auto", conv_width: int = 32,
                 clusterer: str = "gmm", reducer: str = "auto", loss: str = "ce", pretrain_epochs="auto",
                 epochs_per_round: int = 8, max_rounds: int = 30, batch_size: int = 64, lr: float = 1e-3,
                 patience: int = 5, warm_start: bool = False, latent_noise: float = 0.0, agreed_reconstruction: float = 1.0,
                 standardize: str = "auto", checkpoint=None, device: str = "cpu", random_state=None,
                 verbose: bool = False):
        self.n_clusters = n_clusters
        self.n_members = n_members
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.architecture = architecture
        self.conv_width = conv_width
        self.clusterer = clusterer
        self.reducer = reducer
        self.loss = loss
        self.pretrain_epochs = pretrain_epochs
        self.epochs_per_round = epochs_per_round
        self.max_rounds = max_rounds
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.warm_start = warm_start
        self.latent_noise = latent_noise
        self.agreed_reconstruction = agreed_reconstruction
        self.standardize = standardize
        self.checkpoint = checkpoint
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ---- checks -------------------------------------------------------------------------
    def _check(self, n: int) -> None:
        check_params(self.get_params(deep=False), self.PARAMETERS)
        if self.n_clusters > n:
            raise ValueError(f"n_clusters={self.n_clusters} is larger than the number of points N={n}")

    def _architecture(self) -> str:
        if self.architecture == "conv" and self.image_shape_ is None:
            raise ValueError("architecture='conv' needs images (N, C, H, W); got vectors of shape "
                             f"(N, {self.n_features_in_})")
        if self.architecture != "auto":
            return self.architecture
        return "conv" if self.image_shape_ is not None else "mlp"

    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        """The same points for every member: ``(B, ...) -> (M, B, ...)`` (a view)."""
        return x.unsqueeze(0).expand(self.n_members, *x.shape)

    def _reducer(self) -> str:
        if self.reducer == "umap" and umap_class() is None:
            raise ValueError("reducer='umap' needs umap-learn: pip install 'entclust[spc]'")
        if self.reducer != "auto":
            return self.reducer
        return "umap" if umap_class() is not None else "spectral"

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, X, y=None, *, resume: bool = False):
        """Cluster ``X``; ``y`` (optional true labels) only fills the history's accuracies.
        ``resume=True`` continues from ``checkpoint`` (written after every round) bit-exactly: the
        file is read as data only (``torch.load(weights_only=True)``: a file that would run code
        is refused) and must come from the same settings and the same data."""
        x = np.asarray(X) if not hasattr(X, "detach") else X.detach().cpu().numpy()
        self.image_shape_ = tuple(x.shape[1:]) if x.ndim == 4 else None
        if x.ndim == 4:  # images (N, C, H, W): validated and scaled flat, reshaped for conv members
            x = x.reshape(x.shape[0], -1)
        x = validate_features(self, x, ensure_min_samples=1)
        self._check(x.shape[0])
        self.architecture_ = self._architecture()
        truth = None if y is None else np.asarray(y)
        self.reducer_ = self._reducer()
        rng = check_random_state(self.random_state)
        generator = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        self._seed = int(rng.randint(0, 2**31 - 1))
        device = torch.device(self.device)
        self.scaler_ = Scaler(self.standardize).fit(x)
        data = torch.from_numpy(self.scaler_.transform(x, np.float32)).to(device)
        n, d = data.shape
        k, m = self.n_clusters, self.n_members
        if self.architecture_ == "conv":
            data = data.view(n, *self.image_shape_)
            model = ConvEnsemble(m, self.image_shape_, self.conv_width, self.hidden, self.latent_dim, k, generator,
                                  int(rng.randint(0, 2**31 - 1)))
        else:
            model = MLPEnsemble(m, d, self.hidden, self.latent_dim, k, generator)
        model = model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        targets = torch.zeros(n, dtype=torch.int64, device=device)
        mask = torch.zeros(n, dtype=torch.bool, device=device)
        self.pretrain_epochs_ = self.pretrain_epochs
        if self.pretrain_epochs == "auto":  # the paper's 10 epochs, and at least PRETRAIN_STEPS steps
            self.pretrain_epochs_ = max(10, math.ceil(PRETRAIN_STEPS / math.ceil(n / self.batch_size)))
        self._fingerprint = data_fingerprint(x)  # the data as given
        history, best, stale, first = [], None, 0, 0
        self._previous = None
        if resume:
            if self.checkpoint is None:
                raise ValueError("resume=True needs checkpoint= (the file to continue from)")
            history, best, stale, first = self._load(model, optimizer, generator)
        else:
            self._epochs(model, optimizer, data, targets, mask, self.pretrain_epochs_, generator,
                         desc="SPC pre-training")
        # round 0 clusters the pre-trained ensemble
        progress = Progress("SPC", self.max_rounds + 1, verbose=self.verbose, unit="round", initial=first)
        for r in range(first, self.max_rounds + 1):
            start = time.perf_counter()
            labels, agreed = self._agreement(model, data, r)
            if r == 0:
                self.initial_labels_ = self._member0_
            record = {"round": r, "agreed": int(agreed.sum()), "agreed_fraction": float(agreed.mean())}
            if truth is not None:
                from ..metrics import clustering_accuracy

                record["acc"] = float(clustering_accuracy(truth, labels))
                record["agreed_acc"] = float(clustering_accuracy(truth[agreed], labels[agreed])) if agreed.any() \
                    else float("nan")
            improved = best is None or agreed.sum() > best[1].sum()
            if improved:
                best = (labels, agreed, r)
                stale = 0
            else:
                stale += 1
            progress.update(time.perf_counter() - start, agreed=record["agreed"],
                            **({"acc": record["acc"]} if "acc" in record else {}))
            if stale >= self.patience or r == self.max_rounds:
                record["seconds"] = time.perf_counter() - start
                history.append(record)
                break
            targets = torch.from_numpy(labels).to(device)
            mask = torch.from_numpy(agreed).to(device)
            self._epochs(model, optimizer, data, targets, mask, self.epochs_per_round, generator)
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            if self.checkpoint is not None:
                self._save(model, optimizer, generator, history, best, stale, r)
        progress.close()
        self.labels_, self.agreed_, self.best_round_ = best
        self.history_ = history
        self.n_rounds_ = len(history) - 1
        self.model_ = model.cpu().eval()
        return self

    def _epochs(self, model, optimizer, data, targets, mask, epochs, generator, desc=None):
        """Training (Mahon & Lukasiewicz 2021's L): the pseudo-classifier loss to the consensus on agreed points
        (``mask``), L1 reconstruction on the others; each member its own shuffle of the points.
        Returns the history, one entry per epoch (each member's mean loss in ``member_losses``);
        ``desc`` names the stage in the progress report (none without it)."""
        n = data.shape[0]
        m = self.n_members
        model.train()
        smooth = None
        if self.loss != "ce":
            smooth = torch.full((self.n_clusters,), SMOOTHING / self.n_clusters, device=data.device)

        def split(generator):
            order = torch.stack([torch.randperm(n, generator=generator) for _ in range(m)]).to(data.device)
            stops = list(range(self.batch_size, n, self.batch_size)) + [n]
            if len(stops) > 1 and stops[-1] - stops[-2] == 1:
                del stops[-2]  # no batch of one point (batch norm needs two)
            return (order[:, start:stop] for start, stop in zip([0] + stops[:-1], stops))  # (M, B) each

        def step(idx):
            x = data[idx]
            z = model.encoder(x)
            if self.latent_noise > 0:
                scale = z.detach().std(1, keepdim=True)
                z = z + self.latent_noise * scale * torch.randn(z.shape, generator=generator).to(z.device)
            loss = (model.decoder(z) - x).abs().flatten(2).mean(-1)  # (M, B)
            chosen = mask[idx]
            if bool(chosen.any()):
                ce = self._classifier_loss(model.classifier(z), targets[idx], smooth)
                loss = torch.where(chosen, ce + self.agreed_reconstruction * loss, loss)
            return loss.mean(1)  # members are independent: the sum trains each on its mean

        def end_epoch(epoch, totals, seconds):
            entry = {"epoch": epoch + 1, "loss": float(totals.mean()), "member_losses": totals.tolist(), "seconds": seconds}
            return entry, {"loss": entry["loss"]}

        loop = EpochLoop(desc or "SPC", optimizer, n, split=split, hint=f"lower lr (now {self.lr:g})",
                         verbose=self.verbose and desc is not None)
        return loop.run(step, epochs, generator, end_epoch=end_epoch)

    def _classifier_loss(self, logits, target, smooth):
        if self.loss == "ce":
            return nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)
        from ..losses import collision_cross_entropy, reverse_cross_entropy

        y = nn.functional.one_hot(target, self.n_clusters).to(logits.dtype) * (1 - SMOOTHING) + smooth
        fn = reverse_cross_entropy if self.loss == "rce" else collision_cross_entropy
        return fn(logits.flatten(0, 1), y.flatten(0, 1), reduction="none", validate=False).view(target.shape)

    @torch.no_grad()
    def _latents(self, model, data) -> torch.Tensor:
        model.eval()
        z = torch.cat([model.encoder(self._stack(data[i:i + 4096])) for i in range(0, len(data), 4096)], 1)
        return z.cpu()  # (M, N, L)

    def _cluster(self, z: np.ndarray, seed: int, previous=None) -> np.ndarray:
        z = (z - z.mean(0)) / max(float(z.std()), 1e-12)
        k = self.n_clusters
        if self.reducer_ == "umap":
            z = umap_class()(n_components=2, min_dist=0.0, n_neighbors=30, random_state=seed).fit_transform(z)
        elif self.reducer_ == "spectral" and 1 < k < len(z) - 1:
            z = spectral_embedding(z, k, seed)
        if self.clusterer == "hdbscan" and k > 1:
            labels = hdbscan_cut(z, k, min_samples=10)
            if labels is not None:
                return labels
        starts = [None]
        if previous is not None and self.warm_start:
            # the last round's consensus as a second start; the better objective wins (label-free)
            starts.append(np.stack([z[previous == c].mean(0) if (previous == c).any() else z[c] for c in range(k)]))
        if self.clusterer == "kmeans":
            from sklearn.cluster import KMeans

            fits = [KMeans(k, n_init=3, random_state=seed).fit(z) if m is None else
                    KMeans(k, init=m, n_init=1, random_state=seed).fit(z) for m in starts]
            return min(fits, key=lambda f: f.inertia_).labels_.astype(np.int64)
        from sklearn.mixture import GaussianMixture

        fits = [GaussianMixture(k, random_state=seed, reg_covar=1e-4, means_init=m).fit(z) for m in starts]
        return max(fits, key=lambda f: f.score(z)).predict(z)

    def _agreement(self, model, data, r: int):
        """Cluster every member's latent space and their concatenation, align to the latter,
        and return ``(consensus labels, agreed mask)``."""
        z = self._latents(model, data)
        seed = (self._seed + 7919 * r) % (2**31 - 1)
        reference = self._cluster(torch.cat(list(z), 1).numpy(), seed, self._previous)
        if self._previous is not None:
            # keep the cluster ids of the last round: the pseudo-classifiers learned those, and a
            # renamed target would make them unlearn a permutation through the encoders
            reference = align(reference, self._previous, self.n_clusters)
        labellings = [reference]
        for j in range(self.n_members):
            labellings.append(align(self._cluster(z[j].numpy(), seed + j + 1, self._previous), reference,
                                    self.n_clusters))
        self._member0_ = labellings[1]
        labels, agreed = consensus(np.stack(labellings), self.n_clusters)
        self._previous = labels
        return labels, agreed

    def _settings(self) -> dict:
        """What decides whether a checkpoint can be resumed: every parameter that changes the
        result (plain values only, so the file stays data) and the data's fingerprint."""
        params = {k: v for k, v in self.get_params().items() if k not in ("checkpoint", "device", "verbose")}
        params["random_state"] = params["random_state"] if isinstance(params["random_state"], (int, type(None))) \
            else repr(params["random_state"])
        return {**params, "data": self._fingerprint}

    def _save(self, model, optimizer, generator, history, best, stale, r):
        state = {"version": CHECKPOINT_VERSION, "round": r, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "history": history,
                 "best": {"labels": torch.from_numpy(best[0]), "agreed": torch.from_numpy(best[1]), "round": best[2]},
                 "stale": stale, "previous": torch.from_numpy(self._previous),
                 "initial_labels": torch.from_numpy(self.initial_labels_), "settings": self._settings()}
        write_files([(str(self.checkpoint), lambda tmp: torch.save(state, tmp))])

    def _load(self, model, optimizer, generator):
        """The state after the checkpoint's round: ``(history, best, stale, next round)``."""
        path = str(self.checkpoint)
        state = read_checkpoint(path, "cpu", CHECKPOINT_VERSION)
        check_settings(path, self._settings(), state.get("settings"))
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            best = (state["best"]["labels"].numpy(), state["best"]["agreed"].numpy(), int(state["best"]["round"]))
            self._previous = state["previous"].numpy()
            self.initial_labels_ = state["initial_labels"].numpy()
            history, stale, r = list(state["history"]), int(state["stale"]), int(state["round"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"checkpoint {path!r} is not an SPC checkpoint of this model "
                                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        return history, best, stale, r + 1

    # ---- inference and plots ------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        """The consensus of the members' pseudo-classifiers (mode of their argmax; ties to the
        lowest label) for new points."""
        check_is_fitted(self)
        x = np.asarray(X) if not hasattr(X, "detach") else X.detach().cpu().numpy()
        if self.architecture_ == "conv" and tuple(x.shape[1:]) != self.image_shape_:
            raise ValueError(f"X: images of shape (N, {', '.join(map(str, self.image_shape_))}) expected (the "
                             f"shape fitted), got {x.shape}")
        if x.ndim == 4:
            x = x.reshape(x.shape[0], -1)
        x = validate_features(self, x, reset=False)
        data = torch.from_numpy(self.scaler_.transform(x, np.float32))
        if self.architecture_ == "conv":
            data = data.view(len(data), *self.image_shape_)
        with torch.no_grad():
            logits = self.model_.classifier(self.model_.encoder(self._stack(data)))
        return consensus(logits.argmax(-1).numpy(), self.n_clusters)[0]

    def plot_history(self, path: str) -> None:
        """Agreed points (and, when labels were given, ACC of all and of agreed points) per round."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .._files import write_files

        check_is_fitted(self)
        rounds = [h["round"] for h in self.history_]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(rounds, [h["agreed_fraction"] for h in self.history_], "k:", marker="o", label="agreed points")
        if "acc" in self.history_[0]:
            ax.plot(rounds, [h["acc"] for h in self.history_], marker="s", label="ACC, all points")
            ax.plot(rounds, [h["agreed_acc"] for h in self.history_], marker="^", label="ACC, agreed points")
        ax.set_xlabel("round")
        ax.set_ylabel("fraction")
        ax.set_title(f"SPC, M = {self.n_members}")
        ax.legend()
        fig.tight_layout()
        write_files([(path, lambda tmp: fig.savefig(tmp, dpi=120))])
        plt.close(fig)


__all__ = ["SelectivePseudoLabelClustering"]
