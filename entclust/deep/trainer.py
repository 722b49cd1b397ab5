"""A resumable trainer for deep self-labeled clustering (Zhang & Boykov 2023a, 2023b, 2024, "deep" setting).

Each step: a mini-batch, ``views`` random augmentations of every image, the network's
prediction ``sigma_i = E_t sigma(f(t(x_i)))`` (self-augmentation; as logits, the log of the mean
probability), pseudo-labels solved on the batch by :class:`entclust.SelfLabeling` (one batched
solve for the H sub-heads), and one optimiser step on the sum of the sub-heads' objectives."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._files import check_settings, data_fingerprint, read_checkpoint, write_files
from .._loop import EpochLoop
from .._params import Int, OneOf, Real, check_params
from ..metrics import clustering_accuracy
from ..nn import SelfLabeling
from .augment import Augment, get_augment

OPTIMIZERS = ("adam", "sgd")
# ours (pseudo-labels by the fused solvers), then the baselines in the same harness: MI-GD/IMSAT,
# SeLa and MI-ADM with the estimator methods' per-batch losses, and IIC (paired mutual information)
METHODS = ("rce", "cce", "mi-gd", "sela", "mi-adm", "renyi", "iic")
PSEUDO_LABELS = ("auto", "batch", "global")
# method_params of "rce" and "cce": the options of their pseudo-label solve (entclust.SelfLabeling's)
SOLVE_OPTIONS = ("solver", "max_iter", "tol", "tol_gap", "tol_progress", "solver_options")
CHECKPOINT_VERSION = 3  # 2: read with weights_only, settings include the model's shapes and the data; 3: global pseudo-labels as K column sums


def iic_loss(log_p1: torch.Tensor, log_p2: torch.Tensor) -> torch.Tensor:
    """IIC (Ji et al. 2019): minus the mutual information of the cluster assignments of two views,
    ``-sum_kl P_kl ln(P_kl / (P_k P_l))`` with ``P = (1/n) sum_i sigma1_i sigma2_i^T`` made
    symmetric; ``(..., n, K)`` log-probabilities in, ``(...)`` losses out."""
    p = torch.einsum("...ik,...il->...kl", log_p1.exp(), log_p2.exp()) / log_p1.shape[-2]
    p = ((p + p.transpose(-1, -2)) / 2).clamp_min(torch.finfo(p.dtype).eps)
    p = p / p.sum((-1, -2), keepdim=True)
    rows, cols = p.sum(-1, keepdim=True), p.sum(-2, keepdim=True)
    return -(p * (p.log() - rows.log() - cols.log())).sum((-1, -2))


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) + KL(q || p)`` of each row of ``(..., K)`` log-probabilities: Zhang & Boykov 2024's
    self-augmentation loss between the predictions for an image and for its augmentation."""
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)


class SelfLabelingTrainer:
    """Train ``model`` (``x -> logits (N, K)``, or ``(H, N, K)`` for H sub-heads, e.g. a
    :class:`~entclust.deep.ClusteringNet`) by self-labeling on unlabelled data.

    Parameters
    ----------
    method : ``"rce"`` (reverse CE, Zhang & Boykov 2023a/2024) or ``"cce"`` (collision CE, Zhang & Boykov 2023b); the
        baselines ``"mi-gd"`` (IMSAT-style MI, weight 1.3), ``"sela"``, ``"mi-adm"`` (their
        per-batch losses from :mod:`entclust.cluster.methods`, ``method_params`` overriding
        their defaults) and ``"iic"`` (mutual information of two augmented views, needs
        ``views >= 2``).
    lam, prediction_fairness, solver, max_iter : as :class:`entclust.SelfLabeling` (fairness
        weight 100, the papers'; ``prediction_fairness`` None: 0.5, the module's default).
        For ``"rce"`` and ``"cce"``, ``method_params`` sets the pseudo-label solve's options
        (``SOLVE_OPTIONS``: ``solver``, ``max_iter``, ``tol``, ``tol_gap``, ``tol_progress``,
        ``solver_options``, as :class:`entclust.SelfLabeling`), e.g. ``{"solver": "newton",
        "tol_gap": 1e-6}`` for the exact collision-CE labels.
    gamma : margin weight ``gamma ||v||^2`` on the head's weight (the papers' weight decay 0.01 of
        the linear head). Needs ``model.heads`` (:class:`ClusterHeads`) or ``head`` (the head's
        ``nn.Linear`` or weight); 0 turns it off.
    views : augmentations per image and step whose predictions are averaged (Zhang & Boykov 2023a E.3: 2).
    consistency : > 0 switches to Zhang & Boykov 2024's other form of self-augmentation: the objective on
        the prediction for each image itself, plus ``consistency`` times the symmetric KL between
        it and the prediction for each of its ``views`` augmentations (Zhang & Boykov 2024 Sec. 4.3: one
        augmentation, weight 0.2 to 0.5). Images only.
    pseudo_labels : ``"batch"`` (the papers': solved per mini-batch), ``"global"`` (method "rce",
        one sub-head: every point's label kept, EM steps against the column sums of all points,
        :class:`entclust.SelfLabeling` with ``n_points``; for large K, where a batch cannot
        spread over the classes) or ``"auto"`` (global when ``batch_size < 20 K`` and the
        method and heads allow, as :class:`entclust.EntropyClustering`).
    augment : an :class:`~entclust.deep.Augment`, a preset name (``"digits"``, ``"cifar"``,
        ``"stl"``, ``"none"``) or ``"auto"`` (from the input shape; none for vectors).
    optimizer : ``"adam"`` (the papers') or ``"sgd"`` (momentum 0.9); ``lr``, ``weight_decay``.
    epochs, batch_size : each epoch is one shuffle of the data into ``max(1, round(N /
        batch_size))`` near-equal batches (no tiny tail batch: batch norm needs rows).
    checkpoint : a path; model, optimiser, random-generator states, epoch, history and the
        running statistics are written there (atomically) every ``checkpoint_every`` epochs and
        at the end. ``fit(..., resume=True)`` continues from it bit-exactly.
    seed : seeds the generator of the shuffles and augmentations (the model's initialisation
        is the caller's).
    device : where the model trains.
    verbose : report progress (a tqdm bar on a terminal, lines on standard error in a log).
    eval_batch_size : rows per block when the model is evaluated on all the data.

    Attributes
    ----------
    history : one dict per epoch: ``loss`` (the lowest sub-head's) and ``head_losses``,
        ``seconds``, ``empty_clusters`` (classes argmax sigma never predicts, in eval mode, no
        augmentation), ``label_clusters`` (classes argmax y of the epoch's pseudo-labels used),
        ``entropy_of_mean`` ``H(sigma_bar)`` (``ln K`` is balanced, 0 is collapse),
        ``unconverged_solves``, and ``acc`` when ``labels`` are given for evaluation.
    objectives : each sub-head's objective on all the data, pseudo-labels solved on all of it.
    selected : the sub-head with the lowest objective.

    Notes
    -----
    A model with an overclustering head (:class:`~entclust.deep.ClusteringNet` with
    ``overcluster > 0``, IIC) trains it with the same method beside the main head (the sum of
    both losses; per-batch pseudo-labels); only the main head clusters.
    """

    PARAMETERS = {"method": OneOf(*METHODS), "views": Int(1), "epochs": Int(0), "batch_size": Int(2), "lr": Real(0, strict=True),
                  "checkpoint_every": Int(1), "eval_batch_size": Int(1), "consistency": Real(0),
                  "pseudo_labels": OneOf(*PSEUDO_LABELS), "optimizer": OneOf(*OPTIMIZERS)}

    def __init__(self, model: nn.Module, *, method: str = "rce", lam: float = 100.0, gamma: float = 0.01,
                 prediction_fairness: float | None = None, solver: str = "em", max_iter: int | None = None,
                 views: int = 2, consistency: float = 0.0, pseudo_labels: str = "batch", augment="auto",
                 optimizer: str = "adam", lr: float = 1e-4, weight_decay: float = 0.0,
                 epochs: int = 50, batch_size: int = 250, head=None, checkpoint=None, checkpoint_every: int = 1,
                 seed: int = 0, device="cpu", verbose: bool = False, eval_batch_size: int = 1024,
                 method_params=None):
        check_params(dict(method=method, views=views, epochs=epochs, batch_size=batch_size, lr=lr,
                          checkpoint_every=checkpoint_every, eval_batch_size=eval_batch_size, consistency=consistency,
                          pseudo_labels=pseudo_labels, optimizer=optimizer), self.PARAMETERS)
        if method == "iic" and views < 2:
            raise ValueError(f"method 'iic' pairs two augmented views of each image: views must be >= 2, got {views}")
        if consistency > 0 and method == "iic":
            raise ValueError("consistency is a form of self-augmentation for the other methods; 'iic' pairs views itself")
        if pseudo_labels == "global" and method != "rce":
            raise ValueError(f"pseudo_labels='global' is implemented for method 'rce', got {method!r}")
        self.model, self.method, self.views, self.optimizer_name = model, method, int(views), optimizer
        self.lr, self.weight_decay, self.epochs, self.batch_size = float(lr), float(weight_decay), int(epochs), int(batch_size)
        self.gamma, self.head, self.lam = float(gamma), head, float(lam)
        self.checkpoint, self.checkpoint_every, self.seed = checkpoint, int(checkpoint_every), int(seed)
        self.device, self.verbose, self.eval_batch_size = torch.device(device), verbose, int(eval_batch_size)
        self.augment_spec, self.consistency, self.pseudo_labels = augment, float(consistency), pseudo_labels
        self.overcluster = getattr(model, "over_heads", None) is not None
        if self.gamma > 0 and self._head_weight() is None:
            raise ValueError("gamma > 0 needs the head: a model with .heads (entclust.deep.ClusteringNet) or "
                             "head= (the head's nn.Linear or weight); or pass gamma=0")
        # the margin term is added here per sub-head, so the criterion's own gamma stays 0
        self.ours = method in ("rce", "cce")
        self._solver = dict(lam=lam, prediction_fairness=prediction_fairness, solver=solver, max_iter=max_iter,
                            on_unconverged="ignore")
        if self.ours:
            unknown = set(method_params or {}) - set(SOLVE_OPTIONS)
            if unknown:
                raise ValueError(f"method_params {sorted(unknown)} are not options of {method!r}'s pseudo-label solve "
                                 f"(it takes {list(SOLVE_OPTIONS)}, as entclust.SelfLabeling)")
            self._solver.update(method_params or {})
            self.criterion = SelfLabeling(method, **self._solver)
        elif method == "iic":
            self.criterion = None
        else:
            from ..cluster import get

            baseline = get(method)
            params = dict(baseline.defaults)
            unknown = set(method_params or {}) - set(params)
            if unknown:
                raise ValueError(f"method_params {sorted(unknown)} are not parameters of {method!r} (it takes {sorted(params)})")
            params.update(method_params or {})
            settings = type("Settings", (), {"lam": float(lam), "gamma": 0.0, "prior": None, "n_clusters": None})
            self.criterion = baseline.build(settings, params)
        # the overclustering head's own per-batch objective (the baselines' losses take any K)
        self.over_criterion = (SelfLabeling(method, **self._solver) if self.ours else self.criterion) \
            if self.overcluster else None
        self._global = False
        self.history: list[dict] = []
        self.objectives = None
        self.selected = 0

    # ---- pieces ---------------------------------------------------------------------------
    def _head_weight(self, over: bool = False):
        """The head weight as ``(H, K, D)`` (one sub-head: a view of the ``(K, D)`` weight), or None;
        ``over``: the overclustering head's."""
        if over:
            return self.model.over_heads.weight
        head = self.head if self.head is not None else getattr(self.model, "heads", None)
        weight = getattr(head, "weight", head)
        if not isinstance(weight, torch.Tensor):
            return None
        return weight if weight.dim() == 3 else weight.unsqueeze(0)

    def _logits(self, x: torch.Tensor, over: bool = False):
        """``(H, N, K)`` logits, or with ``over`` the main and the overclustering head's."""
        out = self.model(x, overcluster=True) if over else (self.model(x),)
        out = tuple(t if t.dim() == 3 else t.unsqueeze(0) for t in out)
        return out if over else out[0]

    def _views(self, x: torch.Tensor, generator: torch.Generator, clean: bool = False):
        """Log-probabilities of every sub-head for ``views`` augmentations of each row (after the
        row itself with ``clean``), ``(H, V, n, K)``; V = 1 without augmentation (the views would
        be equal). A tuple of two such tensors (main, overclustering) for a model with an
        overclustering head."""
        if x.dim() != 4 or self._augment == Augment():
            batch, views = x, 1
        else:
            batch = torch.cat(([x] if clean else []) + [self._augment(x, generator) for _ in range(self.views)])
            views = self.views + int(clean)
        out = self._logits(batch, over=self.overcluster)
        out = [torch.log_softmax(t, -1).view(t.shape[0], views, x.shape[0], t.shape[-1])
               for t in (out if self.overcluster else (out,))]
        return tuple(out) if self.overcluster else out[0]

    def _predictions(self, log_p: torch.Tensor):
        """The prediction the objective sees, ``(H, n, K)`` (``(H, V, n, K)`` views for IIC), and
        the consistency term ``(H,)`` or None, from the views of :meth:`_views`."""
        if self.method == "iic":
            return log_p, None
        if self.consistency > 0:
            clean, shifted = log_p[:, :1], log_p[:, 1:]
            return clean[:, 0], self.consistency * symmetric_kl(clean, shifted).mean((1, 2))
        # self-augmentation: log E_t sigma(f(t(x)))
        return log_p.logsumexp(1) - math.log(log_p.shape[1]), None

    def _step_loss(self, log_sigma: torch.Tensor, known, targets, weight, index=None, over: bool = False):
        """The ``(H,)`` losses of one batch and the pseudo-labels ``(H, n, K)`` used (None for the
        baselines). ``log_sigma``: ``(H, n, K)``, or for IIC the views ``(H, V, n, K)``;
        ``index``: the rows' dataset indices (global pseudo-labels); ``over``: the overclustering
        head (unsupervised, per-batch labels)."""
        criterion = self.over_criterion if over else self.criterion
        if over:
            known = None
        if not self.ours:
            if known is not None and bool(known.any()):
                raise ValueError(f"the semi-supervised mode is implemented for methods 'rce' and 'cce', got {self.method!r}")
            losses = iic_loss(log_sigma[:, 0], log_sigma[:, 1]) if criterion is None else criterion(
                log_sigma, None, reduction="none")
            if self.gamma > 0:
                losses = losses + self.gamma * weight.pow(2).sum((1, 2))
            return losses, None
        if self._global and not over:
            loss, y = criterion(log_sigma[0], index=index, return_labels=True)
            losses, y = loss.unsqueeze(0), y.unsqueeze(0)
        elif known is None or not bool(known.any()):
            losses, y = criterion(log_sigma, reduction="none", return_labels=True)
        else:
            y_free = criterion.solve_with_known(log_sigma[:, ~known], targets)
            h, n, k = log_sigma.shape
            y = torch.zeros(h, n, k, dtype=torch.float64, device=log_sigma.device)
            y[:, known] = F.one_hot(targets, k).to(y)
            y[:, ~known] = y_free
            # supervised term: forward CE of the labelled rows, added to the self-labeled loss
            supervised = F.nll_loss(log_sigma[:, known].reshape(-1, k), targets.repeat(h), reduction="none")
            losses = supervised.view(h, -1).mean(1)
            if bool((~known).any()):
                labels = y_free.to(log_sigma.dtype)
                if self.method == "rce":
                    labels = labels.clamp_min(torch.finfo(labels.dtype).tiny)
                losses = losses + criterion.loss(log_sigma[:, ~known], labels, fairness_y=y, reduction="none")
        if self.gamma > 0:
            losses = losses + self.gamma * weight.pow(2).sum((1, 2))
        return losses, y

    def _resolve_pseudo_labels(self, x: torch.Tensor, known) -> bool:
        """Whether this run keeps global pseudo-labels (see ``pseudo_labels``)."""
        if self.pseudo_labels == "batch" or not self.ours:
            return False
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                heads, _, k = self._logits(x[:2]).shape
        finally:
            self.model.train(was)
        if self.pseudo_labels == "global":
            if heads != 1 or known is not None:
                raise ValueError(f"pseudo_labels='global' keeps one problem's labels: it needs one sub-head and no "
                                 f"partial_labels, got {heads} sub-heads" + (" and partial labels" if known is not None else ""))
            return True
        return self.method == "rce" and heads == 1 and known is None and self.batch_size < 20 * k

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self, generator: torch.Generator, optimizer, epoch: int) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "history": self.history,
                 "stats": dict(self.criterion.stats) if self.ours else {}, "settings": self._settings(),
                 "version": CHECKPOINT_VERSION}
        if self.ours and self.over_criterion is not None:
            state["over_stats"] = dict(self.over_criterion.stats)
        if self._global and self.criterion.memory is not None:
            state["memory"] = self.criterion.columns
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def _settings(self) -> dict:
        """What decides a checkpoint's compatibility: the training settings, the shape of every
        parameter and buffer of the model, and the data's fingerprint (set by ``fit``)."""
        return {"method": self.method, "views": self.views, "lr": self.lr, "optimizer": self.optimizer_name,
                "batch_size": self.batch_size, "seed": self.seed, "gamma": self.gamma, "lam": self.lam,
                "consistency": self.consistency, "pseudo_labels": self.pseudo_labels,
                "shapes": {name: list(t.shape) for name, t in self.model.state_dict().items()},
                "data": getattr(self, "_fingerprint", None)}

    def _save(self, generator, optimizer, epoch) -> None:
        state = self.state_dict(generator, optimizer, epoch)
        write_files([(str(self.checkpoint), lambda tmp: torch.save(state, tmp))])

    def _load(self, generator, optimizer) -> int:
        state = read_checkpoint(str(self.checkpoint), self.device, CHECKPOINT_VERSION)
        check_settings(str(self.checkpoint), self._settings(), state.get("settings"))
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = list(state["history"])
        if self.ours:
            self.criterion.load_stats(state["stats"])
        if "over_stats" in state:
            self.over_criterion.load_stats(state["over_stats"])
        if "memory" in state:
            columns = state["memory"]
            self.criterion.reset_memory()
            self.criterion.column_memory(columns.shape[0], columns.device).columns.copy_(columns)
        return int(state["epoch"])

    # ---- training ---------------------------------------------------------------------------
    def fit(self, X, *, labels=None, partial_labels=None, resume: bool = False):
        """Train on ``X`` (a float tensor or array ``(N, C, H, W)`` or ``(N, D)``, already scaled).
        ``labels`` (optional, ``(N,)``) are used for the history's ACC only. ``partial_labels``:
        semi-supervised mode, ``(N,)`` class indices with -1 for unlabelled points. ``resume``:
        continue from ``checkpoint`` (up to ``epochs`` in all)."""
        x = torch.as_tensor(X)
        if not x.is_floating_point():
            raise TypeError(f"X must be floating point (scaled images or vectors), got {x.dtype}")
        if x.dim() not in (2, 4) or x.shape[0] < 2:
            raise ValueError(f"X must have shape (N, C, H, W) or (N, D) with N >= 2, got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("X contains NaN or Inf")
        x = x.to(self.device)
        n = x.shape[0]
        known = targets = None
        if partial_labels is not None:
            partial = torch.as_tensor(np.asarray(partial_labels), dtype=torch.int64)
            if partial.shape != (n,):
                raise ValueError(f"partial_labels must have shape ({n},), got {tuple(partial.shape)}")
            if bool((partial < -1).any()):
                raise ValueError("partial_labels must be class indices, or -1 for unlabelled points")
            partial = partial.to(self.device)
            known, targets = partial >= 0, partial
        self._augment = get_augment(self.augment_spec, tuple(x.shape[1:]))
        if self.consistency > 0 and (x.dim() != 4 or self._augment == Augment()):
            raise ValueError("consistency needs augmented images: X (N, C, H, W) and an augmentation (augment=...), "
                             f"got X of shape {tuple(x.shape)} and augment={self.augment_spec!r}")
        self.model.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.optimizer_name == "adam":
            optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        self._global = self._resolve_pseudo_labels(x, known)
        self._fingerprint = data_fingerprint(x)
        if self.ours:  # a new criterion per fit: global labels are kept for these n points
            self.criterion = SelfLabeling(self.method, **{**self._solver, "n_points": n if self._global else None})
        generator = torch.Generator().manual_seed(self.seed)
        start_epoch = 0
        if resume:
            if self.checkpoint is None:
                raise ValueError("resume=True needs checkpoint= (the file to continue from)")
            start_epoch = self._load(generator, optimizer)
        else:
            self.history = []
            for criterion in (self.criterion, self.over_criterion):
                if isinstance(criterion, SelfLabeling):
                    criterion.reset_stats()
        self.model.train()  # evaluation after each epoch puts it back in training mode
        counts = {"unconverged": self.criterion.stats["unconverged"] if self.ours else 0, "labels": None}

        def step(idx):
            out = self._views(x[idx], generator, clean=self.consistency > 0)
            batch_known = None if known is None else known[idx]
            batch_targets = None if targets is None else targets[idx][batch_known]
            parts = []  # the main head's losses, then the overclustering head's
            for over, log_p in enumerate(out if self.overcluster else (out,)):
                log_sigma, extra = self._predictions(log_p)
                part, labels_used = self._step_loss(log_sigma, batch_known, batch_targets,
                                                    self._head_weight(bool(over)), index=idx, over=bool(over))
                parts.append(part if extra is None else part + extra)
                if not over:
                    y = labels_used
            losses = parts[0] if len(parts) == 1 else parts[0] + parts[1]
            if y is not None:
                used = torch.stack([torch.bincount(p, minlength=y.shape[-1]) for p in y.argmax(-1)]).cpu()
                counts["labels"] = used if counts["labels"] is None else counts["labels"] + used
            return losses

        def end_epoch(epoch, totals, seconds):
            entry = {"epoch": epoch + 1, "loss": float(totals.min()), "head_losses": totals.tolist(), "seconds": seconds}
            if self.ours:
                unconverged = self.criterion.stats["unconverged"]
                entry.update(unconverged_solves=unconverged - counts["unconverged"],
                             label_clusters=[int((c > 0).sum()) for c in counts["labels"]])
                counts.update(unconverged=unconverged, labels=None)
            entry.update(self._evaluate(x, labels))
            best = int(np.argmin(entry["head_losses"]))
            shown = {"loss": entry["loss"], "empty": entry["empty_clusters"][best]}
            if "acc" in entry:
                shown["acc"] = entry["acc"][best]
            return entry, shown

        loop = EpochLoop(f"SelfLabelingTrainer({self.method})", optimizer, n, batch_size=self.batch_size,
                         device=self.device, hint=f"lower lr (now {self.lr:g})", verbose=self.verbose,
                         checkpoint=None if self.checkpoint is None else lambda done: self._save(generator, optimizer, done),
                         checkpoint_every=self.checkpoint_every)
        loop.run(step, self.epochs, generator, start=start_epoch, end_epoch=end_epoch, history=self.history)
        self.objectives = self.objective(x)
        self.selected = int(np.argmin(self.objectives))
        if hasattr(self.model, "select"):
            self.model.select(self.objectives)
        return self

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, X) -> torch.Tensor:
        """``(H, N, K)`` logits of every sub-head, eval mode, no augmentation, in blocks."""
        x = torch.as_tensor(X).to(self.device)
        was = self.model.training
        self.model.eval()
        try:
            return torch.cat([self._logits(x[i:i + self.eval_batch_size]) for i in range(0, x.shape[0], self.eval_batch_size)], 1)
        finally:
            self.model.train(was)

    def _evaluate(self, x: torch.Tensor, labels) -> dict:
        logits = self.logits(x)
        k = logits.shape[-1]
        predicted = logits.argmax(-1).cpu()
        sigma_bar = torch.softmax(logits.double(), -1).mean(1)
        out = {"empty_clusters": [int((torch.bincount(p, minlength=k) == 0).sum()) for p in predicted],
               "entropy_of_mean": [float(-(torch.special.xlogy(s, s)).sum()) for s in sigma_bar]}
        if labels is not None:
            out["acc"] = [clustering_accuracy(np.asarray(labels), p.numpy()) for p in predicted]
        return out

    @torch.no_grad()
    def objective(self, X) -> list[float]:
        """Each sub-head's objective on all of ``X`` (no augmentation, eval mode): pseudo-labels
        solved on all the points, then the loss (the margin term included): the label-free
        criterion that selects a sub-head."""
        logits = self.logits(X)
        if self.method == "iic":  # the loss of each row against one seeded augmentation of it
            x = torch.as_tensor(X).to(self.device)
            generator = torch.Generator().manual_seed(self.seed)
            shifted = self.logits(torch.cat([self._augment(x[i:i + self.eval_batch_size], generator)
                                             for i in range(0, x.shape[0], self.eval_batch_size)]))
            losses = iic_loss(torch.log_softmax(logits, -1), torch.log_softmax(shifted, -1))
        elif self.ours:  # per-problem labels on all points, also after global training
            criterion = SelfLabeling(self.method, **self._solver) if self._global else self.criterion
            losses = criterion(logits, reduction="none")
        else:
            losses = self.criterion(logits, None, reduction="none")
        weight = self._head_weight()
        if self.gamma > 0:
            losses = losses + self.gamma * weight.pow(2).sum((1, 2))
        return [float(v) for v in losses]


__all__ = ["SelfLabelingTrainer"]
