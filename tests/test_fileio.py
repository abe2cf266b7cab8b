"""runtime.fileio: atomic writes, and the temporaries that killed writers leave behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.fileio import PROCESS_START, atomic_open, remove_stale_temporaries

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_temporaries_of_gone_writers_are_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        final = tmp_path / "m_512x1024.onnx"
        dead = tmp_path / f".m_512x1024.onnx.{dead_pid()}.ab12cd34.tmp"
        live = tmp_path / f".m_512x1024.onnx.{sleeper.pid}.ef56gh78.tmp"
        legacy_old = tmp_path / ".m_512x1024.onnx.k9x8y7z6.tmp"
        legacy_new = tmp_path / ".m_512x1024.onnx.q1w2e3r4.tmp"
        other = tmp_path / f".m_512x1024_fp16.onnx.{dead_pid()}.ab12cd34.tmp"
        sidecar = tmp_path / f".m_512x1024.onnx.json.{dead_pid()}.ab12cd34.tmp"
        for p in (dead, live, legacy_old, legacy_new, other, sidecar):
            p.write_bytes(b"partial")
        os.utime(legacy_old, (PROCESS_START - 60, PROCESS_START - 60))
        with atomic_open(final) as f:          # the next run of the same artifact cleans up
            f.write(b"complete")
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted(p.name for p in (final, live, legacy_new, other, sidecar))
        assert final.read_bytes() == b"complete"
        sleeper.kill()
        sleeper.wait()
        assert remove_stale_temporaries(final) == [live]
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_mid_export_leaves_a_temporary_that_the_next_run_removes(tmp_path, capsys):
    from export.to_onnx import main

    out = tmp_path / "out"
    cmd = [sys.executable, "export/to_onnx.py", "--model", "tiny_cityscapes", "--random-init", "--out", str(out),
           "--no-simplify"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None and not list(out.glob(".tiny_cityscapes_64x128.onnx.*.tmp")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stale = list(out.glob(".tiny_cityscapes_64x128.onnx.*.tmp"))
    assert proc.returncode == -signal.SIGKILL and len(stale) == 1, "the export finished before it was killed"
    assert f".{proc.pid}." in stale[0].name
    assert main(["--model", "tiny_cityscapes", "--random-init", "--out", str(out), "--no-simplify"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tiny_cityscapes_64x128.onnx"]
    assert f"removed {stale[0]}" in capsys.readouterr().err
