"""Post-hoc interpretation of a saved run: which SAE latents it changed, and the evidence about each.

One idea per module: rank (scores + norm explained), texts (corpus source), cache (sparse latent
activations on disk), contexts (max-activating contexts), lens (logit lens), factor (SVD / NMF of the
activation pattern), explain (automatic explanation), plots + render (HTML), report (`interpret(cfg)`).
"""
