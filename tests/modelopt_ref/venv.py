"""A cached virtual environment that holds NVIDIA ModelOpt's ONNX quantizer (CPU only).

Location: ``$NONLOCALNET_MODELOPT_CACHE`` or ``~/.cache/nonlocalnet/modelopt-venv``. It is built once:
``torch==2.13.0`` first (the pin resolves to the local CPU wheel; a plain ``torch`` would pull the
CUDA build), then ``nvidia-modelopt[onnx]==0.47.*`` (which brings onnxruntime-gpu and its own onnx).
A ``.complete`` file marks a finished venv; a folder without it is a half-made venv and is rebuilt.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE_ENV = "NONLOCALNET_MODELOPT_CACHE"
TORCH = "torch==2.13.0"
MODELOPT = "nvidia-modelopt[onnx]==0.47.*"
MARKER = ".complete"
LOG_NAME = "install.log"
PIP_TIMEOUT_S = 3600


class ModelOptUnavailable(Exception):
    """ModelOpt cannot be installed here (no registry, no wheel for this Python, pip failed)."""


def venv_dir() -> Path:
    """The venv's folder: ``$NONLOCALNET_MODELOPT_CACHE`` or ``~/.cache/nonlocalnet/modelopt-venv``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nonlocalnet" / "modelopt-venv"


def venv_python(root: Path | None = None) -> Path:
    """The Python interpreter inside the venv at ``root`` (default: :func:`venv_dir`)."""
    return (root or venv_dir()) / "bin" / "python"


def is_complete(root: Path | None = None) -> bool:
    """True when the venv at ``root`` was fully installed (its ``.complete`` marker exists)."""
    root = root or venv_dir()
    return (root / MARKER).is_file() and venv_python(root).exists()


def _tail(text: str, lines: int = 25) -> str:
    """The last ``lines`` non-empty lines of ``text``."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    """Run ``cmd``, append its output to ``log``; raise :class:`ModelOptUnavailable` with the tail on failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ModelOptUnavailable(f"{what} timed out after {exc.timeout:.0f} s") from None
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n[exit {proc.returncode}]\n")
    if proc.returncode != 0:
        raise ModelOptUnavailable(f"{what} failed (exit {proc.returncode}):\n{_tail(proc.stdout + proc.stderr)}")


def _pip(root: Path, requirements: list[str], log: Path) -> None:
    """``pip install`` ``requirements`` into the venv at ``root``."""
    cmd = [str(venv_python(root)), "-m", "pip", "install", "--disable-pip-version-check",
           "--no-warn-script-location", "--progress-bar", "off", *requirements]
    _run_logged(cmd, log, f"pip install {' '.join(requirements)}")


def _build(root: Path) -> None:
    """Create the venv at ``root`` from scratch and install torch (CPU) and ModelOpt into it."""
    root.parent.mkdir(parents=True, exist_ok=True)
    log = root.parent / f"{root.name}-{LOG_NAME}"
    log.write_text(f"# building {root} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    _run_logged([sys.executable, "-m", "venv", str(root)], log, "python -m venv")
    _pip(root, [TORCH], log)
    _pip(root, [MODELOPT], log)
    check = [str(venv_python(root)), "-c", "import modelopt.onnx.quantization, onnxruntime, onnx"]
    _run_logged(check, log, "import modelopt.onnx.quantization")
    shutil.copy(log, root / LOG_NAME)


def ensure_venv() -> Path:
    """Return the root of the ModelOpt venv, building it first if it is missing or half-made.

    Raises :class:`ModelOptUnavailable` (with pip's log tail) when it cannot be installed; the
    partial folder is removed so the next call starts over. Concurrent callers serialise on a lock
    file beside the venv.
    """
    root = venv_dir()
    if is_complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait, then reuse
        if is_complete(root):
            return root
        if root.exists():
            shutil.rmtree(root)
        try:
            _build(root)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        (root / MARKER).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return root


if __name__ == "__main__":
    started = time.monotonic()
    print(ensure_venv(), f"({time.monotonic() - started:.0f} s)")
