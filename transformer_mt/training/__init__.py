"""Training: the trainer, its learning-rate schedule, run directories, data parallelism, the loss, metrics and plots."""
