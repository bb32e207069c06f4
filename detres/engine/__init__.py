"""Training loop, checkpoints, distributed setup and logging."""
