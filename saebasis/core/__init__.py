"""The ground floor: model and SAE loading, hooks, activations, generation, the frozen stack."""
