"""Every steering method behind one interface; importing this package fills the registry."""

from saebasis.interventions.base import REGISTRY, Intervention, InterventionConfig, build, register
from saebasis.interventions import sae_bias  # noqa: F401
from saebasis.interventions import clamp, diffmean, pca, residual, sae_adaptor, sae_latent, sara  # noqa: F401
from saebasis.interventions import sae_targeted  # noqa: F401
from saebasis.interventions import caa, lora, loreft  # noqa: F401  (peers: their libraries are optional, needed only to build one (loreft: to train one))

__all__ = ["REGISTRY", "Intervention", "InterventionConfig", "build", "register"]
