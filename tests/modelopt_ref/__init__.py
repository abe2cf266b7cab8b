"""Reference INT8 Q/DQ placement from NVIDIA ModelOpt's ONNX quantizer, for layer-by-layer comparison.

* :mod:`.venv` -- ``ensure_venv()``: a cached venv with torch (CPU) + ``nvidia-modelopt[onnx]`` 0.47.
* :mod:`.quantize` -- ``run_modelopt(fp32_onnx, calib, out)``: ModelOpt INT8 PTQ in that venv.
* :mod:`.compare` -- ``quantized_inputs`` / ``compare`` / ``format_table`` / ``counts`` (``onnx`` only).
* ``python -m tests.modelopt_ref FP32.onnx OURS.onnx [...]`` prints the tables; NOTES.md holds the
  ModelOpt placement rules read from its source.
"""
