"""Trainer: models, metrics, distribution strategy, the training loop, export and reports."""
