"""Triton Python-backend frame model (copied as ``model.py``): whole RGB frames in, label maps out.

It runs the toolkit's own tiler (``runtime/`` copied beside this file, numpy only) and sends each
batch of tiles to the tile model through BLS (business logic scripting), so concurrent frames'
tiles meet in the tile model's dynamic batcher. Parameters: ``tile_model``, ``stride`` (HxW or
empty for the toolkit default) and ``nonlocalnet`` (the artifact metadata).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from runtime.artifact import ArtifactMeta  # noqa: E402
from runtime.errors import ToolkitError  # noqa: E402
from runtime.tiling import Tiler  # noqa: E402

NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


class TileModel:
    """The tiler's backend contract, answered by the tile model through a BLS request."""

    name = "triton-bls"

    def __init__(self, tile_io, meta):
        self.model = tile_io["model"]
        self.meta = meta
        self.num_classes = meta.num_classes
        self.output_kind = meta.output
        self.input_name = tile_io["input_name"]
        self.output_name = tile_io["output_name"]
        self.dtype = NUMPY_TYPES.get(tile_io["input_type"], np.float32)
        max_batch = int(tile_io["max_batch_size"])
        self.static_batch = max_batch == 0
        self.input_shape = (max_batch or meta.batch, 3, meta.crop[0], meta.crop[1])

    def __call__(self, batch):
        request = pb_utils.InferenceRequest(
            model_name=self.model, requested_output_names=[self.output_name],
            inputs=[pb_utils.Tensor(self.input_name, np.ascontiguousarray(batch.astype(self.dtype, copy=False)))])
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"tile model {self.model}: {response.error().message()}")
        out = pb_utils.get_output_tensor_by_name(response, self.output_name).as_numpy()
        return out.astype(np.float32 if self.output_kind == "logits" else np.int32, copy=False)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        meta = ArtifactMeta.from_dict(json.loads(params["nonlocalnet"]))
        self.tiles = TileModel(json.loads(params["tile_io"]), meta)
        stride = params.get("stride") or ""
        self.tiler = Tiler(stride=tuple(int(v) for v in stride.split("x")) if stride else None)

    def execute(self, requests):
        responses = []
        for request in requests:
            frame = pb_utils.get_input_tensor_by_name(request, "frame").as_numpy()
            try:
                labels = self.tiler.labels(self.tiles, frame)
            except (ToolkitError, pb_utils.TritonModelException) as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("labels", labels)]))
        return responses
