"""The SAE's lifecycle: the model-written corpus, its activation cache, SAE training and quality."""
