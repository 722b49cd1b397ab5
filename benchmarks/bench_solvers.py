"""The solver benchmark; the code lives in ``entclust.cli.bench`` so that ``entclust bench`` runs it
after a plain install. ``python benchmarks/bench_solvers.py --help`` for the options."""
import sys

from entclust.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
