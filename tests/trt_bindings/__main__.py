"""``python3 -m tests.trt_bindings``: prepare every version (cached) and print the version matrix."""
from __future__ import annotations

import sys
import time

from tests.trt_bindings.matrix import collect, format_matrix


def main() -> int:
    t0 = time.perf_counter()
    trt, cuda = collect()
    print(format_matrix(trt, cuda))
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
