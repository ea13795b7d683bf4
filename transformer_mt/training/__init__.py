"""Training: the trainer, its learning-rate schedule, the loss, the weights' moving average, starting from a model,
run directories, data parallelism, metrics and plots."""
