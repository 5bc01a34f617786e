"""Agreement of two published leaderboards over the same methods and concepts (e.g. fp32 vs bf16).

The code is saebasis/experiments/compare_boards.py, whose docstring has the usage; this script runs its `main`."""

from saebasis.experiments.compare_boards import main

if __name__ == "__main__":
    main()
