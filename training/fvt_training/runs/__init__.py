"""Training runs: configuration, losses, the training loop, run folders, cluster jobs."""
