"""Sparse parity and a plain ReLU MLP as a groktransfer task family and model (an example plugin)."""
