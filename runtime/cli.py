"""Shared CLI plumbing: ``HxW`` parsing and the one-line error contract."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from runtime.errors import ToolkitError


def parse_hw(text: str, flag: str = "--crop") -> tuple[int, int]:
    """Parse ``"512x1024"`` (or a single ``"512"`` meaning square) into ``(H, W)``."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) != 2 or min(values) <= 0:
        raise ToolkitError(f"bad {flag} value {text!r}", expected="HxW with positive integers, e.g. 512x1024")
    return values  # type: ignore[return-value]


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a :class:`ToolkitError` becomes ``error: ...`` on stderr and exit code 2."""
    try:
        code = main(argv)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
