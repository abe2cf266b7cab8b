"""runtime.benchmark: the command's error rows and its table."""
from __future__ import annotations

import pytest

from apps.benchmark import main
from apps.cli import run_cli




def test_failed_backend_row_says_error_once(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    code = run_cli(main, ["--artifacts", str(broken), "--frame", "64x128", "--warmup", "0", "--iters", "1",
                          "--out", str(tmp_path / "bench.json")])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(str(broken)))
    assert code == 1 and "error: " in row and "error: error" not in row


def test_profile_splits_kernel_time_by_operator_and_node(tiny, tmp_path, capsys):
    import json

    import pytest

    from apps.profile import main as profile

    out = tmp_path / "profile.json"
    assert run_cli(profile, [str(tiny["onnx"]), "--runs", "3", "--warmup", "1", "--threads", "1", "--top", "3",
                             "--out", str(out)]) == 0
    prof = json.loads(out.read_text())["artifacts"][str(tiny["onnx"])]
    assert prof["runs"] == 3 and 0 < prof["kernel_ms"] and "Conv" in " ".join(prof["ops"])
    assert sum(prof["ops"].values()) == pytest.approx(prof["kernel_ms"])
    assert sum(ms for _op, _name, ms in prof["nodes"]) == pytest.approx(prof["kernel_ms"])
    printed = capsys.readouterr().out
    assert printed.startswith("machine: ") and "by operator type:" in printed and "slowest 3 nodes:" in printed
    assert run_cli(profile, [str(tmp_path / "missing.onnx")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err


def test_profile_refuses_a_non_float_input_and_a_folder_out_first(tiny, tmp_path, capsys, monkeypatch):  # noqa: F811
    import onnx
    from onnx import TensorProto, helper

    from apps import profile as prof

    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["out"])], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, [1, 4])])
    ints = tmp_path / "int64_input.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(ints))
    assert run_cli(prof.main, [str(ints), "--runs", "1", "--warmup", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot profile {ints}") and err.count("\n") == 1 and "tensor(int64)" in err

    calls = []
    real = prof.profile_artifact
    monkeypatch.setattr(prof, "profile_artifact", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert run_cli(prof.main, [str(tiny["onnx"]), "--runs", "1", "--warmup", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path} is a folder") and err.count("\n") == 1 and not calls


def test_profile_openvino_sums_its_layer_counters(tiny, capsys):
    """--backend openvino: OpenVINO's per-layer counters per layer type and kernel, summing to the
    kernel total; the convolutions of the tiny FP32 model are there, and the flags check."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install -e .[openvino])")
    from apps.cli import run_cli
    from apps.profile import main as profile, profile_openvino

    prof = profile_openvino(str(tiny["onnx"]), runs=2, warmup=1, threads=1)
    assert prof["runs"] == 2 and prof["kernel_ms"] > 0
    assert abs(sum(prof["ops"].values()) - prof["kernel_ms"]) < 1e-6 * max(1.0, prof["kernel_ms"])
    assert any(op.startswith("Convolution ") for op in prof["ops"])
    assert run_cli(profile, [str(tiny["onnx"]), "--backend", "openvino", "--runs", "1", "--warmup", "0"]) == 0
    assert "by operator type" in capsys.readouterr().out
    assert run_cli(profile, [str(tiny["onnx"]), "--backend", "openvino", "--no-flush-denormals"]) == 2

