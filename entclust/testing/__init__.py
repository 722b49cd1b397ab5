"""Ground truth for the tests and the benchmarks (:mod:`.reference`). Library code never imports
this package; users may, to check their own kernels or solvers against it."""
from . import reference

__all__ = ["reference"]
