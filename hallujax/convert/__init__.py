"""Loaders for public PyTorch checkpoints."""
