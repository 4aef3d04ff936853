"""Training the project's own small decoder LMs: corpus, tokenizer, training loop."""
