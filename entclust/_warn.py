"""Warnings that point at the user's line: the first frame outside entclust and torch (a warning
raised inside ``criterion(logits)`` would otherwise name torch's ``nn/modules/module.py``)."""
from __future__ import annotations

import os
import sys
import warnings

import torch

_INSIDE = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                for m in (sys.modules[__name__.rpartition(".")[0]], torch))


def warn_user(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the nearest caller outside the package and torch."""
    frame, level = sys._getframe(1), 2  # stacklevel 2: the caller of warn_user
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INSIDE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
