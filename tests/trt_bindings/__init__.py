"""Real TensorRT / cuda-python bindings without a GPU: wheels from PyPI + stub C libraries, cached.

``python3 -m tests.trt_bindings`` prints the version matrix; tests/test_trt_bindings.py asserts it.
"""
