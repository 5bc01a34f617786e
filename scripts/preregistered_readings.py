"""The pre-registered readings (a)-(c) of docs/results/sae-basis-preregistration.md on a finished board.

The code is saebasis/experiments/preregistered.py, whose docstring has the usage; this script runs its `main`."""

from saebasis.experiments.preregistered import main

if __name__ == "__main__":
    main()
