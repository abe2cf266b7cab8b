"""Atomic file writes and content hashes shared by every artifact writer."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.errors import ToolkitError

PROCESS_START = time.time()   # (import time): older temporaries without a PID are from earlier runs


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted or failing writer never leaves a truncated file under the final name. The
    temporary is ``.NAME.PID.XXXXXXXX.tmp``; temporaries of ``path`` whose writer is gone (killed
    with SIGKILL, power loss) are removed first, see :func:`remove_stale_temporaries`.
    """
    final = Path(path)
    ensure_writable_dir(final.parent, flag=None)
    remove_stale_temporaries(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():   # mkstemp creates 0600; give the file the mode a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (when unsure: True, so nothing of a live writer is removed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # exists, owned by someone else
        return True
    except OSError:
        return True              # cannot tell: keep the file
    return True


def remove_stale_temporaries(final: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of ``final`` left by writers that are gone; returns what was removed.

    ``.NAME.PID.XXXXXXXX.tmp``: removed when no process PID exists. ``.NAME.XXXXXXXX.tmp`` (written
    before the PID was recorded): removed when older than this process. Temporaries of other
    files and of live writers are never touched.
    """
    final = Path(final)
    prefix = f".{final.name}."
    removed = []
    try:
        candidates = [p for p in final.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for tmp in candidates:
        middle = tmp.name[len(prefix):-len(".tmp")].split(".")
        if len(middle) == 2 and middle[0].isdigit():
            stale = not pid_alive(int(middle[0]))
        elif len(middle) == 1:
            try:
                stale = tmp.stat().st_mtime < PROCESS_START
            except OSError:
                continue
        else:
            continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                size = _remove(tmp)
                removed.append(tmp)
                print(f"note: removed {tmp} ({size / 2**20:.1f} MB), a temporary left by an interrupted "
                      f"writer of {final.name}", file=sys.stderr)
    return removed


def _remove(path: Path) -> int:
    """Delete a file or a folder (a temporary one: whole trees); returns the bytes it held."""
    if path.is_dir() and not path.is_symlink():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(path)
        return size
    size = path.stat().st_size
    path.unlink()
    return size


@contextlib.contextmanager
def temporary_dir(beside: str | os.PathLike) -> Iterator[Path]:
    """A scratch folder ``.NAME.PID.XXXXXXXX.tmp`` beside ``beside``, removed when the block exits.

    It lies on the same file system as ``beside``, so what is built in it can be renamed into place
    (:func:`install_dir`, :func:`place_files`); folders that killed writers left under that name are
    removed first (:func:`remove_stale_temporaries`), so a SIGKILL leaves nothing the next run keeps.
    """
    final = Path(beside)
    ensure_writable_dir(final.parent, flag=None)
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def install_dir(built: Path, final: Path) -> None:
    """Put the finished folder ``built`` (made by :func:`temporary_dir` beside ``final``) at ``final``.

    A plain rename where ``final`` does not exist; otherwise the two are swapped in one step and the
    old folder, now under the temporary name, goes when the temporary does. Where no atomic swap
    exists, the old folder is first renamed to a temporary name of its own: a SIGKILL between the
    two renames leaves no ``final`` at all (never old and new files mixed), and the next run removes
    the old folder.
    """
    if not final.exists():
        os.rename(built, final)
        return
    if _exchange(built, final):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    os.rename(final, aside)          # onto the empty folder just made
    os.rename(built, final)
    shutil.rmtree(aside, ignore_errors=True)


JOURNAL_PREFIX, JOURNAL_SUFFIX = ".placing.", ".journal"


def place_files(moves: list[tuple[Path, Path]]) -> None:
    """Rename finished files (``(staged, final)`` pairs, finals in one folder) onto their final names
    as one set: a run leaves all of them or, once the next writer ran :func:`undo_unfinished_placements`,
    none. A journal listing the final names is written first and removed last; a writer killed
    between the renames leaves its journal behind."""
    if not moves:
        return
    folder = Path(moves[0][1]).parent
    journal = folder / f"{JOURNAL_PREFIX}{os.getpid()}.{os.urandom(4).hex()}{JOURNAL_SUFFIX}"
    with atomic_open(journal, "w") as f:
        json.dump({"files": [Path(final).name for _staged, final in moves]}, f)
    for staged, final in moves:
        os.replace(staged, final)
    journal.unlink()


def undo_unfinished_placements(folder: str | os.PathLike) -> list[Path]:
    """Remove every file of a :func:`place_files` set whose writer is gone before it finished (its
    journal is still there), so no incomplete set survives; returns the files removed."""
    removed: list[Path] = []
    try:
        journals = sorted(p for p in Path(folder).iterdir()
                          if p.name.startswith(JOURNAL_PREFIX) and p.name.endswith(JOURNAL_SUFFIX))
    except OSError:
        return removed
    for journal in journals:
        pid = journal.name[len(JOURNAL_PREFIX):].split(".")[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            names = json.loads(journal.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        gone = [journal.parent / Path(str(name)).name for name in names]
        gone = [p for p in gone if p.is_file()]
        for path in gone:
            path.unlink()
        journal.unlink(missing_ok=True)
        if gone:
            print(f"note: removed {', '.join(p.name for p in gone)}: an incomplete set of files left by an "
                  "interrupted run", file=sys.stderr)
        removed += gone
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file for writing; it replaces ``path`` when the block exits cleanly."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def ensure_writable_dir(directory: str | os.PathLike, flag: str | None = "--out") -> Path:
    """Create ``directory`` if needed and check that files can be written there.

    ``flag``: the command-line flag that chose the directory, named in the fix (None: no flag).
    """
    d = Path(directory)
    where = f"a writable {flag} location" if flag else "a writable location"
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"cannot create output directory {d}", found=exc.strerror,
                           fix=f"choose {where}") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise ToolkitError(f"output directory {d} is not writable",
                           fix=f"choose {where} or fix the directory's permissions")
    return d


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_png(image: np.ndarray, name: str | os.PathLike = "image") -> bytes:
    """PNG bytes of an RGB (H, W, 3) or single-channel image (OpenCV's encoder)."""
    import cv2

    if image.ndim == 3:
        image = image[:, :, ::-1]   # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ToolkitError(f"cannot encode {name}")
    return buf.tobytes()


def write_png(path: Path, image: np.ndarray) -> None:
    data = encode_png(image, path)
    with atomic_open(path, "wb") as f:
        f.write(data)
