"""Training: the trainer, fine-tuning, paired datasets and region sampling, and evaluation that
runs models."""
