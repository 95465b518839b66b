"""Serving runtime: onnxruntime, tokenizers, numpy, hnswlib and the ASGI app. Never torch."""
