"""Checkpoints: load (sssegmentation, mmsegmentation, plain), save atomically, download with checks."""
from __future__ import annotations

import os
import pickle
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from runtime.errors import ToolkitError
from runtime.fileio import atomic_path, sha256_file

# mmsegmentation NonLocal head names -> released sssegmentation names (spec/nonlocalnet.md)
MMSEG_KEY_MAP = (
    (r"^backbone\.", "backbone_net."),
    (r"^decode_head\.convs\.0\.conv\.", "conv_before_nl.0."),
    (r"^decode_head\.convs\.0\.bn\.", "conv_before_nl.1."),
    (r"^decode_head\.nl_block\.(g|theta|phi)\.conv\.", r"nl_block.\1.0."),
    (r"^decode_head\.nl_block\.conv_out\.conv\.", "nl_block.conv_out.0."),
    (r"^decode_head\.nl_block\.conv_out\.bn\.", "nl_block.conv_out.1."),
    (r"^decode_head\.convs\.1\.conv\.", "conv_after_nl.0."),
    (r"^decode_head\.convs\.1\.bn\.", "conv_after_nl.1."),
    (r"^decode_head\.conv_cat\.conv\.", "decoder.0."),
    (r"^decode_head\.conv_cat\.bn\.", "decoder.1."),
    (r"^decode_head\.conv_seg\.", "decoder.4."),
)
OPTIONAL_PREFIXES = ("auxiliary_decoder.",)   # released files may lack the training-only aux head


def default_cache_dir() -> Path:
    return Path(os.environ.get("NONLOCALNET_CACHE", Path.home() / ".cache" / "nonlocalnet"))


def convert_mmseg(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an mmsegmentation NonLocal state dict; its 256-channel aux head cannot map and is dropped."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("auxiliary_head."):
            continue
        new = key
        for pattern, repl in MMSEG_KEY_MAP:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        out[new] = value
    return out


def read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict from a file or loaded object: ``{'model':}``, ``{'state_dict':}`` (mmseg) or plain."""
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ToolkitError(f"checkpoint not found: {path}")
        obj = load_file(path)
    if not isinstance(obj, Mapping):
        raise _pickled_object(str(source), [_name_of(obj)])
    if "model" in obj and isinstance(obj["model"], Mapping):
        sd = dict(obj["model"])
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = convert_mmseg(obj["state_dict"])
    else:
        sd = dict(obj)
    objects = sorted({_name_of(v) for v in sd.values() if not isinstance(v, torch.Tensor)})
    if objects:
        raise _pickled_object(str(source), objects, where="its state dict holds")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    if any(k.startswith("decode_head.") for k in sd):
        sd = convert_mmseg(sd)
    return sd


# -- reading files without running code ---------------------------------------------------------
class Opaque:
    """Stand-in for a class or function a checkpoint names (an mmengine ``HistoryBuffer``, numpy
    internals, ...): it is never imported; calling or building it only keeps the arguments."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def load_file(path: Path) -> Any:
    """``torch.load(weights_only=True)``; the Python objects beside the weights of a training
    checkpoint (mmengine Runner: ``message_hub``, ``meta``) become inert :class:`Opaque` stand-ins.
    Torch's restricted unpickler does the reading either way: no code from the file runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise _unreadable(path, exc) from None
    except Exception as exc:  # zip / EOF / pickle errors of truncated or foreign files
        raise _unreadable(path, exc) from None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (pre-zip) files cannot be listed without unpickling them
        raise _pickled_object(str(path), ["objects of a legacy-format file"]) from None
    stand_ins = [(type(n.rsplit(".", 1)[-1], (Opaque,), {"qualname": n}), n) for n in names]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _pickled_object(str(path), list(names), detail=f"{type(exc).__name__}: {exc}") from None


def _name_of(obj: Any) -> str:
    return obj.qualname if isinstance(obj, Opaque) else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _unreadable(path: Path, exc: Exception) -> ToolkitError:
    return ToolkitError(f"cannot read checkpoint {path}", found=f"{type(exc).__name__}: {exc}"[:200],
                        fix="re-download it; a truncated file cannot be loaded")


def _pickled_object(source: str, names: list[str], where: str = "it is", detail: str = "") -> ToolkitError:
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return ToolkitError(f"checkpoint {source} cannot be read safely: {where} pickled Python objects "
                        f"({shown}) that only running their code could rebuild" + (f" ({detail[:120]})" if detail else ""),
                        expected="tensors in a dict: {'state_dict': ...}, {'model': ...} or a plain state dict",
                        fix="save model.state_dict() instead of the model object (torch.save(model.state_dict(), PATH))")


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, Any]) -> nn.Module:
    """Load strictly; only the auxiliary head may be absent. Mismatches name the first keys/shapes."""
    sd = read_state_dict(source)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith(OPTIONAL_PREFIXES)]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches, first: {'; '.join(wrong[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing keys, first: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: {', '.join(unexpected[:3])}")
        raise ToolkitError("checkpoint does not fit this model variant: " + " | ".join(parts),
                           fix="pick the --model that the checkpoint was trained as (classes, depth)")
    model.load_state_dict(sd, strict=False)
    return model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Write ``{'model': state_dict, **extra}`` atomically (the format :func:`load_checkpoint` reads)."""
    target = model.module if hasattr(model, "module") else model
    with atomic_path(path) as tmp:
        # contiguous: a channels_last training run must not leave NHWC strides in the released file
        state = {k: v.contiguous() for k, v in target.state_dict().items()}
        torch.save({"model": state, **extra}, tmp)
    return Path(path)


def manual_fix(url: str, target: Path, also: str | None = None) -> str:
    """The one fix for weights that cannot be fetched: where the file goes by hand, or which flag."""
    return (f"download {url} by hand and put it at {target}, or pass --checkpoint PATH"
            + (f", or {also}" if also else ""))


def fetch_release(variant: Any, cache_dir: str | os.PathLike | None = None, also: str | None = None) -> Path:
    """The released checkpoint of ``variant`` (downloaded once into the cache, checked).

    Every command that falls back to the released weights (create_model("pretrained"), segment,
    evaluate, export) fails with the same message: what went wrong and :func:`manual_fix`;
    ``also`` adds a command's own way out (export: ``--random-init``).
    """
    if not variant.checkpoint_url:
        raise ToolkitError(f"{variant.name} has no released checkpoint",
                           fix=f"train it with `python -m models.train --model {variant.name}` and pass "
                               f"--checkpoint PATH" + (f", or {also}" if also else ""))
    url = variant.checkpoint_url
    target = (Path(cache_dir) if cache_dir else default_cache_dir()) / Path(url.split("?")[0]).name
    try:
        return download(url, cache_dir, sha256=variant.checkpoint_sha256)
    except ToolkitError as exc:
        raise ToolkitError(f"cannot fetch the released weights of {variant.name}: {exc.message}",
                           fix=manual_fix(url, target, also)) from None


def download(url: str, cache_dir: str | os.PathLike | None = None, sha256: str | None = None,
             timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch ``url`` into the cache (atomically, size and sha256 checked); reuse a valid cached file."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / Path(url.split("?")[0]).name
    if target.is_file() and (sha256 is None or sha256_file(target) == sha256):
        return target
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            expected = int(response.headers.get("Content-Length") or 0) or None
            received = _stream(response, tmp, expected, target.name, progress)
            if expected is not None and received != expected:
                raise ToolkitError(f"download of {url} is incomplete", expected=f"{expected} bytes",
                                   found=f"{received} bytes", fix="run the command again")
            if sha256 is not None and sha256_file(tmp) != sha256:
                raise ToolkitError(f"download of {url} is corrupt (sha256 mismatch)", fix="run the command again")
    except (urllib.error.URLError, socket.timeout, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolkitError(f"cannot download {url} ({reason})", fix=manual_fix(url, target)) from None
    return target


def _stream(response: Any, path: Path, total: int | None, label: str, progress: bool) -> int:
    from tqdm import tqdm

    received = 0
    with open(path, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=label,
                                     disable=not progress) as bar:
        for block in iter(lambda: response.read(1 << 16), b""):
            f.write(block)
            received += len(block)
            bar.update(len(block))
    return received
