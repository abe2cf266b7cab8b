"""Triton Inference Server: model-repository writer, server process, HTTP client (no torch).

``repo`` writes a model repository from the toolkit's artifacts (tile models plus a frame-level
Python-backend model that runs the toolkit's tiler around the tile model through BLS); ``env`` sets
up the pip-bundled ``tritonserver`` (nvidia-pytriton wheel) in a venv made from the system Python;
``server`` starts and stops it on 127.0.0.1; ``client`` speaks Triton's HTTP/REST (KServe v2)
protocol with binary tensors using only the standard library.
"""
