"""A real Triton server (pip-bundled tritonserver, 127.0.0.1 only) serving a tiny model: the accuracy
gate against the served model, a load test with dynamic batching, bad requests, a server killed
mid-load and restarted, and the serve command's clean stop. Skipped only where the server cannot start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ToolkitError
from runtime.triton.client import TritonHTTP
from runtime.triton.env import find_env, home
from runtime.triton.repo import RepoOptions, write_repository
from runtime.triton.server import TritonServer, free_port, group_alive
from tests.conftest import seeded_tiny, VARIANT, export_onnx, synthetic_frame, write_self_labelled

ROOT = Path(__file__).resolve().parents[1]
TILE = "tiny_cityscapes_64x128"
FRAME = TILE + "_frame"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Tiny model + FP32 ONNX + a 2-image val split (ground truth = the reference's own prediction),
    its repository (python platform, dynamic batching) and a running server."""
    env = find_env()
    if env is None:
        pytest.skip(f"Triton environment not set up under {home()} (python -m runtime.serve --setup)")
    from runtime.backends import open_backend

    d = tmp_path_factory.mktemp("triton")
    model, ckpt = seeded_tiny(d, 3)
    onnx_path = export_onnx(ckpt, d)
    with open_backend(VARIANT, model=model) as ref:
        write_self_labelled(d / "data", "val", [synthetic_frame(96, 200, seed=10 + i) for i in range(2)], ref)
    repo = d / "repo"
    opts = RepoOptions(platform="python", instances=2, max_batch=8, preferred=(4, 8), delay_us=2000, ort_threads=1)
    write_repository([onnx_path], repo, opts, log=lambda *a: None)
    server = TritonServer(repo, free_port(), env=env)
    try:
        server.start()
    except ToolkitError as exc:
        pytest.skip(f"the Triton server cannot start here: {exc}")
    yield {"dir": d, "ckpt": str(ckpt), "onnx": onnx_path, "data": str(d / "data"), "repo": repo, "server": server}
    pgid = server.pgid
    server.stop()
    assert not group_alive(pgid), "tritonserver or a backend stub outlived stop()"


def frames_and_expected(onnx_path, count=3):
    from apps.serve_load import reference_labels

    frames = [synthetic_frame(96, 200, seed=20 + i) for i in range(count)]
    return frames, reference_labels(str(onnx_path), frames)


def test_evaluate_against_the_served_model(served, capsys):
    """runtime.evaluate with --url/--triton-model: the served model scores exactly like the in-process FP32 ONNX."""
    import json

    from apps.evaluate import main

    out = served["dir"] / "eval"
    code = main(["--data", served["data"], "--reference", VARIANT, "--checkpoint", served["ckpt"],
                 "--artifacts", str(served["onnx"]), "--url", served["server"].url, "--triton-model", TILE,
                 "--out", str(out)])
    rows = json.loads((out / "evaluate.json").read_text())["rows"]
    assert code == 0 and [r["backend"] for r in rows] == ["torch", "onnxruntime", "triton"]
    onnx_row, triton_row = rows[1], rows[2]
    assert triton_row["drop"] == pytest.approx(0.0, abs=1e-9) and triton_row["passed"] is True
    assert triton_row["miou"] == onnx_row["miou"] and triton_row["agreement"] == onnx_row["agreement"]
    assert triton_row["max_batch_size"] == 8 and "triton:" + TILE in capsys.readouterr().out


def test_load_8_clients_x_50_frames_with_dynamic_batching(served, capsys):
    """0 failed requests, every label map equal to the in-process result, tiles merged into batches > 1."""
    from apps.serve_load import load_test, table

    frames, expected = frames_and_expected(served["onnx"])
    result = load_test(served["server"].url, FRAME, frames, clients=8, requests=50, expected=expected, tile_model=TILE)
    with capsys.disabled():
        print("\n" + table(result))
    assert result["requests"] == 400 and result["ok"] == 400
    assert result["failures"] == 0 and result["mismatches"] == 0, result["errors"]
    assert result["mean_tile_batch"] > 1.0           # the dynamic batcher merged tiles of concurrent frames
    assert result["tile_inferences"] == 400 * 4      # 96x200 frame, 64x128 crop: 2 x 2 tiles
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_bad_requests_get_tritons_error_and_the_server_keeps_serving(served):
    client = TritonHTTP(served["server"].url)
    tile = np.zeros((1, 3, 64, 128), np.float32)
    bad = [(TILE, [("input", np.zeros((1, 3, 64, 64), np.float32))], "unexpected shape for input 'input'"),
           (TILE, [("input", tile.astype(np.float64))], "data-type is 'FP64', but model .* expects 'FP32'"),
           (TILE, [("image", tile)], "unexpected inference input 'image'"),
           (TILE, [("input", np.zeros((9, 3, 64, 128), np.float32))], "batch-size must be <= 8"),
           (FRAME, [("frame", np.zeros((32, 32, 4), np.uint8))], "unexpected shape for input 'frame'"),
           (FRAME, [("frame", np.zeros((32, 32, 3), np.float32))], "expects 'UINT8'"),
           ("no_such_model", [("frame", np.zeros((32, 32, 3), np.uint8))], "rejected the request")]
    try:
        for model, inputs, message in bad:
            with pytest.raises(ToolkitError, match=message):
                client.infer(model, inputs, ["labels" if model == FRAME else "logits"])
        assert client.is_ready(TILE) and client.is_ready(FRAME)
        out = client.infer(FRAME, [("frame", synthetic_frame(40, 50))], ["labels"])["labels"]
        assert out.shape == (40, 50) and out.dtype == np.uint8     # frame smaller than the crop: padded tile
    finally:
        client.close()


def test_server_killed_mid_load_then_restarted(served):
    """Clients of a crashed server get clear errors, not hangs; a restarted server serves again."""
    from apps.serve_load import load_test

    frames, expected = frames_and_expected(served["onnx"], count=1)
    port = free_port()
    server = TritonServer(served["repo"], port, env=find_env(), log_path=served["dir"] / "killed.log")
    server.start()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(load_test(server.url, FRAME, frames, 4, 150, expected)))
    worker.start()
    time.sleep(1.0)
    pgid = server.pgid
    server.kill()
    worker.join(timeout=60)
    assert not worker.is_alive() and not group_alive(pgid)
    assert result["failures"] > 0 and result["mismatches"] == 0
    assert all("no answer from the Triton server" in message for message in result["errors"])
    with TritonServer(served["repo"], port, env=find_env(), log_path=served["dir"] / "restarted.log") as again:
        client = TritonHTTP(again.url)
        labels = client.infer(FRAME, [("frame", frames[0])], ["labels"])["labels"]
        client.close()
        assert np.array_equal(labels, expected[0])
        pgid = again.pgid
    assert not group_alive(pgid)


def test_serve_command_stops_cleanly_on_ctrl_c(served, tmp_path):
    """python -m runtime.serve ARTIFACT: writes a repository, serves on 127.0.0.1, Ctrl-C leaves nothing."""
    port = free_port()
    cmd = [sys.executable, "-m", "runtime.serve", str(served["onnx"]), "--http-port", str(port),
           "--repo", str(tmp_path / "repo"), "--no-frame-model"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(line.startswith("serving") for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any(line.startswith(f"serving {TILE} at http://127.0.0.1:{port}") for line in lines), lines
        assert TritonHTTP(f"http://127.0.0.1:{port}").is_ready(TILE)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in rest
    assert not TritonHTTP(f"http://127.0.0.1:{port}", timeout=2).is_ready()
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, str(tmp_path / "repo"))]
    assert not leftovers, "a tritonserver / stub process outlived the serve command"


def _cmdline_has(proc_dir: Path, text: str) -> bool:
    try:
        return text in (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def test_segment_video_demo_and_benchmark_use_the_served_model(served, tmp_path, capsys):
    """The other apps through --url/--triton-model (segment, the video demo with 2 inference workers
    sharing one backend) or a triton:// artifact (benchmark)."""
    import cv2

    from apps import benchmark, segment, video_demo
    from apps.cli import run_cli
    from apps.serve_load import reference_labels
    from samples.dataset import write_video

    url = served["server"].url
    image = synthetic_frame(96, 200, seed=30)
    cv2.imwrite(str(tmp_path / "a.png"), image[:, :, ::-1])
    assert segment.main([str(tmp_path / "a.png"), "--url", url, "--triton-model", TILE, "--out", str(tmp_path / "seg")]) == 0
    got = cv2.imread(str(tmp_path / "seg/a_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, reference_labels(str(served["onnx"]), [image])[0])
    video = write_video(tmp_path / "drive.mp4", n_frames=6, fps=10.0, size=(96, 200))
    code = run_cli(video_demo.main, [str(video), "--url", url, "--triton-model", TILE, "--workers", "2",
                                     "--output", str(tmp_path / "out.mp4"), "--headless"])
    assert code == 0 and "summary: 6 frames (6 read, 0 dropped)" in capsys.readouterr().out
    out = tmp_path / "bench.json"
    served_artifact = url.replace("http://", "triton://") + "/" + TILE
    argv = ["--artifacts", served_artifact, "--frame", "96x200", "--warmup", "0", "--iters", "1", "--no-isolate",
            "--out", str(out)]
    assert benchmark.main(argv) == 0
    assert "triton:" + TILE in capsys.readouterr().out
