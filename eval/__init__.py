"""tgdp.eval: embeddings, zero-shot retrieval and attention probing."""
