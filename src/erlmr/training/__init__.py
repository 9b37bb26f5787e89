"""Training: the loop, its builders, run folders, checkpoints, distributed data parallelism."""
