"""Post-hoc interpretation: rank the latents an intervention changed, and gather evidence for each."""
