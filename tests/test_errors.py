"""runtime.errors: the one-line ToolkitError, and ``require`` for the optional runtimes."""
from __future__ import annotations

import sys

import pytest

from runtime.errors import ToolkitError, require


def test_a_toolkit_error_is_one_line_with_what_was_expected_found_and_the_fix():
    err = ToolkitError("bad crop\nvalue", expected="HxW", found="64", fix="pass --crop 64x128")
    assert str(err) == "bad crop value; expected HxW; found 64 (fix: pass --crop 64x128)"


def test_require_returns_the_module():
    import json

    assert require("json", "never said") is json


@pytest.mark.parametrize("module, helper, says", [
    ("onnxruntime", "runtime.loaders:import_onnxruntime", "pip install onnxruntime"),
    ("openvino", "runtime.backends.openvino_backend:import_openvino", "pip install openvino"),
    ("tensorrt", "runtime.backends.tensorrt_backend:import_tensorrt", "pip install tensorrt"),
])
def test_a_missing_runtime_is_one_error_that_says_how_to_install_it(module, helper, says, monkeypatch):
    import importlib

    where, name = helper.split(":")
    fn = getattr(importlib.import_module(where), name)
    monkeypatch.setitem(sys.modules, module, None)          # import MODULE -> ImportError
    with pytest.raises(ToolkitError) as err:
        fn()
    assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ToolkitError, match="needs it"):
        require(module, "this needs it", fix="install it")
