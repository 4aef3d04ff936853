"""Running folded FFNs: the reference PyTorch path and the module installed into models."""
