"""Evaluation: perplexity on held-out text (more metrics and baselines land here)."""
