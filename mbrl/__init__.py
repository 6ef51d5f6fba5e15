"""mbrl: model-based reinforcement learning and world models."""
__version__ = "0.1.0"
