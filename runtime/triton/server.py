"""Start and stop ``tritonserver`` on 127.0.0.1: readiness wait, clean stop, nothing left behind.

The server runs in its own process group (session), with the Python-backend stubs it spawns; stop()
sends SIGTERM to the group, waits for the server's graceful exit, then SIGKILLs whatever is left.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from runtime.errors import ToolkitError
from runtime.triton.client import TritonHTTP
from runtime.triton.env import TritonEnv, require_env

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


class TritonServer:
    """``with TritonServer(repo, http_port) as server:`` serves ``repo`` at ``server.url``."""

    def __init__(self, repo: str | os.PathLike, http_port: int = 8000, env: TritonEnv | None = None,
                 log_path: str | os.PathLike | None = None, ready_timeout: float = 120.0,
                 exit_timeout: int = 10) -> None:
        self.repo = Path(repo).resolve()
        self.port = int(http_port)
        self.env = env
        self.log_path = Path(log_path) if log_path else self.repo / "tritonserver.log"
        self.ready_timeout = float(ready_timeout)
        self.exit_timeout = int(exit_timeout)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if not (self.repo / ".").is_dir():
            raise ToolkitError(f"model repository {self.repo} not found",
                               fix="write one with `python export/to_triton.py --artifacts ... --out REPO`")
        if _port_in_use(self.port):
            raise ToolkitError(f"port {self.port} on {HOST} is already in use", fix="pass another --http-port")
        env = self.env or require_env()
        cmd = [str(env.binary), "--model-repository", str(self.repo), "--backend-directory", str(env.backends),
               "--http-address", HOST, "--http-port", str(self.port), "--allow-grpc", "false",
               "--allow-metrics", "false", "--exit-timeout-secs", str(self.exit_timeout),
               "--disable-auto-complete-config"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env.process_env(), start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> None:
        client = TritonHTTP(self.url, timeout=5.0)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise ToolkitError("tritonserver exited while loading the models",
                                       found=self.log_tail(), fix=f"see {self.log_path}")
                if client.is_ready():
                    return
                time.sleep(0.2)
        finally:
            client.close()
        raise ToolkitError(f"tritonserver was not ready within {self.ready_timeout:.0f} s",
                           found=self.log_tail(), fix=f"see {self.log_path}")

    def log_tail(self, lines: int = 4) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        errors = [t for t in text if t.startswith("E") or "error" in t.lower()]
        return " | ".join((errors or text)[-lines:])[-800:]

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, for fault tests)."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self._wait_group_gone()

    def stop(self) -> None:
        """Graceful stop, then SIGKILL for anything left; safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.exit_timeout + 5)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)        # stubs still shutting down, or a hung server
        self.proc.wait()
        self._wait_group_gone()
        self.proc = None

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _wait_group_gone(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_alive(self.proc.pid if self.proc else 0):
            time.sleep(0.05)

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def group_alive(pgid: int) -> bool:
    """True while any process of the group ``pgid`` exists (zombies of other parents included)."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
