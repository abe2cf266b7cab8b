"""runtime.fileio: atomic writes, and the temporaries that killed writers leave behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.fileio import (PROCESS_START, atomic_open, install_dir, place_files, remove_stale_temporaries,
                            temporary_dir, undo_unfinished_placements)

ROOT = Path(__file__).resolve().parents[1]


def kill_at_marker(code: str, marker: Path, timeout: float = 180) -> int:
    """Run ``code`` in a fresh Python (repository root as cwd); once it creates ``marker`` (it then waits),
    SIGKILL it. Returns its exit status (``-SIGKILL``)."""
    proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + code],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _out, err = proc.communicate()
    assert marker.exists(), f"never reached the moment to kill: {err.decode()[-2000:]}"
    return proc.returncode


PAUSE = ("def pause(marker):\n"
         "    import time\n"
         "    open(marker, 'w').close()\n"
         "    time.sleep(600)\n")


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
    from apps.to_onnx import main

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


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_killed_writers_temporary_folder_goes_with_the_next_run(tmp_path):
    final = tmp_path / "work"
    code = PAUSE + (f"from runtime.fileio import temporary_dir\n"
                    f"with temporary_dir({str(final)!r}) as tmp:\n"
                    f"    (tmp / 'part.bin').write_bytes(bytes(1000))\n"
                    f"    pause({str(tmp_path / 'marker')!r})\n")
    assert kill_at_marker(code, tmp_path / "marker") == -signal.SIGKILL
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".work.")]
    assert len(stale) == 1 and (stale[0] / "part.bin").is_file()
    with temporary_dir(final) as tmp:
        assert tmp.is_dir() and f".{os.getpid()}." in tmp.name and not stale[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker"]


def test_install_dir_replaces_a_folder_as_a_whole(tmp_path):
    final = tmp_path / "repo"
    for content in ("old", "new"):
        with temporary_dir(final) as tmp:
            (tmp / content).write_text(content)
            install_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]       # the old folder went with the temporary


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_set_of_files_placed_by_a_killed_writer_is_removed_by_the_next(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("another run's file")
    code = PAUSE + (f"import os\nfrom pathlib import Path\nfrom runtime.fileio import place_files\n"
                    f"out = Path({str(out)!r})\nreal = os.replace\n"
                    f"def replace(src, dst):\n"
                    f"    real(src, dst)\n"
                    f"    if not Path(dst).name.startswith('.'):\n"      # not the journal's own rename
                    f"        pause({str(tmp_path / 'marker')!r})\n"
                    f"os.replace = replace\n"
                    f"for name in ('a.onnx', 'b.onnx', 'c.json'):\n"
                    f"    (out / ('.' + name + '.staged')).write_text(name)\n"
                    f"place_files([(out / ('.' + n + '.staged'), out / n) for n in ('a.onnx', 'b.onnx', 'c.json')])\n")
    assert kill_at_marker(code, tmp_path / "marker") == -signal.SIGKILL
    assert (out / "a.onnx").is_file() and not (out / "b.onnx").exists()     # killed after the first rename
    assert undo_unfinished_placements(out) == [out / "a.onnx"]
    assert "a.onnx: an incomplete set" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".b.onnx.staged", ".c.json.staged", "keep.txt"]
    place_files([(out / ".b.onnx.staged", out / "b.onnx"), (out / ".c.json.staged", out / "c.json")])
    assert sorted(p.name for p in out.iterdir()) == ["b.onnx", "c.json", "keep.txt"]
    assert undo_unfinished_placements(out) == []                          # a finished set is left alone
