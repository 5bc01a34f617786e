"""Training: interventions (Lightning), SAEs (sae-lens runner), closed-form baselines."""
