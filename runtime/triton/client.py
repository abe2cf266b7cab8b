"""A small Triton HTTP/REST client (KServe v2 protocol + Triton's binary-tensor extension).

Standard library only (``http.client``): the toolkit's runtime stays installable on a Jetson or a
bare client without ``tritonclient`` and its gevent stack. One :class:`TritonHTTP` per thread
(it keeps one keep-alive connection). Every failure becomes a :class:`ToolkitError` that says what
the server answered, or that no server answered.
"""
from __future__ import annotations

import http.client
import json
import socket
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from runtime.errors import ToolkitError

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8, "INT8": np.int8,
          "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
TRITON_TYPES = {np.dtype(v).str: k for k, v in DTYPES.items()}
ConnectionFailure = (ConnectionError, socket.timeout, http.client.HTTPException, OSError)


def triton_dtype(dtype: Any) -> str:
    """numpy dtype -> Triton datatype name (``FP32``, ``UINT8``...)."""
    key = np.dtype(dtype).str
    if key not in TRITON_TYPES:
        raise ToolkitError(f"numpy dtype {np.dtype(dtype)} has no Triton datatype",
                           expected=", ".join(DTYPES))
    return TRITON_TYPES[key]


def split_url(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:8000`` / ``127.0.0.1:8000`` -> ``("127.0.0.1", 8000)``; no port means 8000,
    a port outside 1..65535 (0 included) is an error, never silently 8000."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "triton") or not parts.hostname:
        raise ToolkitError(f"bad Triton URL {url!r}", expected="http://HOST:PORT, e.g. http://127.0.0.1:8000")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        return parts.hostname, 8000
    if not 1 <= port <= 65535:
        raise ToolkitError(f"bad port in Triton URL {url!r}", expected="1..65535 (no port: 8000)")
    return parts.hostname, port


class TritonHTTP:
    """Requests to one Triton server: health, model config, inference with binary tensors."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.host, self.port = split_url(url)
        self.url = f"http://{self.host}:{self.port}"
        self.timeout = float(timeout)
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=body, headers=headers or {})
            resp = self._conn.getresponse()
            data = resp.read()
        except ConnectionFailure as exc:
            self.close()
            raise ToolkitError(f"no answer from the Triton server at {self.url} ({method} {path})",
                               found=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                               fix="start it with `python -m runtime.serve REPO --http-port PORT`, "
                                   "or check --url") from None
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def get_json(self, path: str) -> Any:
        status, _headers, data = self._request("GET", path)
        if status != 200:
            raise ToolkitError(f"Triton at {self.url} answered {status} to GET {path}", found=_error_text(data))
        return json.loads(data or b"{}")

    def is_ready(self, model: str | None = None) -> bool:
        """True when the server (and ``model``, if given) answers ready; False when it does not answer."""
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            return self._request("GET", path)[0] == 200
        except ToolkitError:
            return False

    def config(self, model: str) -> dict[str, Any]:
        status, _headers, data = self._request("GET", f"/v2/models/{model}/config")
        if status != 200:
            index = self.get_json_or_empty("/v2/models/stats")
            names = sorted({m.get("name", "") for m in index.get("model_stats", [])})
            raise ToolkitError(f"Triton at {self.url} does not serve a model {model!r}", found=_error_text(data),
                               expected=", ".join(names) or None,
                               fix="pass --triton-model with one of the served models")
        return json.loads(data)

    def get_json_or_empty(self, path: str) -> dict[str, Any]:
        try:
            return self.get_json(path)
        except ToolkitError:
            return {}

    def infer(self, model: str, inputs: Sequence[tuple[str, np.ndarray]], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """One inference: named numpy inputs in, the named outputs as numpy arrays out."""
        arrays = [(name, np.ascontiguousarray(a)) for name, a in inputs]
        header = {"inputs": [{"name": name, "shape": list(a.shape), "datatype": triton_dtype(a.dtype),
                              "parameters": {"binary_data_size": a.nbytes}} for name, a in arrays],
                  "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs]}
        head = json.dumps(header).encode()
        body = b"".join([head] + [a.tobytes() for _name, a in arrays])
        status, headers, data = self._request(
            "POST", f"/v2/models/{model}/infer", body,
            {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
        if status != 200:
            raise ToolkitError(f"Triton model {model!r} rejected the request (HTTP {status})", found=_error_text(data),
                               fix="send what the model's config.pbtxt declares (names, datatypes, dims)")
        return _parse_response(headers, data)


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", data[:300].decode(errors="replace")))
    except (ValueError, AttributeError):
        return data[:300].decode(errors="replace")


def _parse_response(headers: dict[str, str], data: bytes) -> dict[str, np.ndarray]:
    size = int(headers.get("inference-header-content-length", len(data)))
    reply = json.loads(data[:size])
    out, offset = {}, size
    for item in reply.get("outputs", []):
        dtype = np.dtype(DTYPES[item["datatype"]])
        nbytes = item.get("parameters", {}).get("binary_data_size")
        if nbytes is None:    # the server answered in JSON
            out[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
            continue
        out[item["name"]] = np.frombuffer(data, dtype, int(nbytes) // dtype.itemsize, offset).reshape(item["shape"])
        offset += int(nbytes)
    return out
