"""The training loop, its configuration, checkpoints and batching."""
