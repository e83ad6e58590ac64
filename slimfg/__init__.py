"""slimfg: per-filter attention transfer, attention-guided pruning and export for CNNs."""

__version__ = "0.1.0"
