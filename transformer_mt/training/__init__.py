"""Training: the trainer (the loop) and its collaborators: the run's data, checkpoints and resuming, validation,
when to stop, the learning-rate schedule, the loss, the weights' moving average, starting from a model, run
directories, data parallelism, metrics and plots."""
