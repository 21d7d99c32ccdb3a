"""slmc.runtime: load a verified bundle and generate text with ONNX Runtime.

Imports neither torch, transformers, hydra nor jinja2: a device gets only
onnxruntime, numpy and tokenizers (a test enforces this boundary).
"""
