"""flatgen: train generative models toward flat minima and measure what flatness buys."""

__version__ = "0.1.0"
