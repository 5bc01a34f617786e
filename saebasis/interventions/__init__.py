"""Every steering method behind one interface; importing this package fills the registry."""

from saebasis.interventions import (  # noqa: F401  # noqa: F401  (peers: their libraries are optional, needed only to build one (loreft: to train one))
    caa,
    clamp,
    diffmean,
    lora,
    loreft,
    pca,
    residual,
    sae_adaptor,
    sae_bias,
    sae_latent,
    sae_targeted,
    sara,
)
from saebasis.interventions.base import REGISTRY, Intervention, InterventionConfig, build, register

__all__ = ["REGISTRY", "Intervention", "InterventionConfig", "build", "register"]
