"""Sparse and dense U-ResNets on liquid argon TPC images: simulator, data, engine, study."""

__version__ = "0.1.0"
