"""Atomic file writes: write to a temporary file beside the target, fsync, rename. A kill at any
moment leaves either the old file or the new one, never a half-written one."""

from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from genforge.errors import RunError, StorageError

TEMP_SUFFIX = ".tmp"
STORAGE_HINTS = {
    errno.ENOSPC: "; free some space or write somewhere else",
    errno.EDQUOT: "; free some space or write somewhere else",
    errno.EROFS: "; the file system is read-only: write somewhere else",
    errno.EACCES: "; no permission to write there: write somewhere else",
    errno.EPERM: "; no permission to write there: write somewhere else",
}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically. The file gets the permissions any ordinary new file would
    (0666 less the umask). A full or read-only disk raises ``StorageError`` naming the path, and leaves
    the old file (if any) untouched and no temporary file behind."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = None
    try:
        fd, tmp = _open_temp(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise storage_error(path, e) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _open_temp(path: Path) -> tuple[int, str]:
    """A new, exclusive temporary file beside ``path``. Opened with mode 0666 so the kernel applies the
    umask, as for any ordinary file (``tempfile.mkstemp`` would make it 0600 whatever the umask)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def ensure_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create folder ``path`` (and its parents) if needed; a one-line error when a file is in the way or
    the disk refuses."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StorageError(f"{what} {path} is an existing file; expected a folder (choose another --out)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StorageError(f"{what} {path} cannot be created: a file is in the way on that path") from None
    except NotADirectoryError:
        raise StorageError(f"{what} {path} cannot be created: part of that path is a file, not a folder") from None
    except OSError as e:
        raise storage_error(path, e) from None
    return path


def storage_error(path: str | os.PathLike, error: OSError) -> "StorageError":
    """A one-line StorageError for an OSError met while writing ``path`` (a full disk, a read-only mount...)."""
    reason = error.strerror or str(error) or type(error).__name__
    hint = STORAGE_HINTS.get(error.errno, "")
    code = errno.errorcode.get(error.errno, "") if error.errno else ""
    return StorageError(f"cannot write {path}: {reason}{f' ({code})' if code else ''}{hint}")


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files an atomic write left in ``folder`` when its process was killed mid-write.
    Call it only while holding the folder's lock (no other writer can be mid-write). Returns how many."""
    removed = 0
    try:
        candidates = list(Path(folder).glob(f".*{TEMP_SUFFIX}"))
    except OSError:
        return 0
    for tmp in candidates:
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically. Tensors are made contiguous CPU copies first."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(cpu, metadata=metadata))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file, with a one-line error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"weights file {path} is missing; expected a safetensors file written by genforge")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunError(f"weights file {path} is corrupt or truncated ({str(e).splitlines()[0]}); retrain or restore it") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunError(f"weights file {path} is corrupt or truncated ({str(e).splitlines()[0]})") from None


# ---- module weights ----------------------------------------------------------------------------
def unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without tied duplicates (safetensors refuses shared storage); load_state_dict(strict=False) restores them."""
    return unique_tensors(module.state_dict())


def unique_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` without the entries that share storage with an earlier one (tied weights)."""
    seen: dict[tuple, str] = {}
    out = {}
    for name, tensor in tensors.items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape)) if tensor.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = name
        out[name] = tensor
    return out


def load_module(module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    expected = set(module.state_dict())
    missing = expected - set(tensors)
    # tied duplicates were not saved: they are missing here but share storage with a saved tensor
    own = unique_state(module)
    really_missing = [k for k in missing if k in own]
    unexpected = set(tensors) - expected
    if really_missing or unexpected:
        raise RunError(f"{path} does not match the run's model (missing {sorted(really_missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    module.load_state_dict(tensors, strict=False)
