"""Console entry points: every setup.cfg script maps to a module with a main(argv)."""
from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import pytest

from apps import console

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_scripts_match_the_commands():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines() if line.strip()]
    scripts = dict(line.split(" = ") for line in lines)
    assert sorted(scripts) == sorted(f"nonlocalnet-{c}" for c in console.COMMANDS)
    for name, target in scripts.items():
        assert target == f"apps.console:{name[len('nonlocalnet-'):].replace('-', '_')}"
        assert callable(getattr(console, target.split(":")[1]))
    for module in console.COMMANDS.values():
        assert callable(importlib.import_module(module).main)


def test_entry_point_turns_user_errors_into_exit_2(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["nonlocalnet-segment", "missing.png", "--model", "tiny_cityscapes"])
    with pytest.raises(SystemExit) as info:
        console.segment()
    assert info.value.code == 2 and "input not found" in capsys.readouterr().err


ALIASES = ("evaluate", "benchmark", "profile", "segment", "video_demo", "video_benchmark", "serve", "serve_load")


@pytest.mark.parametrize("name", ALIASES)
def test_python_m_runtime_command_is_an_alias_of_the_app(name):
    alias = importlib.import_module(f"runtime.{name}")
    assert alias.main is importlib.import_module(f"apps.{name}").main
