"""Shared CLI helpers: zero and negative counts are refused by every command that takes them."""
from __future__ import annotations

import importlib

import pytest

# (module with main(argv), arguments that reach the parser, the count flag). The other arguments
# are valid or irrelevant: argparse rejects the count before anything runs.
COUNT_FLAGS = [
    ("apps.segment", ["x.png", "--model", "tiny_cityscapes"], "--threads"),
    ("apps.video_demo", ["x.mp4", "--model", "tiny_cityscapes"], "--threads"),
    ("apps.video_demo", ["x.mp4", "--model", "tiny_cityscapes"], "--max-frames"),
    ("apps.video_demo", ["x.mp4", "--model", "tiny_cityscapes"], "--queue-size"),
    ("apps.video_benchmark", ["x.mp4", "--model", "tiny_cityscapes"], "--rounds"),
    ("apps.video_benchmark", ["x.mp4", "--model", "tiny_cityscapes"], "--threads"),
    ("apps.evaluate", ["--data", "d", "--reference", "tiny_cityscapes"], "--threads"),
    ("apps.evaluate", ["--data", "d", "--reference", "tiny_cityscapes"], "--limit"),
    ("apps.benchmark", ["--reference", "tiny_cityscapes"], "--threads"),
    ("apps.benchmark", ["--reference", "tiny_cityscapes"], "--iters"),
    ("apps.benchmark", ["--reference", "tiny_cityscapes"], "--batch"),
    ("export.to_onnx", ["--model", "tiny_cityscapes"], "--batch"),
    ("export.to_trt", ["--model", "tiny_cityscapes", "--int8", "--calib-data", "d"], "--calib-images"),
    ("export.benchmark", [], "--threads"),
    ("export.benchmark", [], "--runs"),
    ("export.benchmark", [], "--calib-images"),
    ("samples.generate", ["--out", "d"], "--workers"),
    ("samples.generate", ["--out", "d"], "--video-frames"),
]
ZERO_ALLOWED = [
    ("apps.benchmark", ["--reference", "tiny_cityscapes"], "--warmup"),
    ("apps.video_benchmark", ["x.mp4", "--model", "tiny_cityscapes"], "--warmup"),
    ("apps.video_demo", ["x.mp4", "--model", "tiny_cityscapes"], "--reconnect-attempts"),
    ("samples.generate", ["--out", "d"], "--train"),
]


@pytest.mark.parametrize("value", ["0", "-2", "two"])
@pytest.mark.parametrize("module, argv, flag", COUNT_FLAGS)
def test_zero_or_negative_count_is_a_usage_error(module, argv, flag, value, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as info:
        main([*argv, flag, value])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"argument {flag}: expected an integer >= 1, found '{value}'" in err


@pytest.mark.parametrize("module, argv, flag", ZERO_ALLOWED)
def test_counts_where_zero_means_none_refuse_only_negatives(module, argv, flag, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as info:
        main([*argv, flag, "-1"])
    assert info.value.code == 2
    assert f"argument {flag}: expected an integer >= 0, found '-1'" in capsys.readouterr().err
    parser = getattr(importlib.import_module(module), "build_parser", None)
    if parser is not None:
        assert getattr(parser().parse_args([*argv, flag, "0"]), flag[2:].replace("-", "_")) == 0
