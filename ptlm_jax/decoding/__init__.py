"""Decoding: greedy / sampling / beam search with a KV cache (`generate`) and the text-level
API over a trained workdir, a model dir or an HF checkpoint (`inference`)."""
