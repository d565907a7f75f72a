"""Training: the step (pure, compiled or fused), the trainer, checkpoints, callbacks and data parallelism."""
