"""Publish a leaderboard's pages into docs/: re-render them from its results with the current code, copy them.

The code is saebasis/experiments/publish_board.py, whose docstring has the usage; this script runs its `main`."""

from saebasis.experiments.publish_board import main

if __name__ == "__main__":
    main()
