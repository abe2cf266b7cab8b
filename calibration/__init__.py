"""INT8 calibration (torch-free): the cached calibration set cut by the runtime tiler
(:mod:`calibration.calibset`), Q/DQ quantisation in the TensorRT and ONNX-Runtime-CPU layouts
(:mod:`calibration.qdq`), the legacy TensorRT <= 10 entropy calibrator
(:mod:`calibration.trt_calibrator`) and the graph helpers both precision steps share
(:mod:`calibration.graph`)."""
