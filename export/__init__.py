"""Export: PyTorch NonLocalNet -> static-crop ONNX -> FP16 / INT8 ONNX artifacts -> TensorRT engines.

Entry points: ``export/to_onnx.py`` (FP32 ONNX), ``export/to_trt.py`` (the whole pipeline CLI),
``export/benchmark.py``. Python API: :func:`export.to_onnx.export_fp32`,
:func:`export.precision.convert_fp16`, :func:`export.pipeline.make_fp16` / ``make_int8``,
:func:`export.trt_builder.build_engine`. Nothing in ``runtime/`` imports this package.
"""
