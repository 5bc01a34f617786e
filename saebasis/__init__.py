"""saebasis: steering and adaptors in the basis of a sparse autoencoder.

The Python API (saebasis.api) is exported here and imported on first use, so `import saebasis.core.hooks` and the
CLI's start-up stay light:

    import saebasis as sb
    model, tok = sb.load_model("smollm2")
    sae = sb.load_sae("builtin:smollm2-l12")
    steer = sb.train("sae_bias", model, tok, sae, data="sentiment", max_steps=36)
"""

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "LatentReading",
    "Steering",
    "__version__",
    "compare",
    "concept",
    "concepts",
    "fit",
    "generate",
    "load",
    "load_model",
    "load_sae",
    "methods",
    "train",
]


def __getattr__(name: str):
    if name in __all__:
        from saebasis import api

        return getattr(api, name)
    raise AttributeError(f"module 'saebasis' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
