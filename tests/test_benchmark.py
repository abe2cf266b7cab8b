"""runtime.benchmark: the command's error rows and its table."""
from __future__ import annotations

from runtime.apps.benchmark import main
from runtime.apps.cli import run_cli


def test_failed_backend_row_says_error_once(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    code = run_cli(main, ["--artifacts", str(broken), "--frame", "64x128", "--warmup", "0", "--iters", "1",
                          "--out", str(tmp_path / "bench.json")])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(str(broken)))
    assert code == 1 and "error: " in row and "error: error" not in row
