"""saebasis: steering and adaptors in the basis of a sparse autoencoder."""

__version__ = "0.1.0"
