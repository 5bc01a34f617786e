"""Re-export of `saebasis.judges` (the judges moved there, behind a registry); old imports keep working."""

from saebasis.judges import *  # noqa: F401,F403
from saebasis.judges import __all__  # noqa: F401
