"""cnn-train: config-driven training of classic CNNs."""

__version__ = "0.1.0"
