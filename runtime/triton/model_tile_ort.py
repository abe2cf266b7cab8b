"""Triton Python-backend model (copied as ``model.py``): an ONNX tile artifact in ONNX Runtime.

For servers without Triton's onnxruntime backend (the pip-bundled tritonserver has only the Python
backend). One ``execute`` gets every request the dynamic batcher merged: their tiles are concatenated
into one ONNX Runtime call and the output is split back per request. The session is made by the
toolkit's loader (``runtime/loaders.py``, copied beside this file with the two files it needs).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runtime.loaders import SessionFromOnnx  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = SessionFromOnnx(path, threads=int(params.get("ort_threads") or 0), spin=False,
                                       flush_denormals=True)()
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            if self.batched and len(arrays) > 1:
                out = self.session.run([self.output_name], {self.input_name: np.concatenate(arrays)})[0]
                sizes = np.cumsum([a.shape[0] for a in arrays])[:-1]
                outs = np.split(out, sizes)
            else:
                outs = [self.session.run([self.output_name], {self.input_name: a})[0] for a in arrays]
        except Exception as exc:  # ORT raises its own exception types; each request gets the error
            error = pb_utils.TritonError(f"ONNX Runtime: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, o)]) for o in outs]

    def finalize(self):
        self.session = None
