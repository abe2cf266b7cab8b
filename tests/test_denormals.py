"""runtime.denormals: FTZ/DAZ on the calling thread for a block, the previous MXCSR word restored."""
from __future__ import annotations

import platform

import numpy as np
import pytest

from runtime.denormals import FTZ_DAZ, available, flush_denormals, mxcsr

X86 = platform.machine().lower() in ("x86_64", "amd64")
CONTROL = 0xFFC0            # MXCSR without the six sticky exception-status bits, which arithmetic sets


def control() -> int:
    return mxcsr() & CONTROL


def denormal_survives() -> bool:
    tiny = np.float32(np.finfo(np.float32).tiny)
    return bool(tiny / np.float32(2) != 0)


@pytest.mark.skipif(not X86, reason="MXCSR exists on x86 only")
def test_the_block_sets_what_it_is_asked_and_restores_the_exact_word():
    assert available()
    start = control()              # an earlier ONNX Runtime session may have left FTZ/DAZ on for good
    with flush_denormals(False):
        ieee, word_ieee = denormal_survives(), control()
        with flush_denormals():
            flushed, word = denormal_survives(), control()
        assert control() == word_ieee and denormal_survives()          # the inner block restored
        with pytest.raises(RuntimeError):                               # restored on an exception too
            with flush_denormals():
                raise RuntimeError("boom")
        assert control() == word_ieee and denormal_survives()
    assert (ieee, flushed) == (True, False)
    assert word_ieee == start & ~FTZ_DAZ and word == start | FTZ_DAZ and control() == start


@pytest.mark.skipif(not X86, reason="MXCSR exists on x86 only")
def test_onnxruntime_backend_leaves_the_calling_thread_as_it_found_it(tmp_path):
    from tests.conftest import VARIANT, export_onnx
    import torch

    from models import create_model
    from models.checkpoints import save_checkpoint
    from runtime.backends import open_backend

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pth", create_model(VARIANT))
    path = export_onnx(ckpt, tmp_path)
    before = control()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 128)).astype(np.float32)
    with open_backend(str(path), backend="onnxruntime") as flushed, \
            open_backend(str(path), backend="onnxruntime", flush_denormals=False) as plain:
        assert np.array_equal(flushed(x), plain(x))         # no denormal here: the same numbers
    assert control() == before
