"""Set-up of the Triton server that runs here: the pip-bundled ``tritonserver`` in a venv.

What runs where: ``tritonserver`` (C++, from the ``nvidia-pytriton`` 0.7.0 wheel, Triton 2.51,
Python backend only) and the Python-backend stub processes that run the model.py files of the
repository (ONNX Runtime tile model, the frame model's tiler) run in a venv made from the Debian
system Python 3.11 (``/usr/bin/python3``): the bundled stub is linked against that libpython, so
its standard library must match. The toolkit itself (export, evaluate, the Triton client backend)
runs in your normal environment and talks to the server over HTTP on 127.0.0.1.

Everything is cached under ``~/.cache/nonlocalnet-deploy`` (``NLNET_TRITON_HOME`` overrides it);
``setup_env()`` is idempotent (a marker file records the pinned packages it installed).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runtime.errors import ToolkitError

PINS = ("nvidia-pytriton==0.7.0", "tritonclient==2.73.0", "numpy<2", "onnxruntime==1.32.0")
PY_VERSION = "3.11"


def home() -> Path:
    return Path(os.environ.get("NLNET_TRITON_HOME", Path.home() / ".cache" / "nonlocalnet-deploy"))


def system_python() -> str:
    return os.environ.get("NLNET_TRITON_PYTHON", "/usr/bin/python3")


@dataclass(frozen=True)
class TritonEnv:
    """Paths of a set-up Triton environment."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "triton-venv" / "bin" / "python"

    @property
    def server_dir(self) -> Path:
        return self.root / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.server_dir / "backends"

    @property
    def site(self) -> Path:
        return self.root / "triton-venv" / "lib" / f"python{PY_VERSION}" / "site-packages"

    def process_env(self) -> dict[str, str]:
        """Environment of the server: bundled libraries, the venv's python first on PATH."""
        env = dict(os.environ)
        libs = str(self.site / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["PATH"] = str(self.python.parent) + ":" + env.get("PATH", "")
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        return env


def _marker(root: Path) -> Path:
    return root / "triton-ready.json"


def find_env() -> TritonEnv | None:
    """The set-up environment, or None when ``setup_env()`` has not (completely) run."""
    root = home()
    try:
        ok = json.loads(_marker(root).read_text()).get("pins") == list(PINS)
    except (OSError, ValueError):
        return None
    env = TritonEnv(root)
    return env if ok and env.binary.is_file() and env.python.is_file() else None


def require_env() -> TritonEnv:
    env = find_env()
    if env is None:
        raise ToolkitError(f"the Triton server is not set up under {home()}",
                           fix="run `python -m runtime.serve --setup` once (needs PyPI and /usr/bin/python3 3.11)")
    return env


def _check_system_python(python: str) -> None:
    if not Path(python).is_file():
        raise ToolkitError(f"system Python {python} not found", expected=f"Debian's python{PY_VERSION}",
                           fix="apt-get install python3 python3-venv (or set NLNET_TRITON_PYTHON)")
    probe = subprocess.run([python, "-c", "import sys, sysconfig, venv, ensurepip; "
                            "print('%d.%d' % sys.version_info[:2], sysconfig.get_config_var('LDLIBRARY'))"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise ToolkitError(f"{python} cannot make a venv", found=probe.stderr.strip().splitlines()[-1:],
                           fix="apt-get install python3-venv")
    version = probe.stdout.split()[0]
    if version != PY_VERSION:
        raise ToolkitError(f"{python} is Python {version}; the bundled Triton Python-backend stub needs its "
                           f"libpython{PY_VERSION}", expected=PY_VERSION, found=version,
                           fix=f"point NLNET_TRITON_PYTHON at a system python{PY_VERSION} with libpython")


def setup_env(log: Callable[[str], None] = print, force: bool = False) -> TritonEnv:
    """Create (or reuse) the venv and the server directory; returns the environment."""
    found = None if force else find_env()
    if found is not None:
        log(f"Triton environment ready: {found.root}")
        return found
    root = home()
    env = TritonEnv(root)
    python = system_python()
    _check_system_python(python)
    root.mkdir(parents=True, exist_ok=True)
    _marker(root).unlink(missing_ok=True)
    log(f"creating venv {env.python.parent.parent} from {python}")
    _run([python, "-m", "venv", "--clear", str(env.python.parent.parent)], "venv creation")
    log("installing " + " ".join(PINS))
    _run([str(env.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS], "pip install")
    _install_server(env)
    with open(_marker(root), "w") as f:
        json.dump({"pins": list(PINS), "python": python}, f)
    log(f"Triton environment ready: {root}")
    return env


def _install_server(env: TritonEnv) -> None:
    """Copy the wheel's tritonserver tree and put the Python-version stub where the backend finds it."""
    bundled = env.site / "pytriton" / "tritonserver"
    stub = bundled / "python_backend_stubs" / PY_VERSION / "triton_python_backend_stub"
    if not stub.is_file():
        raise ToolkitError("the nvidia-pytriton wheel has no Python-backend stub for Python " + PY_VERSION,
                           found=str(stub))
    if env.server_dir.exists():
        shutil.rmtree(env.server_dir)
    shutil.copytree(bundled, env.server_dir, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
    shutil.copy2(stub, env.backends / "python" / "triton_python_backend_stub")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ToolkitError(f"Triton set-up: {what} failed", found=" | ".join(tail),
                           fix="check network access to PyPI and that python3-venv is installed")


def parse_configs(paths: list[Path]) -> list[dict]:
    """Parse each config.pbtxt with Triton's model_config.proto (tritonclient's model_config_pb2, run in
    the Triton venv); returns them as JSON dicts (protobuf field names). ToolkitError on a parse error."""
    env = require_env()
    code = ("import sys, json\nfrom google.protobuf import json_format, text_format\n"
            "from tritonclient.grpc import model_config_pb2 as mc\nout = []\n"
            "for p in sys.argv[1:]:\n"
            "    c = text_format.Parse(open(p).read(), mc.ModelConfig())\n"
            "    out.append(json_format.MessageToDict(c, preserving_proto_field_name=True))\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([str(env.python), "-c", code, *map(str, paths)], capture_output=True, text=True,
                          env=env.process_env())
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise ToolkitError("a config.pbtxt does not parse with Triton's model_config.proto", found=last)
    return json.loads(proc.stdout)
