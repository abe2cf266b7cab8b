"""The toolkit's TensorRT INT8 files against NVIDIA ModelOpt's ONNX INT8 quantizer on the same FP32 ONNX.

ModelOpt (``nvidia-modelopt[onnx]`` 0.47) needs onnx 1.21, onnxruntime-gpu 1.24 and torch, so it
lives in a venv of its own (tests/modelopt_ref/venv.py, built by .ci/run; skipped with the reason
where it is missing). Both files must quantize the same layers' inputs, except the differences the
toolkit makes on purpose, each listed here with its reason; the toolkit's strongly typed file must
have no Cast at any Q/DQ (ModelOpt's has none either, apart from its network-input Cast).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.modelopt_ref.venv import is_complete, venv_dir

# layer key (tests/modelopt_ref/compare.py) -> why the toolkit differs from ModelOpt on purpose
ON_PURPOSE = {
    "decoder.4.weight": "the classifier head stays float (--keep-int8 default 'attention,head': an 8-bit "
                        "logit map creates argmax ties; README, INT8 head choice)",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    if not is_complete():
        pytest.skip(f"ModelOpt venv not built at {venv_dir()} (.ci/run builds it: "
                    "python -c 'from tests.modelopt_ref.venv import ensure_venv; ensure_venv()')")
    from tests.conftest import tiny_int8_files
    from tests.modelopt_ref.quantize import run_modelopt

    out = tmp_path_factory.mktemp("modelopt")
    made = tiny_int8_files(out, variant="r18w32os8_cityscapes", crop=(256, 256))   # 32x32 positions, as shipped
    calib = np.stack([made["calib"].tile(i) for i in range(len(made["calib"]))]).astype(np.float32)
    made["modelopt"] = run_modelopt(made["fp32"].path, calib, out / "modelopt_int8.onnx")
    return made


@pytest.mark.parametrize("kind", ["trt", "mixed"])
def test_same_quantized_layers_as_modelopt(files, kind):
    from tests.modelopt_ref.compare import compare, format_table, initializer_names

    names = initializer_names(files["fp32"].path)
    rows = compare(files[kind].path, files["modelopt"], fp32_names=names)
    differ = {r.layer for r in rows if not r.same}
    assert differ == set(ON_PURPOSE), "\n" + format_table(rows)
    adds = [r for r in rows if r.op == "Add"]
    assert len(adds) == 9 and all(r.same for r in adds)          # every residual Add, the same input
    assert any(r.op == "MaxPool" and r.same for r in rows)


def test_no_cast_at_any_qdq_and_fp16_scales_as_modelopt(files):
    from tests.modelopt_ref.compare import counts

    ours, theirs = counts(files["mixed"].path), counts(files["modelopt"])
    for key in ("Cast right after a DQ", "Cast right before a Q"):
        assert ours[key] == 0, (key, ours)
    assert ours["opset"] == theirs["opset"] == 19
    assert set(ours["scale dtypes"]) <= {"FLOAT16", "FLOAT"} and "FLOAT16" in theirs["scale dtypes"]
