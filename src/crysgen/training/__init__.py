"""Training loops (PyTorch Lightning), run configs and data modules."""
