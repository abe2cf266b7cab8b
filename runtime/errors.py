"""One exception type for user mistakes.

Every CLI in the toolkit catches :class:`ToolkitError` only, prints ``error: ...`` on one line and
exits non-zero. Real bugs keep their tracebacks.
"""
from __future__ import annotations

import importlib
from typing import Any


class ToolkitError(Exception):
    """A mistake the user can fix: says what was expected, what was found, and the fix."""

    def __init__(self, message: str, *, expected: str | None = None, found: str | None = None,
                 fix: str | None = None) -> None:
        self.message = message
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.message]
        if self.expected is not None:
            parts.append(f"expected {self.expected}")
        if self.found is not None:
            parts.append(f"found {self.found}")
        text = "; ".join(parts)
        if self.fix:
            text += f" (fix: {self.fix})"
        return text.replace("\n", " ")


def require(module: str, message: str, fix: str | None = None) -> Any:
    """``import module`` (the module object), or a one-line ToolkitError(message, fix=fix) where it is
    not installed: the optional runtimes (ONNX Runtime, OpenVINO, TensorRT, torch) are imported so."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ToolkitError(message, fix=fix) from None
