"""The solver benchmarks; the code lives in the package so that ``entclust bench`` runs them after
a plain install: ``python benchmarks/bench_solvers.py [solvers|kernels] [options]`` is
``entclust bench [solvers|kernels] [options]`` (``--help`` for the options)."""
import sys

from entclust.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
