"""The Python 3.8 / 3.10 job (JetPack 5 / 6): artifacts built beforehand by the main Python
(tests/py38/build_artifacts.py), named by NONLOCALNET_PY38_DIR; see .ci/run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

KINDS = {"fp32": "", "fp16": "_fp16", "int8_trt": "_int8_trt", "int8_ort": "_int8_ort", "int8_fp16": "_int8_fp16"}


@pytest.fixture(scope="session")
def built() -> Path:
    where = os.environ.get("NONLOCALNET_PY38_DIR")
    if not where or not (Path(where) / "artifacts").is_dir():
        pytest.skip("no prebuilt artifacts: run tests/py38/build_artifacts.py DIR with the main Python and "
                    "set NONLOCALNET_PY38_DIR=DIR (bash .ci/run does both)")
    return Path(where)


def artifact(built: Path, kind: str) -> Path:
    return built / "artifacts" / f"tiny_cityscapes_64x128{KINDS[kind]}.onnx"
