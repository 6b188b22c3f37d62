"""Whole folders written atomically: built under a temporary name beside their destination, then renamed into
place, so a kill at any moment leaves either the old folder, the new one, or (between two renames) the old one
under a ``.old`` name next to it - never a half-written folder under the destination's name."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from genforge.errors import StorageError
from genforge.io import ensure_dir, storage_error

TEMP_MARK = ".genforge-tmp"


def check_destination(out: Path, overwrite: bool, what: str) -> None:
    """A one-line error when ``out`` cannot receive a new folder: a file is there, or a non-empty folder without
    ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise StorageError(f"--out {out} is a file; expected a folder for the {what}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise StorageError(f"--out {out} already exists and is not empty; choose another folder or pass --overwrite")


@contextlib.contextmanager
def building(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """A fresh temporary folder beside ``out`` to fill; on success it replaces ``out``, on any error it is removed."""
    ensure_dir(out.parent)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}{TEMP_MARK}"
    try:
        tmp.mkdir()
    except OSError as e:
        raise storage_error(tmp, e) from None
    try:
        yield tmp
        _sync_tree(tmp)
        _replace(tmp, out, overwrite)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise storage_error(out, e) from None
        raise


def _replace(tmp: Path, out: Path, overwrite: bool) -> None:
    check_destination(out, overwrite, "folder")  # again: another process may have written there meanwhile
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sync_tree(folder: Path) -> None:
    """Flush every file's data to disk before the folder is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
