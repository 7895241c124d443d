"""Training without Ray: the losses, the optimisers, gradient averaging across workers, the epoch
loop and the run directory's checkpoints."""
