"""Triton backend: a tile model served by Triton Inference Server, over HTTP (no torch, no tritonclient).

Artifact string ``triton://HOST:PORT/MODEL`` (or ``url=`` + ``model=`` options). Opening it checks
that the server and model are ready and reads the model's config: input/output names and datatypes,
``max_batch_size`` and the toolkit metadata (crop, classes, mean/std, precision...) from its
``nonlocalnet`` parameter, written by ``export/to_triton.py``. A model with ``max_batch_size > 0``
takes any number of tiles up to it per call (the server's dynamic batcher merges clients); one with
0 takes exactly its static batch. Thread-safe: each calling thread gets its own HTTP connection
(the video demo runs several inference workers on one backend).
"""
from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np

from runtime.artifact import ArtifactMeta
from runtime.backends.base import Backend, as_output
from runtime.errors import ToolkitError

SCHEME = "triton://"
INPUT_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


def parse_triton_artifact(artifact: str) -> tuple[str, str]:
    """``triton://127.0.0.1:8000/model`` -> ``("http://127.0.0.1:8000", "model")``."""
    rest = artifact[len(SCHEME):] if artifact.startswith(SCHEME) else ""
    host, _, model = rest.partition("/")
    if not host or not model or "/" in model:
        raise ToolkitError(f"bad Triton artifact {artifact!r}", expected="triton://HOST:PORT/MODEL",
                           fix="e.g. triton://127.0.0.1:8000/r18os8_cityscapes_512x1024")
    return f"http://{host}", model


def triton_artifact(url: str, model: str) -> str:
    """``(http://127.0.0.1:8000, m)`` -> ``triton://127.0.0.1:8000/m``."""
    from runtime.triton.client import split_url

    host, port = split_url(url)
    return f"{SCHEME}{host}:{port}/{model}"


class TritonBackend(Backend):
    """A served tile model. Options: ``url``, ``model`` (instead of a triton:// string), ``timeout`` (s)."""

    name = "triton"

    def __init__(self, artifact: str, url: str | None = None, model: str | None = None,
                 timeout: float = 120.0) -> None:
        if url or model:
            if not (url and model):
                raise ToolkitError("the Triton backend needs both --url and --triton-model")
            artifact = triton_artifact(url, model)
        super().__init__(str(artifact))
        self.url, self.model = parse_triton_artifact(self.artifact)
        self.timeout = float(timeout)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._io: dict[str, Any] = {}
        self.static_batch = True

    def _allocate(self) -> None:
        client = self._thread_client()
        client.get_json("/v2/health/ready")          # no server -> ToolkitError with the fix
        config = client.config(self.model)
        self._meta, self._io = meta_from_config(config, self.artifact)
        self.static_batch = self._io["max_batch_size"] == 0
        if not client.is_ready(self.model):
            raise ToolkitError(f"Triton model {self.model!r} at {self.url} is not ready",
                               fix=f"see the server log; GET {self.url}/v2/models/{self.model}/ready")

    def _thread_client(self) -> Any:
        """This thread's connection (created on first use)."""
        client = getattr(self._local, "client", None)
        if client is None:
            from runtime.triton.client import TritonHTTP

            client = self._local.client = TritonHTTP(self.url, timeout=self.timeout)
            with self._lock:
                self._clients.append(client)
        return client

    def _release(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients = []
        self._local = threading.local()

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        n = self._io.get("max_batch_size") or self.meta.batch
        return (int(n), 3, self.meta.crop[0], self.meta.crop[1])

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = super().check_batch(batch)
        if not self.static_batch and batch.shape[0] > self.input_shape[0]:
            raise ToolkitError(f"{self.label} takes at most {self.input_shape[0]} tiles per call",
                               found=str(batch.shape[0]), fix="send smaller batches (runtime.tiling does)")
        return batch

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        feed = batch.astype(self._io["input_dtype"], copy=False)
        out = self._thread_client().infer(self.model, [(self._io["input_name"], feed)], [self._io["output_name"]])
        return as_output(out[self._io["output_name"]], self.output_kind)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(url=self.url, triton_model=self.model, max_batch_size=self._io.get("max_batch_size"))
        return d


def meta_from_config(config: dict[str, Any], source: str) -> tuple[ArtifactMeta, dict[str, Any]]:
    """Toolkit metadata and I/O facts from a Triton model config (JSON form)."""
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    if "nonlocalnet" not in params:
        raise ToolkitError(f"{source}: the served model carries no toolkit metadata (parameter 'nonlocalnet')",
                           fix="serve a repository written by export/to_triton.py")
    if params.get("role") == "frame":
        raise ToolkitError(f"{source} is a frame model (whole frames in, label maps out)",
                           expected="a tile model", fix=f"use the tile model {params.get('tile_model', '')!r}")
    meta = ArtifactMeta.from_dict(json.loads(params["nonlocalnet"]))
    inp, out = config["input"][0], config["output"][0]
    if inp["data_type"] not in INPUT_TYPES:
        raise ToolkitError(f"{source}: unsupported input datatype", expected=", ".join(INPUT_TYPES),
                           found=inp["data_type"])
    io = {"input_name": inp["name"], "output_name": out["name"], "input_dtype": INPUT_TYPES[inp["data_type"]],
          "max_batch_size": int(config.get("max_batch_size", 0))}
    return meta, io
