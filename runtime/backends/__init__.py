"""Backends: one contract for PyTorch, ONNX Runtime and TensorRT."""
