"""The package's one training loop, and its progress reports.

:class:`EpochLoop` runs epochs of shuffled mini-batches with one optimiser step per batch on the
sum of the batch's losses (B independent problems, such as side-by-side restarts, sub-heads or
ensemble members, each get the gradient of their own loss), stops with a clear error when the
loss stops being finite, writes one history entry per epoch, reports progress, and writes
checkpoints. :class:`~entclust.EntropyClustering` (one head, its restarts side by side, its
global pseudo-labels), :class:`~entclust.deep.SelfLabelingTrainer` and
:class:`~entclust.deep.SelectivePseudoLabelClustering` each say only what differs: the loss of a
batch, what an epoch adds to its history entry, and (SPC) how the points are split.

:class:`Progress` is how long work reports itself: a tqdm bar on a terminal, and, where the
output is a log rather than a terminal, a line per step (an epoch, a round) on standard error,
so that ``verbose`` means what it means in scikit-learn: something is printed.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

import torch


LINE_EVERY = 2.0  # seconds between two progress lines in a log
BAR_EVERY = 0.5  # seconds between two throttled notes on a bar


class Progress:
    """Progress over ``total`` steps named ``unit`` (``initial`` already done) when ``verbose``:
    a tqdm bar when standard error is a terminal, else lines on standard error, flushed
    (``desc: epoch 3/50, loss=1.234, 0.41 s``): after the first step, the last one, and at most
    one every ``LINE_EVERY`` seconds between. Silent when not ``verbose``."""

    def __init__(self, desc: str, total: int | None, *, verbose=False, unit: str = "epoch", initial: int = 0):
        self.desc, self.total, self.unit, self.done, self.initial = desc, total, unit, initial, initial
        self.bar, self.printed, self.pending = None, time.perf_counter(), None
        self.noted = self.printed
        self.lines = bool(verbose) and not _is_terminal()
        if verbose and not self.lines:
            from tqdm.auto import tqdm

            # (a pass over 10^7 points reads "4.08M/10.0M points", not its digits)
            self.bar = tqdm(desc=desc, total=total, initial=initial, unit=unit, unit_scale=(total or 0) >= 10**5)

    def update(self, seconds: float | None = None, *, steps: int = 1, **values) -> None:
        """``steps`` steps done (one by default); ``values`` are shown beside them (floats with 4
        significant digits)."""
        first = self.done == self.initial
        self.done += steps
        shown = {key: f"{value:.4g}" if isinstance(value, float) else value for key, value in values.items()}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(steps)
        elif self.lines:
            parts = [f"{self.unit} {self.done}" + (f"/{self.total}" if self.total is not None else "")]
            parts += [f"{key}={value}" for key, value in shown.items()]
            if seconds is not None:
                parts.append(f"{seconds:.2f} s")
            self.pending = f"{self.desc}: " + ", ".join(parts)
            if (first or self.done == self.total
                    or time.perf_counter() - self.printed >= LINE_EVERY):
                self._print()

    def note(self, text: str, *, throttle: bool = False) -> None:
        """Say at once what the stage is doing before its first step ends (a line in a log, the
        bar's postfix on a terminal): for a first step that takes long. ``throttle``: how far
        work within a step has come, said at most once every ``LINE_EVERY`` seconds in a log (a
        pending step's line is not held back by it)."""
        now = time.perf_counter()
        last = max(self.noted, self.printed) if self.lines else self.noted  # a log: not just after a step's line
        if throttle and now - last < (BAR_EVERY if self.bar is not None else LINE_EVERY):
            return
        self.noted = now
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        elif self.lines:
            print(f"{self.desc}: {text}", file=sys.stderr, flush=True)

    def _print(self) -> None:
        print(self.pending, file=sys.stderr, flush=True)
        self.printed, self.pending = time.perf_counter(), None

    def close(self) -> None:
        """The last step's line if it was held back (a stage that stopped early); the bar closed."""
        if self.pending is not None:
            self._print()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal() -> bool:
    """Whether a bar can be drawn: standard error is a terminal, or this is a notebook's kernel
    (tqdm.auto draws a widget there)."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def near_equal_batches(total: int, batch_size: int, device) -> Callable[[torch.Generator], Iterable[torch.Tensor]]:
    """The default split of an epoch: one shuffle of ``total`` rows into ``max(1, round(total /
    batch_size))`` near-equal batches (no tiny tail batch: batch norm needs rows, and a batch of
    a few points cannot spread over K clusters)."""
    n_batches = max(1, round(total / batch_size))

    def split(generator: torch.Generator):
        return torch.tensor_split(torch.randperm(total, generator=generator).to(device), n_batches)

    return split


class EpochLoop:
    """Epochs of mini-batches over ``total`` points.

    Args:
        name: who trains, for the progress report and errors (``"EntropyClustering('rce')"``).
        optimizer: stepped once per batch.
        total: the number of points (over all processes for a distributed fit); a batch's loss
            is recorded with the weight ``rows / total``, so an epoch's record is the mean loss.
        split: ``split(generator)`` yields the batches of one epoch as index tensors (the last
            dimension counts the rows); default :func:`near_equal_batches` of ``batch_size``.
        hint: what to try when the loss is no longer finite (appended to the error).
        verbose: progress as :class:`Progress` reports it.
        checkpoint: ``checkpoint(epochs_done)``, called every ``checkpoint_every`` epochs and
            after the last one.
    """

    def __init__(self, name: str, optimizer, total: int, *, batch_size: int | None = None, device="cpu",
                 split=None, hint: str = "", verbose=False, checkpoint: Callable[[int], None] | None = None,
                 checkpoint_every: int = 1):
        if split is None:
            split = near_equal_batches(total, batch_size, device)
        self.name, self.optimizer, self.total, self.split, self.hint = name, optimizer, total, split, hint
        self.verbose, self.checkpoint, self.checkpoint_every = verbose, checkpoint, checkpoint_every

    def run(self, step, epochs: int, generator: torch.Generator, *, start: int = 0, end_epoch=None,
            history: list | None = None, desc: str | None = None) -> list:
        """Train epochs ``start .. epochs - 1``; returns ``history`` with one entry per epoch added.

        Args:
            step: ``step(idx)`` is the batch's loss: a tensor (a scalar, or ``Tensor[B]`` for B
                problems; the sum is stepped and ``loss * rows / total`` recorded), or a pair
                ``(loss, record)`` where the record to sum over the epoch is the method's own.
            end_epoch: ``end_epoch(epoch, totals, seconds)`` makes the epoch's history entry
                from the summed records (``Tensor[B]`` or a scalar, float64 on the CPU) and the
                seconds the batches took; it may return ``(entry, shown)`` where ``shown`` is a
                dict for the progress report. Default: ``{"epoch", "loss", "seconds"}``.
        """
        history = [] if history is None else history
        progress = Progress(desc or self.name, epochs, verbose=self.verbose, initial=start)
        try:
            for epoch in range(start, epochs):
                begin = time.perf_counter()
                totals = None
                batches = self.split(generator)
                count = f"/{len(batches)}" if hasattr(batches, "__len__") else ""
                for i, idx in enumerate(batches):
                    if self.verbose and i:  # a long epoch (one pass over 10^6 points) says how far it is
                        progress.note(f"epoch {epoch + 1}/{epochs}, batch {i}{count}", throttle=True)
                    out = step(idx)
                    losses, record = out if isinstance(out, tuple) else (out, None)
                    loss = losses.sum()
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"{self.name}: the loss became {loss.item()} in epoch {epoch + 1}"
                                                 + (f"; {self.hint}" if self.hint else ""))
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    if record is None:
                        record = losses.detach().double() * idx.shape[-1] / self.total
                    record = record.detach().double().cpu()
                    totals = record if totals is None else totals + record
                seconds = time.perf_counter() - begin
                if end_epoch is None:
                    loss = float(totals.min())
                    entry, shown = {"epoch": epoch + 1, "loss": loss, "seconds": seconds}, {"loss": loss}
                else:
                    entry = end_epoch(epoch, totals, seconds)
                    entry, shown = entry if isinstance(entry, tuple) else (entry, {})
                history.append(entry)
                if self.checkpoint is not None and ((epoch + 1) % self.checkpoint_every == 0 or epoch + 1 == epochs):
                    self.checkpoint(epoch + 1)
                progress.update(seconds, **shown)
        finally:
            progress.close()
        return history


class SolveCounts:
    """The pseudo-label solves of an epoch of B restarts trained side by side, from each step's
    :class:`~entclust.SolverResult` (``criterion.last_result``): how many, how many stopped short
    of their stopping rule, and the largest certificate (:attr:`~entclust.SolverResult.gap`), per restart."""

    def __init__(self, runs: int):
        self.runs, self.seen = runs, False
        self.reset()

    def reset(self) -> None:
        self.solves = torch.zeros(self.runs, dtype=torch.int64)
        self.unconverged = torch.zeros(self.runs, dtype=torch.int64)
        self.max_gap = torch.zeros(self.runs, dtype=torch.float64)

    def add(self, result) -> None:
        if result is None:
            return
        self.seen = True
        self.solves += 1
        self.unconverged += (~torch.as_tensor(result.converged).reshape(self.runs)).cpu().long()
        gap = torch.as_tensor(result.gap).reshape(self.runs).cpu().double()
        self.max_gap = torch.maximum(self.max_gap, torch.where(torch.isfinite(gap), gap, self.max_gap))

    def entry(self, b: int) -> dict:
        if not self.seen:
            return {}
        return {"solves": int(self.solves[b]), "unconverged_solves": int(self.unconverged[b]),
                "max_gap": float(self.max_gap[b])}
