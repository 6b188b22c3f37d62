"""One run, one writer: an OS file lock on ``RUN/.lock``.

The lock is taken with ``flock`` (``fcntl``) on an open file, so the operating system releases it the
moment its process ends, however it ends (SIGKILL included): a stale lock never blocks anyone. The
file itself stays and names the last holder (pid, host, command, start time), which is what a
second process reports when it finds the run taken.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from genforge.errors import RunError

LOCK_NAME = ".lock"

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # Windows: lock the first byte of the file
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class RunLock:
    """``with RunLock(path, "train"):`` — exclusive use of the run directory ``path`` (created if needed).

    A second holder, in this process or another, gets a one-line ``RunError`` naming the process that
    holds the run.
    """

    def __init__(self, path: str | os.PathLike, purpose: str = "train"):
        self.path = Path(path)
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def file(self) -> Path:
        return self.path / LOCK_NAME

    def acquire(self) -> "RunLock":
        from genforge.io import ensure_dir, storage_error

        ensure_dir(self.path, "run directory")
        try:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise storage_error(self.file, e) from None
        if not _try_lock(fd):
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise RunError(f"run {self.path} is in use by {holder}; wait for it to finish or stop it, then try again")
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:  # who holds it, for the next process that asks; the lock itself does not depend on this
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        except OSError:
            pass  # a full disk must not stop the holder: the lock is what matters
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode("utf-8"))
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not isinstance(holder, dict) or "pid" not in holder:
        return "another process"
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    what = f" ({holder['command']})" if holder.get("command") else ""
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"process {holder['pid']}{where}{what}{since}"

