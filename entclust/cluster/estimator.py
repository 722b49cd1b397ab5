"""``EntropyClustering``: discriminative entropy clustering of fixed feature vectors as a
scikit-learn estimator (the papers' "low-level" setting, docs/maths.md "Models and training")."""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from torch import nn

from .._dist import agree, fingerprint
from .._loop import EpochLoop, Progress, SolveCounts
from .._params import Int, OneOf, Real, check_params
from .._warn import say_fit_failures
from ..data import SCALINGS, Scaler, validate_features
from ..nn import ColumnMemory
from ..ops import argmax_rows
from ..ops.checks import prior_vector
from . import methods as _builtin  # noqa: F401  (registers the built-in methods)
from .centroids import kmeans_plusplus, lloyd, self_labeled_centroids, temperature
from .head import FittedHead
from .registry import EstimatorMethod, HeadMethod, get
from .scale import (GLOBAL_BELOW, ROUND_SAMPLE, SEED_SAMPLE, SPARSE_TOP, Shard, centroid_rounds, default_epochs,
                    global_objective, distinct_rows, head_argmax, keep_best, plan_memory, select_sample)

# points x clusters of a pass that reports its progress (the final labels take a minute at N = 10^7, K = 10^4)
PASS_PROGRESS = 1e9

INITS = ("auto", "random", "kmeans++", "kmeans", "balanced")


class EntropyClustering(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, FittedHead, BaseEstimator):
    """Cluster feature vectors with a linear softmax head trained by self-labeling.

    A linear layer ``x -> softmax(v^T x + b)`` (Kaiming-normal ``v``, zero bias) is trained by
    plain SGD over shuffled mini-batches; on each batch the method's objective is minimised,
    for ``method="rce"`` (default) ``mean_i H(sigma_i, y_i) + lam KL(u || y_bar) + gamma ||v||^2``
    with the pseudo-labels ``y`` re-solved on the batch by the fused EM solver (the papers'
    "batch version"). Every registered head method can be picked by name
    (:func:`entclust.cluster.available`): ``"rce"``, ``"cce"`` (ours), ``"mi-gd"``, ``"sela"``,
    ``"mi-adm"`` (baselines); K-means is :func:`entclust.make_estimator` ``("kmeans", K)``.

    Parameters
    ----------
    n_clusters : K, the number of clusters (1 <= K <= number of points).
    method : head method name (see above).
    lam : fairness weight lambda of "rce"/"cce" (100 in the papers; mean-form loss, so the solver
        uses ``c = lam * batch size``).
    gamma : margin weight ``gamma ||v||^2`` (bias excluded), used by every head method. None
        (default): ``0.01 min(1, 10 / K)``, the papers' 0.01 up to K = 10. ``||v||^2`` sums over
        the K class columns while the data term's gradient on each column shrinks like 1/K, so
        a fixed gamma decays the head to zero at large K (K = 1000, gamma = 0.01: every point in
        one cluster after one epoch).
    epochs, batch_size, lr : SGD schedule on the method's loss. The points are split each epoch
        into ``max(1, round(N / batch_size))`` near-equal batches (no tiny tail batch). None
        (defaults): ``epochs`` with per-batch pseudo-labels the passes that make ``200 max(K, 10)``
        SGD steps, at most 50 (K = 10: 50 up to N = 10 000 at batch 250, 5 at N = 100 000, 1
        from N = 500 000; a fit reaches what its steps reach, whatever N:
        docs/guides/clustering.md), 0 after the ``"balanced"`` start
        (SGD on the papers' loss after it left ACC unchanged at K = 50 and 200 on overlapping
        mixtures), 3 with global labels from another start; ``lr`` 1.0 from a random head, 0.1
        from a centroid head.
    prior : target cluster proportions u, ``(K,)`` summing to 1 (uniform when None).
    standardize : ``"auto"`` (default: ``"features"`` for features in different units, else
        ``"global"``), ``"global"`` (centre, divide by one overall scale; keeps the
        geometry), ``"features"`` (z-score each feature) or ``"none"``; see :class:`entclust.data.Scaler`.
    method_params : dict of the method's own parameters (``entclust.cluster.get(name).defaults``),
        e.g. ``{"solver": "newton"}`` for "rce" or ``{"weight": 1.3}`` for "mi-gd".
    pseudo_labels : ``"batch"`` (the papers: y solved on each mini-batch alone), ``"global"``
        (method "rce": the fairness term over all N points, kept as their K column sums alone,
        :class:`entclust.ColumnMemory`: no N x K state) or ``"auto"`` (default): ``"global"`` for
        "rce" when a batch holds fewer than ``GLOBAL_BELOW`` points per cluster
        (``batch_size < 20 K``), else ``"batch"``.
    init : head initialisation; the centroid heads are ``logits = beta (mu_k . x - |mu_k|^2 / 2)``
        with ``beta = D / mean squared distance to the nearest centre`` (the posterior of an
        isotropic Gaussian mixture). ``"random"``: Kaiming normal, zero bias (the papers).
        ``"kmeans++"``: greedy k-means++ seeds from ``max(10000, 10 K)`` points. ``"kmeans"``: those
        seeds moved by Lloyd's iterations. ``"balanced"``: self-labeled centroids
        (:func:`entclust.cluster.centroids.self_labeled_centroids`): seeds from ``max(10000, 2 K)``
        points, then rounds over ``max(20000, 20 K)`` points in which the pseudo-labels are the
        reverse-CE y-step with strong fairness against the column sums of all those points
        (sparse above K = 256: each point's 64 nearest centres) and every centre moves to the
        mean of its points weighted by them, as Lloyd's iterations do with hard assignments;
        fairness splits the clusters K-means merges. ``"auto"`` (default): ``"balanced"`` with
        global pseudo-labels, else ``"random"``.
    n_init : independent trainings from different heads; the one with the lowest objective on
        all points (the method's loss, pseudo-labels solved on all points; on the same 100 000 of
        them for every run where there are more) is kept, as K-means keeps its best restart.
        Linear entropy clustering has poor local minima (Zhang & Boykov 2024, Fig. 3): on
        elongated clusters a run can lock onto the cut along the long axis, and with an
        imbalanced prior half the runs merge the small cluster away. The restarts train
        side by side as one batched problem (one ``(B, N, K)`` solve per step), so 10 cost about
        2-4 times one on small data. ``"auto"`` (default, like scikit-learn's KMeans): 10 from
        random heads, 1 from a centroid head (docs/benchmarks.md measures both).
    group : ``torch.distributed`` process group for multi-process training (launch with
        ``torchrun``; None: one process). ``X`` is then this rank's shard (at least one row); the
        scaler's statistics, the k-means++ sample, the batches (one global shuffle of all
        ranks' rows) and the global pseudo-labels' column sums span all ranks; the head is
        wrapped in ``DistributedDataParallel``, each rank's loss weighted so that the averaged
        gradient is the single-process gradient of the global batch. Communication per step:
        the gradients (K (D + 1) numbers) and, per EM step, one K-vector of float64. Needs
        ``pseudo_labels`` "global" or "auto" (then global). ``labels_`` are this rank's rows;
        ``cluster_sizes_`` and ``objective_`` are those of all rows.
    device : torch device for training (CPU kernels everywhere; on CUDA the solvers run their
        pure-PyTorch versions on the device).
    random_state : int, RandomState or None; a fixed value makes ``fit`` reproducible.
    verbose : report progress: a tqdm bar on a terminal, a line on standard error every few
        seconds otherwise (a log, a notebook's captured output).

    Attributes
    ----------
    labels_ : cluster of each training point.
    cluster_sizes_ : points per cluster, ``(K,)``.
    history_ : one dict per epoch of the kept run: mean batch loss, seconds, number of empty clusters
        and, for "rce"/"cce", the pseudo-label solves of the epoch, how many stopped unconverged
        (short of their stopping rule, :class:`entclust.SelfLabeling`'s by default) and their largest gap
        (``max_gap``: :attr:`entclust.SolverResult.gap`, the duality gap for reverse CE).
    objective_ : the kept run's objective on all points (global labels above K = 256: each point's
        sigma and y over its 64 largest logits).
    n_init_ : the number of runs trained (restarts trained side by side share each epoch's ``seconds``).
    init_history_ : one dict per round of ``init="balanced"`` (seconds, share of probe points that
        changed centre, beta, centres moved by the split step).
    head_ : the trained ``nn.Linear``.
    scaler_ : the fitted preprocessing.
    n_features_in_ : the number of features seen in ``fit``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> est = EntropyClustering(10, random_state=0).fit(load_digits().data)
    >>> est.labels_.shape, est.cluster_sizes_.sum()
    ((1797,), 1797)
    >>> EntropyClustering(10_000, random_state=0)  # large K: global pseudo-labels, the balanced start
    EntropyClustering(n_clusters=10000, random_state=0)
    """

    PARAMETERS = {"n_clusters": Int(1), "lam": Real(0), "gamma": Real(0, None), "epochs": Int(0, None),
                  "batch_size": Int(1), "lr": Real(0, None, strict=True), "standardize": OneOf(*SCALINGS),
                  "pseudo_labels": OneOf("auto", "batch", "global"), "init": OneOf(*INITS), "n_init": Int(1, "auto")}

    def __init__(self, n_clusters: int = 10, method: str = "rce", lam: float = 100.0, gamma: float | None = None,
                 epochs: int | None = None, batch_size: int = 250, lr: float | None = None, prior=None, standardize: str = "auto",
                 method_params=None, pseudo_labels: str = "auto", init: str = "auto", n_init="auto",
                 group=None, device: str = "cpu", random_state=None, verbose: bool = False):
        self.n_clusters = n_clusters
        self.method = method
        self.lam = lam
        self.gamma = gamma
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.prior = prior
        self.standardize = standardize
        self.method_params = method_params
        self.pseudo_labels = pseudo_labels
        self.init = init
        self.n_init = n_init
        self.group = group
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ---- checks -------------------------------------------------------------------------
    def _method(self):
        method = get(self.method)
        if not isinstance(method, HeadMethod):
            raise ValueError(f"method {self.method!r} is not a linear-head method; use "
                             f"entclust.make_estimator({self.method!r}, n_clusters)")
        params = dict(method.defaults)
        unknown = set(self.method_params or {}) - set(params)
        if unknown:
            raise ValueError(f"method_params {sorted(unknown)} are not parameters of method {self.method!r} "
                             f"(it takes {sorted(params)})")
        params.update(self.method_params or {})
        return method, params

    def _check_params(self, n: int) -> None:
        check_params(self.get_params(deep=False), self.PARAMETERS)
        if self.n_clusters > n:
            raise ValueError(f"n_clusters={self.n_clusters} is larger than the number of points N={n}")
        if self.pseudo_labels == "global" and self.method != "rce":
            raise ValueError(f"pseudo_labels='global' is implemented for method='rce', got method={self.method!r}")
        if self.group is not None and (self.pseudo_labels == "batch" or self.method != "rce"):
            raise ValueError(f"group (multi-process training) needs method='rce' with pseudo_labels 'global' or 'auto', "
                             f"got method={self.method!r}, pseudo_labels={self.pseudo_labels!r}")

    def _modes(self) -> tuple[str, str]:
        """The pseudo-label mode and the initialisation that "auto" resolves to."""
        mode = self.pseudo_labels
        if mode == "auto" and self.group is not None:
            mode = "global"
        elif mode == "auto":
            mode = "global" if self.method == "rce" and self.batch_size < GLOBAL_BELOW * self.n_clusters else "batch"
        init = self.init if self.init != "auto" else ("balanced" if mode == "global" else "random")
        return mode, init

    def _rates(self) -> None:
        """``gamma_`` and ``lr_``, what "None" resolves to (after ``init_``)."""
        self.gamma_ = float(self.gamma) if self.gamma is not None else 0.01 * min(1.0, 10.0 / self.n_clusters)
        self.lr_ = float(self.lr) if self.lr is not None else (1.0 if self.init_ == "random" else 0.1)

    def _prior(self):
        if self.prior is None:
            return None
        return prior_vector(self.prior, self.n_clusters, torch.zeros(1, dtype=torch.float64))

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train on ``X`` ``(N, D)``; ``y`` is ignored (unsupervised)."""
        # float32 stays float32 (and a memory-mapped file is read block by block by the scaler)
        x = validate_features(self, X, ensure_min_samples=1)
        if self.group is not None:  # before any collective that depends on them
            settings = {k: v for k, v in self.get_params().items() if k not in ("group", "verbose")}
            agree({"the number of features": x.shape[1], "the dtype": x.dtype.itemsize,
                   "the settings": fingerprint(repr(sorted(settings.items())))}, self.group)
        shard = Shard(x.shape[0], self.group)
        self._check_params(shard.total)
        method, params = self._method()
        self.pseudo_labels_, self.init_ = self._modes()
        k = self.n_clusters
        self._rates()
        # global labels: the balanced start does the work (SGD epochs on the papers' loss after it did
        # not move ACC at K = 50 or 200: benchmarks/large_k_design.py), so none by default
        # per-batch labels: a budget of SGD steps, at most 50 passes (50 up to 10 000 points at batch 250, K <= 10)
        self.epochs_ = self.epochs if self.epochs is not None else (
            0 if self.init_ == "balanced" else 3 if self.pseudo_labels_ == "global"
            else default_epochs(shard.total, self.batch_size, k))
        self.prior_ = self._prior()
        self.n_init_ = (10 if self.init_ == "random" else 1) if isinstance(self.n_init, str) else int(self.n_init)
        rng = check_random_state(self.random_state)
        generator = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        device = torch.device(self.device)
        plan_memory(x.shape[0], x.shape[1], k, self.pseudo_labels_, self.init_, self.n_init_, device)

        self.scaler_ = Scaler(self.standardize).fit(x, self.group)
        features = torch.from_numpy(self.scaler_.transform(x, np.float32)).to(device)
        settings = _Settings(self)
        settings.n_points = features.shape[0] if self.pseudo_labels_ == "global" else None
        settings.group = self.group
        if self.pseudo_labels_ == "global":
            if params["solver"] != "em":
                raise ValueError(f"global pseudo-labels are solved by EM; method_params solver={params['solver']!r} "
                                 f"needs pseudo_labels='batch'")
            # the K column sums alone (no N x K labels): see ColumnMemory
            criterion = ColumnMemory(k, features.shape[0], self.lam, prior=self.prior_, group=self.group,
                                     iterations=params["max_iter"] if params["max_iter"] is not None else 3).to(device)
        else:
            criterion = method.build(settings, params).to(device)
        if self.n_init_ > 1 and _batched(criterion, shard):
            # the restarts as one (B, N, K) problem per step: one batched matmul and one batched
            # solve instead of B Python loops (each restart's loss, gradient and labels are its own)
            runs = self._train_batched(features, criterion, generator, self.n_init_, shard)
        else:
            runs = (self._train(features, criterion, generator, run, shard) for run in range(self.n_init_))
        # the method's own objective picks the restart (on a sample of many points: keep_best)
        probe = select_sample(shard.total, self.n_init_ > 1 and self.pseudo_labels_ == "batch", rng, features.device)
        self.objective_, head, self.history_, labels = keep_best(
            runs, lambda h, rows: self._objective(criterion, h, rows, shard), features, probe)
        # labels on the fitting device (on a GPU, not N x D x K multiply-adds on the CPU); the
        # global objective's pass over the points found them already
        self.labels_ = (labels if labels is not None else head_argmax(head.eval(), features)).cpu().numpy()
        self.head_ = head.cpu().eval()
        self.n_iter_ = self.epochs_
        self.cluster_sizes_ = shard.sum(torch.bincount(torch.from_numpy(self.labels_), minlength=self.n_clusters)).numpy()
        # an alternation whose recorded loss is not an objective it descends (MI-ADM) is not checked for a rise
        losses = [h["loss"] for h in self.history_] if getattr(criterion, "descends", True) else []
        hint = (f"init={self.init_!r}, lr={self.lr_:g}: a start from self-labeled centroids (init='balanced', "
                f"the default at large K) keeps every cluster, a lower lr keeps SGD from emptying them")
        distinct = distinct_rows(features, shard) if (self.cluster_sizes_ == 0).any() else None
        if distinct is not None and distinct < self.n_clusters:
            hint = (f"the data holds only {distinct} distinct points, and identical points get the same label: "
                    f"at most {distinct} of the n_clusters={self.n_clusters} clusters can hold points")
        say_fit_failures(f"EntropyClustering({self.method!r})", self.cluster_sizes_, losses, hint,
                         f"lower lr (now {self.lr_:g})")
        return self

    def partial_fit(self, X, y=None):
        """One epoch of SGD over the chunk ``X`` ``(n, D)``, for data that arrives in chunks (as
        MiniBatchKMeans' ``partial_fit``). The first call fixes the scaler (this chunk's
        statistics) and starts one head (``init="auto"``: random, the papers' start, with
        ``lr`` 1.0; restarts are not trained, so expect ``fit``'s accuracy with ``n_init=1``);
        later chunks continue training that head.
        Pseudo-labels are solved per mini-batch (``pseudo_labels="global"`` needs every point at
        once: use ``fit``). ``labels_`` and ``cluster_sizes_`` are those of the last chunk."""
        first = not hasattr(self, "head_")
        x = validate_features(self, X, ensure_min_samples=1, reset=first)
        if first:
            self._check_params(max(x.shape[0], self.n_clusters))
            if self.pseudo_labels == "global" or self.group is not None:
                raise ValueError("partial_fit solves pseudo-labels per mini-batch in one process; pseudo_labels="
                                 "'global' and group= need every point at once: use fit")
            if x.shape[0] < self.n_clusters:
                raise ValueError(f"partial_fit: the first chunk starts the head and needs at least n_clusters="
                                 f"{self.n_clusters} points, got {x.shape[0]}")
            # random: SGD from a centroid head's sharp logits barely moved (digits, 6 chunks x 10 passes:
            # 61-69 % ACC against its start's 63 %; random heads 68-81 %)
            self.pseudo_labels_, self.init_ = "batch", (self.init if self.init != "auto" else "random")
            self._rates()
            self.prior_, self.n_init_, self.epochs_, self.history_ = self._prior(), 1, 0, []
            self.scaler_ = Scaler(self.standardize).fit(x)
        if not hasattr(self, "_stream_rng"):  # the first chunk, or the first after fit: continue its head
            seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
            self._stream_rng = torch.Generator().manual_seed(seed).get_state()
        generator = torch.Generator()
        generator.set_state(self._stream_rng)
        features = torch.from_numpy(self.scaler_.transform(x, np.float32)).to(self.device)
        if first:
            self.head_ = self._init_head(features, generator, Shard(features.shape[0], None))
        method, params = self._method()
        criterion = method.build(_Settings(self), params).to(features.device)
        head = self.head_.to(features.device).train()
        loop = self._loop(torch.optim.SGD(head.parameters(), lr=self.lr_), features.shape[0], features)
        entry = loop.run(lambda idx: criterion(head(features[idx]), head), 1, generator)[0]
        self._stream_rng = generator.get_state()
        self.epochs_ += 1
        self.history_.append({**entry, "epoch": self.epochs_, "points": features.shape[0]})
        self.head_ = head.cpu().eval()
        with torch.no_grad():
            self.labels_ = head_argmax(self.head_, features.cpu()).numpy()
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=self.n_clusters)
        self.n_iter_ = self.epochs_
        return self

    def _objective(self, criterion, head, features, shard) -> tuple[float, torch.Tensor | None]:
        """The method's objective on all points, and (global labels) each point's cluster, found
        in the same pass."""
        if not isinstance(criterion, ColumnMemory):
            return float(criterion(head(features), head)), None
        progress = Progress(f"EntropyClustering: labels and objective (K={self.n_clusters})", features.shape[0],
                            unit="points", verbose=self.verbose and features.shape[0] * self.n_clusters >= PASS_PROGRESS)
        try:
            return global_objective(criterion, head, features, shard, self.lam, self.gamma_, progress)
        finally:
            progress.close()

    def _init_head(self, features: torch.Tensor, generator: torch.Generator, shard) -> nn.Linear:
        n, d = features.shape
        k = self.n_clusters
        # skip_init: nn.Linear's own initialisation would draw from (and advance) the global RNG
        head = torch.nn.utils.skip_init(nn.Linear, d, k)
        with torch.no_grad():
            if self.init_ == "random":  # Kaiming normal (fan-in, gain sqrt 2), zero bias
                head.weight.copy_(torch.randn(k, d, generator=generator) * math.sqrt(2.0 / d))
                head.bias.zero_()
            else:
                # one permutation: the seeds come from its first max(10 000, 2 K) points, the centroid
                # rounds use its first max(20 000, 20 K) (every point of a smaller set)
                order = torch.randperm(shard.total, generator=generator)
                seeds = SEED_SAMPLE(k) if self.init_ == "balanced" else max(10000, 10 * k)
                points = shard.gather_rows(features, order[:max(seeds, ROUND_SAMPLE(k) if self.init_ == "balanced" else 0)])
                balanced = self.init_ == "balanced"
                rounds = centroid_rounds(points.shape[0], k, shard.total) if balanced else None
                stage = "self-labeled centroids" if balanced else f"{self.init_} start"
                # the seeding takes seconds at large K: said before it starts (not per restart at small K)
                progress = Progress(f"EntropyClustering: {stage} (K={k})", rounds, unit="round",
                                    verbose=self.verbose and (balanced or k >= 1000))
                try:
                    progress.note(f"k-means++ seeds from {min(seeds, points.shape[0])} points")
                    mu = kmeans_plusplus(points[:seeds], k, generator, progress)
                    if self.init_ == "kmeans":
                        mu = lloyd(points, mu)
                    if balanced:
                        mu, beta, self.init_history_ = self_labeled_centroids(
                            points, mu, self.lam, self.prior_, rounds=rounds, progress=progress,
                            top=SPARSE_TOP if k > 4 * SPARSE_TOP else None)
                    else:
                        # the posterior of an isotropic Gaussian mixture with the centres mu and the per-dimension
                        # variance 1 / beta of the points about their nearest centre
                        beta = temperature(points, mu)
                finally:
                    progress.close()
                head.weight.copy_(beta * mu)
                head.bias.copy_(-0.5 * beta * mu.square().sum(1))
        return head.to(features.device)

    def _loop(self, optimizer, total: int, features) -> EpochLoop:
        return EpochLoop(f"EntropyClustering({self.method!r})", optimizer, total, batch_size=self.batch_size,
                         device=features.device, hint=f"lower lr (now {self.lr_}) or check the features",
                         verbose=self.verbose)

    def _train_batched(self, features: torch.Tensor, criterion, generator: torch.Generator, runs: int, shard):
        """``runs`` restarts of :meth:`_train` (per-batch pseudo-labels, one process) trained side by
        side: heads ``W (B, K, D)``, ``b (B, K)``, logits ``(B, n, K)`` for the same mini-batch, the
        pseudo-labels of the B problems solved in one batched call. The loss stepped is the sum
        of the B restarts' own losses (``reduction="none"``), so every head gets exactly the
        gradient of its own objective. Returns a list of ``(nn.Linear, history)``, one per restart."""
        k = self.n_clusters
        heads = [self._init_head(features, generator, shard) for _ in range(runs)]
        weight = nn.Parameter(torch.stack([h.weight.detach() for h in heads]))
        bias = nn.Parameter(torch.stack([h.bias.detach() for h in heads]))
        solves = SolveCounts(runs)

        def step(idx):
            logits = torch.baddbmm(bias.unsqueeze(1), features[idx].expand(runs, -1, -1), weight.transpose(1, 2))
            losses = criterion(logits, weight, reduction="none")
            solves.add(getattr(criterion, "last_result", None))
            return losses

        def end_epoch(epoch, totals, seconds):
            entries = []
            with torch.no_grad():
                for b in range(runs):
                    sizes = torch.bincount(argmax_rows(features @ weight[b].T + bias[b], 1), minlength=k)
                    entry = {"epoch": epoch + 1, "loss": float(totals[b]), "seconds": seconds,
                             "empty_clusters": int((sizes == 0).sum())}
                    entries.append({**entry, **solves.entry(b)})
            solves.reset()
            if hasattr(criterion, "reset_stats"):
                criterion.reset_stats()
            return entries, {"loss": float(totals.min())}

        loop = self._loop(torch.optim.SGD([weight, bias], lr=self.lr_), features.shape[0], features)
        history = loop.run(step, self.epochs_, generator, end_epoch=end_epoch,
                           desc=f"EntropyClustering({self.method}, {runs} restarts)")
        out = []
        for b in range(runs):
            head = torch.nn.utils.skip_init(nn.Linear, features.shape[1], k).to(features.device)
            with torch.no_grad():
                head.weight.copy_(weight[b])
                head.bias.copy_(bias[b])
            out.append((head, [entries[b] for entries in history]))
        return out

    def _train(self, features: torch.Tensor, criterion, generator: torch.Generator, run: int, shard):
        from ..losses import margin_penalty, reverse_cross_entropy, strong_fairness

        head = self._init_head(features, generator, shard)
        memory = isinstance(criterion, ColumnMemory)
        if memory:
            criterion.reset()
        model = head
        if shard.group is not None:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(head, process_group=shard.group)
        if self.epochs_ == 0:  # no optimizer: building the first one in a process imports torch._dynamo (~1.5 s)
            return head, []
        tiny = torch.finfo(torch.float32).tiny
        predicted = torch.zeros(self.n_clusters, dtype=torch.int64, device=features.device)

        def step(batch):
            if not memory:
                return criterion(head(features[batch]), head)
            # sum over this rank's rows of the global batch, scaled so that the gradient DDP
            # averages over the ranks is the mean over the global batch
            logits = model(features[shard.local(batch)])
            y = criterion.update(logits).to(logits.dtype).clamp_min_(tiny)
            ce = reverse_cross_entropy(logits, y, reduction="sum", validate=False)
            loss = ce * (shard.world / len(batch))
            if self.gamma_ > 0:
                loss = loss + self.gamma_ * margin_penalty(head)
            # the clusters the head predicted over the epoch (no extra pass over all N points)
            predicted.add_(torch.bincount(argmax_rows(logits.detach(), 1), minlength=self.n_clusters))
            return loss, ce.detach()  # the CE summed over the epoch, then over the ranks

        def end_epoch(epoch, total, seconds):
            if memory:  # the epoch's mean CE over all points, plus the fairness and margin terms
                total = float(shard.sum(total.reshape(1))) / shard.total
                total += self.lam * float(strong_fairness(criterion.y_bar().unsqueeze(0), criterion.prior,
                                                          validate=False))
                total += self.gamma_ * float(margin_penalty(head).detach())
                sizes = shard.sum(predicted)
                predicted.zero_()
            else:
                with torch.no_grad():
                    sizes = torch.bincount(head_argmax(head, features), minlength=self.n_clusters)
            entry = {"epoch": epoch + 1, "loss": float(total), "seconds": seconds,
                     "empty_clusters": int((sizes == 0).sum())}
            stats = getattr(criterion, "stats", None)
            if stats is not None:  # SelfLabeling: the epoch's pseudo-label solves that did not converge
                entry.update(solves=stats["solves"], unconverged_solves=stats["unconverged"], max_gap=stats["max_gap"])
                criterion.reset_stats()
            return entry, {"loss": entry["loss"], "empty": entry["empty_clusters"]}

        desc = f"EntropyClustering({self.method})" + (f" run {run + 1}/{self.n_init_}" if self.n_init_ > 1 else "")
        loop = self._loop(torch.optim.SGD(head.parameters(), lr=self.lr_), shard.total, features)
        return head, loop.run(step, self.epochs_, generator, end_epoch=end_epoch, desc=desc)

    # ---- inference: predict, predict_proba, transform, coef_, save/load come from FittedHead (head.py)
    def score(self, X, y=None) -> float:
        """Minus the method's objective on ``X`` taken as one batch (pseudo-labels solved on all
        of ``X``): higher is better, as scikit-learn's ``score`` (K-means: minus the inertia).
        Holds ``X``'s N x K logits and pseudo-labels in memory (about 24 bytes an entry), and
        refuses, before any work, where they cannot fit."""
        method, params = self._method()
        criterion = method.build(_Settings(self), params)
        features = self._transform(X)
        self._refuse_above_free(features.shape[0], 24, "score", "the logits and pseudo-labels",
                                "score a sample of the rows (the objective of one batch)")
        with torch.no_grad():
            return -float(criterion(self._logits(features), self.head_))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags



def _batched(criterion, shard) -> bool:
    """Whether the restarts can train as one batched problem: the method's loss takes ``(B, N, K)``
    logits with ``reduction="none"`` (:class:`~entclust.cluster.registry.HeadMethod`), in one process."""
    return bool(getattr(criterion, "batched", False)) and shard.group is None


class _Settings:
    """The estimator's hyperparameters as the method's ``build`` reads them (the prior validated)."""

    def __init__(self, est: EntropyClustering):
        self.lam, self.gamma, self.prior, self.n_clusters = float(est.lam), est.gamma_, est.prior_, est.n_clusters
        self.n_points = self.group = None


def make_estimator(name: str, n_clusters: int, *, random_state=None, **params):
    """An unfitted estimator for method ``name``: :class:`EntropyClustering` for head methods
    (``params`` are its arguments), the method's own estimator otherwise."""
    method = get(name)
    if isinstance(method, EstimatorMethod):
        return method.make(n_clusters, random_state=random_state, **params)
    return EntropyClustering(n_clusters, method=name, random_state=random_state, **params)


__all__ = ["EntropyClustering", "make_estimator"]
