"""Serving engines: HuggingFace transformers (hf.py); vLLM plugin later."""
