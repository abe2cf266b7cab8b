"""The README stays short and every command the README and docs/ name exists and starts.

Command lines are taken from README.md and docs/*.md (``python -m MODULE`` and ``python PATH.py``,
in code blocks and inline). Each module must be importable by name and each path must exist. The
README's commands are also run with ``--help`` (each distinct one once), which must exit 0: a
renamed flag or a broken launcher fails here. Lines with placeholders are still checked for their
command name, not run with their flags.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MODULE = re.compile(r"python3? -m ([a-zA-Z_][\w.]*)")
SCRIPT = re.compile(r"python3? ((?:[\w-]+/)+[\w-]+\.py)")
NOT_OURS = {"pytest", "pip", "venv", "modelopt.onnx.quantization", "torch.distributed.run"}


def _named(paths: list[Path]) -> tuple[set[str], set[str]]:
    modules, scripts = set(), set()
    for path in paths:
        text = path.read_text()
        modules |= {m.rstrip(".") for m in MODULE.findall(text)} - NOT_OURS
        scripts |= set(SCRIPT.findall(text))
    return modules, scripts


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_command_exists(doc):
    modules, scripts = _named([doc])
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    missing += [s for s in sorted(scripts) if not (ROOT / s).is_file()]
    assert missing == [], f"{doc.name} names commands that do not exist: {missing}"


def test_the_readme_commands_start():
    modules, scripts = _named([ROOT / "README.md"])
    commands = [[sys.executable, "-m", m] for m in sorted(modules - {"tests.trt_bindings"})]
    commands += [[sys.executable, s] for s in sorted(scripts)]
    assert len(commands) >= 15
    failed = []
    for cmd in commands:
        proc = subprocess.run(cmd + ["--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            failed.append(f"{' '.join(cmd[1:])}: exit {proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}")
    assert failed == []
