"""runtime.batches: static batches with the last one zero-filled, and the outputs trimmed back."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.batches import pad_batch, run_static, static_batches


def tiles(n: int, dtype=np.float32) -> np.ndarray:
    return (np.arange(n * 2 * 3, dtype=np.float64).reshape(n, 2, 3) + 1).astype(dtype)


def test_the_last_batch_is_zero_filled_and_counts_its_real_items():
    x = tiles(7)
    got = list(static_batches(x, 3))
    assert [(start, real) for start, _chunk, real in got] == [(0, 3), (3, 3), (6, 1)]
    assert all(chunk.shape == (3, 2, 3) and chunk.flags.c_contiguous for _s, chunk, _r in got)
    np.testing.assert_array_equal(got[2][1][0], x[6])
    assert not got[2][1][1:].any()                     # the padding is zeros
    np.testing.assert_array_equal(np.concatenate([c[:r] for _s, c, r in got]), x)


def test_an_exact_multiple_gets_no_padding_and_a_dynamic_backend_none_at_all():
    assert [c.shape[0] for _s, c, _r in static_batches(tiles(6), 3)] == [3, 3]
    assert [(c.shape[0], r) for _s, c, r in static_batches(tiles(7), 3, pad=False)] == [(3, 3), (3, 3), (1, 1)]


def test_dtype_and_contiguity():
    x = tiles(5, np.float64)[:, :, ::-1]               # a strided view
    for _s, chunk, _r in static_batches(x, 2, dtype=np.float32):
        assert chunk.dtype == np.float32 and chunk.flags.c_contiguous
    assert next(static_batches(tiles(1, np.float16), 4))[1].dtype == np.float16   # padding keeps the dtype


def test_pad_batch():
    x = tiles(2)
    assert pad_batch(x, 2) is x
    assert pad_batch(x, 5).shape == (5, 2, 3) and not pad_batch(x, 5)[2:].any()


def test_a_batch_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        next(static_batches(tiles(2), 0))


def test_run_static_calls_with_full_batches_only_and_trims_the_outputs():
    seen = []

    def fn(chunk):
        seen.append(chunk.shape[0])
        return chunk.sum(axis=(1, 2))

    x = tiles(5)
    np.testing.assert_array_equal(run_static(fn, x, 2), x.sum(axis=(1, 2)))
    assert seen == [2, 2, 2]


def test_run_static_hands_the_batches_to_a_progress_wrapper():
    wrapped = []

    def progress(it):
        for item in it:
            wrapped.append(item[0])
            yield item

    run_static(lambda c: c, tiles(5), 2, progress=progress)
    assert wrapped == [0, 2, 4]
