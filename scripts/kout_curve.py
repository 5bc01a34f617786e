"""Score and KL against the number of latents the sparse SAE adaptor writes, and the verdict on the target.

The code is saebasis/experiments/kout_curve.py, whose docstring has the usage; this script runs its `main`."""

from saebasis.experiments.kout_curve import main

if __name__ == "__main__":
    main()
