"""Warnings that point at the user's line: the first frame outside entclust, torch and
scikit-learn (a warning raised inside ``criterion(logits)`` would otherwise name torch's
``nn/modules/module.py``), the warnings a fit says of itself, and the check that says them."""
from __future__ import annotations

import os
import sys
import warnings

import torch

_INSIDE = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                for m in (sys.modules[__name__.rpartition(".")[0]], torch))


# libraries whose frames are passed over too: scikit-learn's fit_predict, Pipeline and
# cross-validation call our fit (matched by module name: importing them here would be slow)
_LIBRARIES = ("sklearn.", "joblib.")


def _inside(frame) -> bool:
    return (os.path.abspath(frame.f_code.co_filename).startswith(_INSIDE)
            or str(frame.f_globals.get("__name__", "")).startswith(_LIBRARIES))


def warn_user(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the nearest caller outside the package,
    torch and scikit-learn."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn_user
    while frame is not None and _inside(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


class DivergenceWarning(RuntimeWarning):
    """A fit whose objective rose during training (the SGD steps diverge: lower the learning
    rate). ``entclust fit`` and ``entclust deep`` turn it into exit status 3."""


class EmptyClusterWarning(RuntimeWarning):
    """A fit that ended with clusters no point is assigned to."""


RISE = 0.1  # a final epoch's loss this share above the first epoch's is a rising objective


def say_fit_failures(who: str, sizes, losses, hint_empty: str, hint_rise: str) -> None:
    """Warn (at the user's line) of empty clusters (``sizes``: points per cluster) and of an
    objective that rose from the first epoch to the last by more than ``RISE`` of its size
    (``losses``: one per epoch; none checked when empty)."""
    empty = int((sizes == 0).sum())
    if empty:
        warn_user(f"{who}: {empty} of {len(sizes)} clusters are empty after the fit; {hint_empty}", EmptyClusterWarning)
    if len(losses) >= 2 and losses[-1] > losses[0] + RISE * abs(losses[0]):
        warn_user(f"{who}: the objective rose during training, from {losses[0]:.4g} in epoch 1 to {losses[-1]:.4g} "
                  f"in epoch {len(losses)}: the steps diverge; {hint_rise}", DivergenceWarning)
