"""Denormal floats as zero on the thread that calls ONNX Runtime (x86-64).

A denormal float (magnitude below 1.18e-38) takes x86 CPUs a slow microcode path. A trained
non-local block's softmax is peaky: on r50os8 at 512x1024 (8192 positions) 6 % of the affinity
matrix came out denormal, and the float MatMul that reads it took 1.80 s instead of 0.18 s with
them zeroed (machine B, ONNX Runtime 1.32, 2 threads).

ONNX Runtime's ``session.set_denormal_as_zero`` sets the CPU's FTZ and DAZ flags on the session's
own intra-op threads, but on the thread that calls ``run()`` only once per process: the first
session ever created in the process decides, and a session without the option (onnx-simplifier's,
a calibration session) clears them for good. The run-calling thread does a share of every
parallel kernel, so the whole run stays slow. :func:`flush_denormals` sets FTZ and DAZ on the
calling thread for a ``with`` block and restores its exact previous MXCSR afterwards, so float code
outside the block (numpy, the PyTorch reference) keeps IEEE denormals. It uses two tiny machine-code
routines (``stmxcsr`` / ``ldmxcsr``) in an executable page; where that is not possible (not x86-64
Linux/macOS, or a policy forbids executable mappings) it does nothing and :func:`available` says so.
On aarch64 (Jetson) there is no such slow path to avoid.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import sys
from typing import Iterator

FTZ_DAZ = 0x8040        # MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero)

# System V x86-64: get_mxcsr() -> eax; set_mxcsr(edi)
_GET = bytes([0x48, 0x83, 0xEC, 0x08,          # sub rsp, 8
              0x0F, 0xAE, 0x1C, 0x24,          # stmxcsr [rsp]
              0x8B, 0x04, 0x24,                # mov eax, [rsp]
              0x48, 0x83, 0xC4, 0x08,          # add rsp, 8
              0xC3])                           # ret
_SET = bytes([0x48, 0x83, 0xEC, 0x08,          # sub rsp, 8
              0x89, 0x3C, 0x24,                # mov [rsp], edi
              0x0F, 0xAE, 0x14, 0x24,          # ldmxcsr [rsp]
              0x48, 0x83, 0xC4, 0x08,          # add rsp, 8
              0xC3])                           # ret

@functools.lru_cache(maxsize=None)
def _load() -> tuple | None:
    """(page, get_mxcsr, set_mxcsr), made once per process; None where it cannot be done."""
    if platform.machine().lower() not in ("x86_64", "amd64") or sys.platform not in ("linux", "darwin"):
        return None
    try:
        import mmap

        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(_GET + bytes(16 - len(_GET)) + _SET)
        base = ctypes.addressof(ctypes.c_char.from_buffer(page))
        get = ctypes.CFUNCTYPE(ctypes.c_uint32)(base)
        put = ctypes.CFUNCTYPE(None, ctypes.c_uint32)(base + 16)
    except (OSError, ValueError, AttributeError):
        return None
    if get() & ~0xFFFF:                                    # not an MXCSR word: refuse to touch it
        return None
    return page, get, put                                  # the page must outlive the functions


def available() -> bool:
    """True where :func:`flush_denormals` really sets the flags (x86-64 Linux/macOS, executable page)."""
    return _load() is not None


def mxcsr() -> int | None:
    """The calling thread's MXCSR word, or None where it cannot be read."""
    routines = _load()
    return None if routines is None else int(routines[1]())


@contextlib.contextmanager
def flush_denormals(on: bool = True) -> Iterator[None]:
    """Inside the block the calling thread flushes denormals (``on``) or keeps IEEE denormals
    (``on=False``, even where an earlier ONNX Runtime session left FTZ/DAZ set for good); the
    previous MXCSR word is restored exactly afterwards, even on an exception. A no-op where
    :func:`available` is False."""
    routines = _load()
    if routines is None:
        yield
        return
    _page, get, put = routines
    saved = get()
    put(saved | FTZ_DAZ if on else saved & ~FTZ_DAZ)
    try:
        yield
    finally:
        put(saved)
