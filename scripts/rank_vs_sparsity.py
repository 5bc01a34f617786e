"""Rank vs sparsity at matched parameter budgets: validation loss vs parameters per family, and a verdict.

The code is saebasis/experiments/rank_vs_sparsity.py, whose docstring has the usage; this script runs its `main`."""

from saebasis.experiments.rank_vs_sparsity import main

if __name__ == "__main__":
    main()
