"""The house rule: each package imports only the layers below it, and commands live in apps/.

    runtime  <-  calibration, samples  <-  models  <-  export  <-  bench  <-  apps

Every import statement of every module is walked (module level and inside functions). The only
exceptions are the launchers: the user's command names (``python export/to_trt.py``,
``python -m runtime.evaluate``, ``python -m models.train``, ...) are files that only start a command
of apps/; their shape is checked here too. No other module touches ``sys.path``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RANK = {"runtime": 0, "calibration": 1, "samples": 1, "models": 2, "export": 3, "bench": 4, "apps": 5}
# Triton's Python backend runs these files from the model repository, next to the runtime files copied there.
SYS_PATH_OK = {"runtime/triton/model_frame.py", "runtime/triton/model_tile_ort.py"}


def _modules() -> list[Path]:
    return sorted(p for pkg in RANK if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def is_launcher(tree: ast.Module) -> bool:
    """Docstring, imports, an optional ``if __package__ ...: sys.path.insert(...)`` and an
    ``if __name__ == "__main__":`` block: nothing else (no definitions, no logic)."""
    body = list(tree.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    mains = [n for n in body if isinstance(n, ast.If) and "__name__" in ast.unparse(n.test)]
    rest = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom)) and n not in mains
            and not (isinstance(n, ast.If) and "__package__" in ast.unparse(n.test))]
    apps = [m for m in _imports(tree) if m.startswith("apps.") and m != "apps.cli"]
    return len(mains) == 1 and not rest and len(apps) == 1


def _layer(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    tree = ast.parse(path.read_text())
    rel = str(path.relative_to(ROOT))
    if is_launcher(tree):
        assert _layer(path) != "apps", f"{rel}: apps/ holds the commands themselves, not launchers"
        return
    mine = RANK[_layer(path)]
    for name in _imports(tree):
        top = name.split(".")[0]
        if top in RANK and top != _layer(path):
            assert RANK[top] < mine, f"{rel} imports {name}: {top} is not below {_layer(path)}"
    if rel not in SYS_PATH_OK:
        assert "sys.path" not in path.read_text(), f"{rel} touches sys.path (only launchers may)"


def test_the_users_command_names_are_launchers():
    names = ["export/to_trt.py", "export/to_onnx.py", "export/to_triton.py", "runtime/video_demo.py",
             "runtime/evaluate.py", "runtime/segment.py", "models/train.py", "samples/quickstart.py",
             "samples/generate.py"]
    for rel in names:
        assert is_launcher(ast.parse((ROOT / rel).read_text())), rel


def test_a_library_module_importing_a_command_fails_the_rule(tmp_path):
    """The checks above can fail: an upward import and a logic-carrying 'launcher' are caught."""
    upward = ast.parse("from apps.evaluate import main\n\ndef run():\n    return main()\n")
    assert not is_launcher(upward)
    assert "apps.evaluate" in _imports(upward) and RANK["apps"] > RANK["runtime"]
    assert is_launcher(ast.parse('"""L."""\nimport sys\nfrom apps.x import main\n\nif __name__ == "__main__":\n'
                                 "    sys.exit(main())\n"))
