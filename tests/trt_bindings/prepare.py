"""Download, cache and prepare the real bindings wheels for the subprocess checks.

* TensorRT: the ``tensorrt-bindings`` (8.6.1) / ``tensorrt-cu12-bindings`` (10.x, 11.x) wheels hold
  the real pybind11 module (~1.3 MB). Its package is installed as ``tensorrt`` (what the
  ``tensorrt`` meta wheel provides) and the libraries it links against are built from
  stub_libs.c with the soname of that major version.
* cuda-python: 12.6.0 (``cuda.cudart`` only) and cuda-bindings 13.5.0 (``cuda.bindings.runtime``
  only; needs cuda-pathfinder), installed with ``pip install --target``.

Cache: ``$NONLOCALNET_TRT_BINDINGS_CACHE`` or ``~/.cache/nonlocalnet/trt-bindings``, one folder per
package, version and Python tag, written under a temporary name and renamed when complete.
Network: PyPI only, through pip (its own HTTP cache makes a fresh cache folder cheap).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE_ENV = "NONLOCALNET_TRT_BINDINGS_CACHE"
PY_TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"
# version -> pip requirement; 10.3 is JetPack 6.1/6.2's TensorRT, the others the newest of each major
TENSORRT = {"8.6.1": "tensorrt-bindings==8.6.1", "10.3.0": "tensorrt-cu12-bindings==10.3.0",
            "10.16.1.11": "tensorrt-cu12-bindings==10.16.1.11", "11.4.0.106": "tensorrt-cu12-bindings==11.4.0.106"}
CUDA_PYTHON = {"12.6.0": ["cuda-python==12.6.0"], "13.5.0": ["cuda-bindings==13.5.0", "cuda-pathfinder==1.9.1"]}
STUB_LIBS = {8: ("nvinfer", "nvonnxparser", "nvinfer_plugin", "nvparsers")}
DEFAULT_LIBS = ("nvinfer", "nvonnxparser", "nvinfer_plugin")


class Unavailable(Exception):
    """The bindings cannot be prepared here (no network to PyPI, no wheel for this Python, no compiler)."""


@dataclass
class BindingsEnv:
    name: str
    site: Path
    lib: Path | None = None

    def environ(self, extra: list["BindingsEnv"] = ()) -> dict[str, str]:
        envs = [self, *extra]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(e.site) for e in envs] + [str(REPO)])
        libs = [str(e.lib) for e in envs if e.lib is not None]
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        return env


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nonlocalnet" / "trt-bindings")


def _pip_install(requirements: list[str], target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-warn-script-location", "--target", str(target), *requirements]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"pip install {' '.join(requirements)} timed out") from None
    if proc.returncode != 0:
        tail = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("WARNING")][-1:]
        raise Unavailable(f"pip install {' '.join(requirements)} failed ({PY_TAG}): {' '.join(tail)}")


def _build_stubs(major: int, lib: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise Unavailable("no C compiler (cc/gcc) to build the TensorRT stub libraries")
    lib.mkdir(parents=True)
    for name in STUB_LIBS.get(major, DEFAULT_LIBS):
        soname = f"lib{name}.so.{major}"
        proc = subprocess.run([cc, "-shared", "-fPIC", "-O1", f"-Wl,-soname,{soname}", "-o", str(lib / soname),
                               str(HERE / "stub_libs.c")], capture_output=True, text=True)
        if proc.returncode != 0:
            raise Unavailable(f"{cc} could not build {soname}: {proc.stderr.strip()[-300:]}")


def _prepared(name: str, build: Any) -> Path:
    """The cache folder ``name``, built by ``build(tmp_folder)`` on first use (atomic rename)."""
    final = cache_root() / f"{name}-{PY_TAG}"
    if (final / "READY").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    try:
        build(tmp)
        (tmp / "READY").write_text(json.dumps({"name": name, "python": PY_TAG}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError:
        if not (final / "READY").is_file():      # another process finished it meanwhile
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def prepare_tensorrt(version: str) -> BindingsEnv:
    """The real ``tensorrt`` module of ``version`` over stub libraries (raises Unavailable)."""
    major = int(version.split(".")[0])

    def build(tmp: Path) -> None:
        _pip_install([TENSORRT[version]], tmp / "wheel")
        (tmp / "site").mkdir()
        os.replace(tmp / "wheel" / "tensorrt_bindings", tmp / "site" / "tensorrt")
        _build_stubs(major, tmp / "lib")

    root = _prepared(f"tensorrt-{version}", build)
    return BindingsEnv(f"tensorrt {version}", root / "site", root / "lib")


def prepare_cuda(version: str) -> BindingsEnv:
    """cuda-python ``version`` installed alone (no driver, no GPU here) (raises Unavailable)."""
    root = _prepared(f"cuda-python-{version}", lambda tmp: _pip_install(CUDA_PYTHON[version], tmp / "site"))
    return BindingsEnv(f"cuda-python {version}", root / "site")


def run_check(module: str, env: BindingsEnv, extra: list[BindingsEnv] = (), timeout: float = 300) -> dict:
    """Run ``python -m module`` with ``env`` (+ ``extra``) and return the JSON of its last line."""
    proc = subprocess.run([sys.executable, "-m", module], cwd=str(REPO), env=env.environ(list(extra)),
                          capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"{module} with {env.name} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])
