"""The studio's gallery: every output the studio makes (an image, a text, a CSV of table rows...) is an
*item*, a file in ``STUDIO/items/`` plus a row in ``STUDIO/gallery.sqlite``.

It survives a restart and a ``kill -9`` at any moment. The file is written first (atomically: a temporary
file, fsync, rename) and the row inserted after, in one transaction of a WAL database with
``synchronous=FULL``; a delete removes the row first and the file after the commit. So a kill can leave a
file without a row or a temporary file, never a row without its file nor a half-written file; those
leftovers are removed when the gallery next opens with no other gallery open on the same folder.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from genforge.errors import ConfigError, GenforgeError, RunError, StorageError
from genforge.io import atomic_write_bytes, ensure_dir, storage_error

try:  # POSIX: shared/exclusive locks, so only a gallery that is alone on its folder sweeps it
    import fcntl
except ImportError:  # Windows: no shared locks; every open sweeps (one server per runs directory)
    fcntl = None

ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
FILE_NAME = re.compile(r"^[0-9a-f]{32}\.[a-z0-9]{1,8}$")
SETTING_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

DB_NAME = "gallery.sqlite"
LOCK_NAME = "gallery.lock"
ITEMS_DIR = "items"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
TEXT_PREVIEW_CHARS = 20_000
MAX_LIMIT = 500
# How far lineage walks up and down. Not 1000: a tree that deep nests dicts and lists ~2000 levels, past
# what json.dumps and FastAPI's jsonable_encoder can recurse through, and no one browses 100 generations.
LINEAGE_DEPTH = 100
LINEAGE_NODES = 2000  # descendants returned at most (a wide tree is cut, and says so)
SEED_RANGE = (-(2**63), 2**63 - 1)  # what an SQLite INTEGER holds

MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv",
    ".json": "application/json",
    ".mid": "audio/midi",
    ".wav": "audio/wav",
}

COLUMNS = ("id, created, created_ts, run_id, family, modality, mode, parent_id, job_id, seed, params, file, suffix, "
           "size, text")
SCHEMA = """
CREATE TABLE items (
    id TEXT PRIMARY KEY NOT NULL,
    created TEXT NOT NULL,
    created_ts REAL NOT NULL,
    run_id TEXT NOT NULL,
    family TEXT NOT NULL,
    modality TEXT NOT NULL,
    mode TEXT NOT NULL,
    parent_id TEXT,          -- no foreign key: children outlive a deleted parent
    job_id TEXT,
    seed INTEGER,
    params TEXT NOT NULL,    -- JSON object
    file TEXT NOT NULL UNIQUE,
    suffix TEXT NOT NULL,
    size INTEGER NOT NULL,
    text TEXT
);
CREATE INDEX items_created ON items (created_ts);
CREATE INDEX items_run ON items (run_id, created_ts);
CREATE INDEX items_parent ON items (parent_id);
"""


class ItemNotFound(GenforgeError):
    """No gallery item has that id (or the id is not an item id at all)."""


def media_type(suffix: str) -> str:
    """The Content-Type to serve a file with that suffix as; unknown suffixes are plain bytes."""
    return MEDIA_TYPES.get(suffix.lower(), "application/octet-stream")


class Gallery:
    """The items under ``studio_dir`` (``RUNS_DIR/.studio``).

    One SQLite connection is shared by all threads (``check_same_thread=False``) and every use of it holds
    ``self._lock``: a transaction is then never interleaved with another thread's statements, and SQLite's
    own locking (WAL, a busy timeout) handles other processes. File writes and their fsyncs happen outside
    the lock, so slow disks do not stall readers; each call holds the lock only for a few statements.
    """

    def __init__(self, studio_dir: Path):
        self.studio_dir = ensure_dir(studio_dir, "studio folder")
        self.items_dir = ensure_dir(self.studio_dir / ITEMS_DIR, "gallery folder")
        self.db_path = self.studio_dir / DB_NAME
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        try:
            alone = self._take_folder_lock()
            self.alone = alone  # no other gallery open on this folder: what a kill left beside it may go too
            self._conn = self._connect()
            if alone:
                self._sweep()
            self._share_folder_lock()
        except BaseException:
            self.close()
            raise

    # ---- opening -----------------------------------------------------------------------------------
    def _take_folder_lock(self) -> bool:
        """Whether this gallery is alone on its folder. Every open gallery holds a shared lock on
        ``gallery.lock``; one that gets the exclusive lock first knows no other (in this process or another)
        is mid-add, so files without rows are leftovers of a kill, not items about to get their row."""
        if fcntl is None:
            return True
        lock_file = self.studio_dir / LOCK_NAME
        try:
            self._lock_fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise storage_error(lock_file, e) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _share_folder_lock(self) -> None:
        """Hold the folder shared from now on (waits while another gallery sweeps)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as e:
            raise _db_error(self.db_path, e) from None
        try:
            conn.row_factory = sqlite3.Row
            conn.create_function("gf_contains", 2, _contains, deterministic=True)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")  # two processes creating the database at once: one creates it
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RunError(f"gallery {self.db_path} was written by a newer genforge (schema {version}, "
                                   f"this one reads {SCHEMA_VERSION}); upgrade genforge")
                if version == 0:
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            conn.close()
            raise _db_error(self.db_path, e) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _sweep(self) -> None:
        """Remove what a kill left behind: files in ``items/`` without a row (written, not yet recorded, or
        recorded as deleted but not yet removed) and temporary files of an interrupted atomic write; and
        rows whose file is gone (only ever by hand: the gallery never leaves one), so every row can be
        served."""
        with self._db() as conn:
            known = {row["file"]: row["id"] for row in conn.execute("SELECT id, file FROM items")}
            try:
                entries = list(os.scandir(self.items_dir))
            except OSError:
                return
            present = set()
            for entry in entries:
                if entry.name in known and entry.is_file():
                    present.add(entry.name)
                elif not entry.is_dir(follow_symlinks=False):
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
            missing = [(item_id,) for name, item_id in known.items() if name not in present]
            if missing:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("DELETE FROM items WHERE id = ?", missing)
                conn.execute("COMMIT")

    # ---- the connection ----------------------------------------------------------------------------
    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """The shared connection, held by this thread alone; a transaction left open by an error is rolled
        back, and SQLite's disk-full, read-only, busy and corrupt errors become one-line genforge errors."""
        with self._lock:
            if self._conn is None:
                raise RunError(f"gallery {self.db_path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as e:
                self._rollback()
                raise _db_error(self.db_path, e) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        """Close the database and let another gallery sweep the folder. Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- items -------------------------------------------------------------------------------------
    def add(self, *, data: bytes, suffix: str, run_id: str, family: str, modality: str, mode: str,
            params: dict, parent_id: str | None = None, job_id: str | None = None,
            text: str | None = None) -> dict:
        """Record ``data`` as a new item and return its item dict. The file is complete on disk before its
        row exists. Raises ConfigError for a bad suffix, non-JSON params or empty names, ItemNotFound for
        an unknown ``parent_id``, StorageError for a full or read-only disk (and then records nothing)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if not isinstance(suffix, str) or not SUFFIX.match(suffix):
            raise ConfigError(f"file suffix {suffix!r} is invalid; expected a dot and 1 to 8 lowercase letters or "
                              f"digits, like '.png'")
        for name, value in (("run_id", run_id), ("family", family), ("modality", modality), ("mode", mode)):
            _check_text(name, value, required=True)
        _check_text("job_id", job_id, required=False)
        params_json = _params_json(params)
        if parent_id is not None and not (isinstance(parent_id, str) and ITEM_ID.match(parent_id)):
            raise ItemNotFound(f"parent item {parent_id!r} is not an item id")
        if text is not None:
            if not isinstance(text, str):
                raise TypeError(f"text must be a str or None, not {type(text).__name__}")
            text = _valid_unicode(text[:TEXT_PREVIEW_CHARS])

        item_id = uuid.uuid4().hex
        file_name = item_id + suffix
        path = self.items_dir / file_name
        created_ts = time.time()
        row = {"id": item_id, "created": _iso(created_ts), "created_ts": created_ts, "run_id": run_id,
               "family": family, "modality": modality, "mode": mode, "parent_id": parent_id, "job_id": job_id,
               "seed": _seed(params), "params": params_json, "file": file_name, "suffix": suffix,
               "size": len(data), "text": text}
        atomic_write_bytes(path, bytes(data))  # StorageError: nothing written, nothing recorded
        try:
            with self._db() as conn:
                conn.execute("BEGIN IMMEDIATE")
                if parent_id is not None and conn.execute("SELECT 1 FROM items WHERE id = ?",
                                                          (parent_id,)).fetchone() is None:
                    raise ItemNotFound(f"parent item {parent_id} is not in the gallery")
                conn.execute(f"INSERT INTO items ({COLUMNS}) VALUES ({', '.join('?' * len(row))})",
                             tuple(row.values()))
                conn.execute("COMMIT")
        except BaseException:
            _unlink(path)
            raise
        return self._item(row)

    def get(self, item_id: str) -> dict | None:
        """The item, or None when there is none with that id (or it is not an item id)."""
        if not _is_id(item_id):
            return None
        with self._db() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else self._item(row)

    def path(self, item: dict) -> Path:
        """The item's file. ``item`` is an item dict of this gallery; its file name is checked so a
        forged dict cannot point outside ``items/`` (ItemNotFound)."""
        name = item.get("file") if isinstance(item, dict) else None
        if not isinstance(name, str) or not FILE_NAME.match(name):
            raise ItemNotFound(f"{name!r} is not a gallery file name")
        return self.items_dir / name

    def delete(self, item_id: str) -> bool:
        """Remove the item: its row, then (after the commit) its file. Its children keep their
        ``parent_id``; their lineage stops there. False when there is no such item."""
        if not _is_id(item_id):
            return False
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT file FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                return False
            conn.execute("DELETE FROM items WHERE id = ?", (item_id,))
            conn.execute("COMMIT")
        _unlink(self.items_dir / row["file"])  # a kill before this leaves a file the next sweep removes
        return True

    def search(self, *, run_id: str | None = None, family: str | None = None, modality: str | None = None,
               mode: str | None = None, parent_id: str | None = None, since: float | None = None,
               until: float | None = None, setting: str | None = None, text: str | None = None,
               limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
        """Items matching every filter given, newest first, and how many match in all.

        ``None`` or ``""`` means no filter. ``since``/``until`` bound ``created_ts`` (inclusive).
        ``setting`` is ``"key=value"``: the params' top-level ``key`` equals ``value`` read as text
        (``"steps=20"`` matches 20 and "20"; ``"lr=1e-4"`` matches 0.0001; ``"flag=true"`` matches true).
        ``text`` is a case-insensitive substring of the preview text or of the params JSON. ``limit`` is
        clamped to 1..500 and ``offset`` to 0 or more. A ``setting`` without "=" or with a key that is not
        a name raises ConfigError."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("run_id", run_id), ("family", family), ("modality", modality), ("mode", mode),
                              ("parent_id", parent_id)):
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise TypeError(f"{column} must be a str or None, not {type(value).__name__}")
            where.append(f"{column} = ?")
            args.append(_valid_unicode(value))
        for bound, op in ((since, ">="), (until, "<=")):
            if bound is None:
                continue
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise TypeError(f"since/until must be seconds since the epoch, not {bound!r}")
            where.append(f"created_ts {op} ?")
            args.append(float(bound))
        if setting:
            clause, setting_args = _setting_clause(setting)
            where.append(clause)
            args.extend(setting_args)
        if text:
            if not isinstance(text, str):
                raise TypeError(f"text must be a str or None, not {type(text).__name__}")
            where.append("(gf_contains(text, ?) OR gf_contains(params, ?))")
            args.extend([_valid_unicode(text)] * 2)
        limit = max(1, min(MAX_LIMIT, int(limit)))
        offset = max(0, int(offset))
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        with self._db() as conn:
            conn.execute("BEGIN")  # one snapshot for the page and its total
            total = conn.execute(f"SELECT COUNT(*) FROM items {condition}", args).fetchone()[0]
            rows = conn.execute(f"SELECT {COLUMNS} FROM items {condition} ORDER BY created_ts DESC, rowid DESC "
                                f"LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
            conn.execute("COMMIT")
        return [self._item(row) for row in rows], total

    def lineage(self, item_id: str) -> dict:
        """``{"item", "ancestors" (oldest first, ending with the parent), "descendants" (a tree of
        ``{"item", "children"}``, oldest first), "truncated"}``. A deleted item ends the walk where it
        was. Walks at most LINEAGE_DEPTH generations each way and LINEAGE_NODES descendants (then
        ``truncated`` is True), and never revisits an item, so even a cycle made by hand ends.
        Raises ItemNotFound for an unknown or malformed id."""
        if not _is_id(item_id):
            raise ItemNotFound(f"{item_id!r} is not an item id")
        truncated = False
        with self._db() as conn:
            conn.execute("BEGIN")  # one snapshot for the whole walk
            row = conn.execute(f"SELECT {COLUMNS} FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                conn.execute("COMMIT")
                raise ItemNotFound(f"item {item_id} is not in the gallery")
            ancestors = []
            seen = {item_id}
            parent = row["parent_id"]
            while parent is not None and parent not in seen:
                if len(ancestors) == LINEAGE_DEPTH:
                    truncated = True
                    break
                up = conn.execute(f"SELECT {COLUMNS} FROM items WHERE id = ?", (parent,)).fetchone()
                if up is None:
                    break
                ancestors.append(up)
                seen.add(parent)
                parent = up["parent_id"]
            # every descendant with its nearest depth, one generation past the bound to tell whether there
            # is more; UNION ALL with the depth bound ends even on a cycle
            below = conn.execute(
                f"WITH RECURSIVE down(id, depth) AS ("
                f"  SELECT id, 1 FROM items WHERE parent_id = ?"
                f"  UNION ALL SELECT items.id, down.depth + 1 FROM items JOIN down ON items.parent_id = down.id"
                f"  WHERE down.depth <= ?) "
                f"SELECT {', '.join('items.' + c.strip() for c in COLUMNS.split(','))}, MIN(down.depth) AS depth "
                f"FROM down JOIN items ON items.id = down.id GROUP BY items.id "
                f"ORDER BY depth, items.created_ts, items.rowid LIMIT ?",
                (item_id, LINEAGE_DEPTH, LINEAGE_NODES + 1)).fetchall()
            conn.execute("COMMIT")
        if len(below) > LINEAGE_NODES or (below and below[-1]["depth"] > LINEAGE_DEPTH):
            truncated = True
        nodes: dict[str, dict] = {item_id: {"item": self._item(row), "children": []}}
        for child in below[:LINEAGE_NODES]:
            if child["depth"] > LINEAGE_DEPTH or child["id"] in nodes or child["parent_id"] not in nodes:
                continue  # past the bound, a revisit (only on a cycle), or below a node cut by LINEAGE_NODES
            node = {"item": self._item(child), "children": []}
            nodes[child["parent_id"]]["children"].append(node)
            nodes[child["id"]] = node
        return {"item": nodes[item_id]["item"], "ancestors": [self._item(a) for a in reversed(ancestors)],
                "descendants": nodes[item_id]["children"], "truncated": truncated}

    def runs(self) -> list[str]:
        """The run ids that have items, sorted."""
        with self._db() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT run_id FROM items ORDER BY run_id")]

    def count(self) -> int:
        with self._db() as conn:
            return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def _item(self, row: sqlite3.Row | dict) -> dict:
        item = {key: row[key] for key in ("id", "created", "created_ts", "run_id", "family", "modality", "mode",
                                          "parent_id", "job_id", "seed")}
        item["params"] = json.loads(row["params"])
        item.update(file=row["file"], suffix=row["suffix"], media_type=media_type(row["suffix"]), size=row["size"],
                    text=row["text"])
        return item


# ---- helpers ---------------------------------------------------------------------------------------
def _is_id(item_id: object) -> bool:
    return isinstance(item_id, str) and ITEM_ID.match(item_id) is not None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # left for the next sweep


def _valid_unicode(text: str) -> str:
    """``text`` with lone surrogates (which SQLite cannot store as UTF-8) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _check_text(name: str, value: object, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} {value!r} is invalid; expected a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{name} {value!r} is not valid Unicode text") from None


def _params_json(params: object) -> str:
    if not isinstance(params, dict):
        raise ConfigError(f"params must be a JSON object (a dict), not {type(params).__name__}")
    try:
        encoded = json.dumps(params, ensure_ascii=False, allow_nan=False)
        encoded.encode("utf-8")
    except (TypeError, ValueError) as e:  # UnicodeEncodeError is a ValueError
        raise ConfigError(f"params are not JSON-serialisable ({str(e).splitlines()[0]}); use strings, numbers, "
                          f"booleans, null, lists and dicts") from None
    return encoded


def _seed(params: dict) -> int | None:
    seed = params.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        return seed
    return None


def _setting_clause(setting: str) -> tuple[str, list[Any]]:
    """SQL (with ``?`` placeholders only) matching params whose top-level ``key`` equals ``value`` read as
    text: a number also matches numerically, true/false/null match their JSON names."""
    if not isinstance(setting, str) or "=" not in setting:
        raise ConfigError(f"setting {setting!r} is invalid; expected key=value, like steps=20")
    key, value = setting.split("=", 1)
    key = key.strip()
    if not SETTING_KEY.match(key):
        raise ConfigError(f"setting key {key!r} is invalid; expected a name of letters, digits and _")
    value = _valid_unicode(value.strip())
    try:
        number = float(value)
        number = number if math.isfinite(number) else None
    except ValueError:
        number = None
    path = "$." + key  # safe: key matched SETTING_KEY, and it is bound as a parameter anyway
    clause = ("(CASE json_type(params, ?)"
              " WHEN 'true' THEN ? = 'true' WHEN 'false' THEN ? = 'false' WHEN 'null' THEN ? IN ('null', 'none')"
              " WHEN 'integer' THEN (CAST(json_extract(params, ?) AS TEXT) = ? OR json_extract(params, ?) = ?)"
              " WHEN 'real' THEN (CAST(json_extract(params, ?) AS TEXT) = ? OR json_extract(params, ?) = ?)"
              " WHEN 'text' THEN json_extract(params, ?) = ?"
              " ELSE CAST(json_extract(params, ?) AS TEXT) = ? END)")
    lower = value.lower()
    return clause, [path, lower, lower, lower, path, value, path, number, path, value, path, number, path, value,
                    path, value]


def _contains(haystack: str | None, needle: str | None) -> bool:
    """SQL function gf_contains: a case-insensitive substring test for all of Unicode (SQLite's LIKE folds
    ASCII only, and would read % and _ in the user's text as wildcards)."""
    if haystack is None or needle is None:
        return False
    return needle.casefold() in haystack.casefold()


def _db_error(db_path: Path, error: sqlite3.Error) -> Exception:
    """A one-line genforge error for what SQLite reports about the disk or the file; others unchanged."""
    code = getattr(error, "sqlite_errorcode", None)  # absent on errors raised by the sqlite3 module itself
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
                   sqlite3.SQLITE_PERM):
        return StorageError(f"cannot write gallery {db_path}: {error}; free some space or check permissions")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return RunError(f"gallery {db_path} is corrupt ({error}); move it aside and restart the studio")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return RunError(f"gallery {db_path} is busy ({error}); another process holds it, try again")
    return error
