"""The studio's gallery: files plus SQLite rows that survive a restart and a kill -9 mid-write, searched
with parameterised SQL only, walked as lineage trees without ever hanging."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genforge import io as gio
from genforge.errors import ConfigError, StorageError
from genforge.serve.gallery import ITEM_ID, Gallery, ItemNotFound, media_type

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def gallery(tmp_path):
    g = Gallery(tmp_path / ".studio")
    yield g
    g.close()


def add(g: Gallery, data: bytes = b"x", suffix: str = ".png", **kw) -> dict:
    fields = {"run_id": "runs/vae", "family": "vae", "modality": "image", "mode": "sample", "params": {}}
    fields.update(kw)
    return g.add(data=data, suffix=suffix, **fields)


def files(g: Gallery) -> set[str]:
    return {p.name for p in g.items_dir.iterdir()}


def row_files(g: Gallery) -> set[str]:
    items, _ = g.search(limit=500)
    return {i["file"] for i in items}


# ---- add / get / path --------------------------------------------------------------------------------
def test_add_get_path_round_trip(gallery):
    data = bytes(range(256)) * 3
    params = {"seed": 7, "steps": 20, "prompt": "héllo ✓ 世界", "nested": {"a": [1, 2.5, None, True]}}
    item = add(gallery, data, ".png", params=params, job_id="job1", text=None)
    assert ITEM_ID.match(item["id"])
    assert item["file"] == item["id"] + ".png" and item["suffix"] == ".png"
    assert item["media_type"] == "image/png" and item["size"] == len(data)
    assert item["seed"] == 7 and item["params"] == params and item["job_id"] == "job1" and item["parent_id"] is None
    assert item["created"].endswith("Z") and len(item["created"]) == 20
    assert abs(item["created_ts"] - time.time()) < 60
    assert gallery.get(item["id"]) == item
    assert gallery.path(item).read_bytes() == data
    assert gallery.path(item).parent == gallery.items_dir
    json.dumps(item)  # JSON-ready
    assert gallery.count() == 1 and gallery.runs() == ["runs/vae"]


def test_media_types_text_preview_and_seed(gallery):
    assert media_type(".txt") == "text/plain; charset=utf-8"
    assert media_type(".csv") == "text/csv" and media_type(".json") == "application/json"
    assert media_type(".mid") == "audio/midi" and media_type(".wav") == "audio/wav"
    assert media_type(".bin") == "application/octet-stream"
    long = "ab" * 15_000
    t = add(gallery, long.encode(), ".txt", modality="text", text=long, params={"seed": "not an int"})
    assert t["media_type"] == "text/plain; charset=utf-8" and t["text"] == long[:20_000] and t["seed"] is None
    assert add(gallery, suffix=".csv", params={"seed": True})["seed"] is None  # a bool is no seed
    assert add(gallery, suffix=".bin", params={"seed": 2**70})["seed"] is None  # beyond an SQLite integer
    assert gallery.get(t["id"])["text"] == long[:20_000]


def test_add_rejects_bad_arguments(gallery):
    for suffix in ("png", ".PNG", ".", ".toolongsuffix", "./x", ".p/g", ""):
        with pytest.raises(ConfigError, match="suffix"):
            add(gallery, suffix=suffix)
    with pytest.raises(ConfigError, match="JSON"):
        add(gallery, params={"x": object()})
    with pytest.raises(ConfigError, match="JSON"):
        add(gallery, params={"x": float("nan")})
    with pytest.raises(ConfigError, match="dict"):
        add(gallery, params=[1, 2])
    with pytest.raises(ConfigError, match="run_id"):
        add(gallery, run_id="")
    with pytest.raises(ItemNotFound):
        add(gallery, parent_id="0" * 32)
    with pytest.raises(ItemNotFound):
        add(gallery, parent_id="../x")
    assert gallery.count() == 0 and files(gallery) == set()  # nothing recorded, no file left


def test_full_disk_records_nothing(gallery, monkeypatch):
    add(gallery)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gio.os, "fsync", full)
    with pytest.raises(StorageError, match="ENOSPC"):
        add(gallery, b"y" * 1000)
    monkeypatch.undo()
    assert gallery.count() == 1 and files(gallery) == row_files(gallery)  # no row, no temp file


# ---- search ------------------------------------------------------------------------------------------
@pytest.fixture
def populated(gallery):
    """Six items over two runs, added oldest first."""
    items = [
        add(gallery, run_id="r1", family="vae", modality="image", mode="sample", params={"steps": 20, "seed": 1}),
        add(gallery, run_id="r1", family="vae", modality="image", mode="reconstruct", params={"steps": 50}),
        add(gallery, suffix=".txt", run_id="r2", family="transformer", modality="text", mode="sample",
            params={"temperature": 0.7, "label": "3"}, text="Once upon a TIME in Zürich"),
        add(gallery, suffix=".txt", run_id="r2", family="transformer", modality="text", mode="complete",
            params={"label": 3, "prompt": "Hello"}, text="hello world"),
        add(gallery, suffix=".csv", run_id="r3", family="gan", modality="table", mode="sample",
            params={"flag": True, "lr": 0.0001, "name": "Ünïcode"}),
    ]
    items.append(add(gallery, run_id="r1", family="vae", modality="image", mode="sample", params={"steps": 20},
                     parent_id=items[0]["id"]))
    return gallery, items


def ids(found) -> list[str]:
    return [i["id"] for i in found[0]]


def test_search_filters(populated):
    g, items = populated
    a, b, c, d, e, f = (i["id"] for i in items)
    assert ids(g.search()) == [f, e, d, c, b, a] and g.search()[1] == 6  # newest first
    assert ids(g.search(run_id="r1")) == [f, b, a]
    assert ids(g.search(family="transformer")) == [d, c]
    assert ids(g.search(modality="table")) == [e]
    assert ids(g.search(mode="sample")) == [f, e, c, a]
    assert ids(g.search(mode="sample", run_id="r1")) == [f, a]
    assert ids(g.search(parent_id=a)) == [f]
    assert ids(g.search(run_id="")) == [f, e, d, c, b, a]  # empty means no filter
    ts = [i["created_ts"] for i in items]
    assert ids(g.search(since=ts[2])) == [f, e, d, c]
    assert ids(g.search(until=ts[1])) == [b, a]
    assert ids(g.search(since=ts[1], until=ts[3])) == [d, c, b]
    assert g.search(since=ts[5] + 10)[1] == 0


def test_search_setting_and_text(populated):
    g, items = populated
    a, b, c, d, e, f = (i["id"] for i in items)
    assert ids(g.search(setting="steps=20")) == [f, a]
    assert ids(g.search(setting=" steps = 50 ")) == [b]
    assert ids(g.search(setting="label=3")) == [d, c]  # 3 and "3"
    assert ids(g.search(setting="temperature=0.7")) == [c]
    assert ids(g.search(setting="lr=1e-4")) == [e]
    assert ids(g.search(setting="flag=true")) == [e]
    assert ids(g.search(setting="name=Ünïcode")) == [e]
    assert ids(g.search(setting="steps=21")) == [] and ids(g.search(setting="missing=1")) == []
    assert ids(g.search(text="time")) == [c]  # the preview, any case
    assert ids(g.search(text="HELLO")) == [d]  # preview and params both match d; once
    assert ids(g.search(text="zürich")) == [c] and ids(g.search(text="ünïcode")) == [e]  # beyond ASCII
    assert ids(g.search(text='"steps"')) == [f, b, a]  # the params JSON
    assert ids(g.search(text="hello", setting="label=3", run_id="r2")) == [d]
    with pytest.raises(ConfigError, match="key=value"):
        g.search(setting="steps")
    for bad in ("=1", "a.b=1", "a'--=1", "x y=1", "a" * 65 + "=1"):
        with pytest.raises(ConfigError, match="setting key"):
            g.search(setting=bad)


def test_search_paging_and_clamps(populated):
    g, items = populated
    newest_first = [i["id"] for i in reversed(items)]
    assert ids(g.search(limit=2)) == newest_first[:2]
    page, total = g.search(limit=2, offset=4)
    assert [i["id"] for i in page] == newest_first[4:] and total == 6
    assert g.search(offset=10) == ([], 6)
    assert ids(g.search(limit=0)) == newest_first[:1] and ids(g.search(limit=-5)) == newest_first[:1]
    assert ids(g.search(limit=10_000)) == newest_first
    assert ids(g.search(offset=-3, limit=1)) == newest_first[:1]


INJECTIONS = ["'; DROP TABLE items; --", "\" OR 1=1 --", "%", "_", "\\", "' OR '1'='1", "*", "\x00", "\ud800",
              "r1' UNION SELECT * FROM items --", "$.steps", "') OR 1=1 --"]


def test_injection_like_strings_match_nothing(populated):
    g, _ = populated
    for s in INJECTIONS:
        for key in ("run_id", "family", "modality", "mode", "parent_id", "text"):
            assert g.search(**{key: s}) == ([], 0), (key, s)
        assert g.search(setting=f"steps={s}") == ([], 0), s
        assert g.get(s) is None and g.delete(s) is False
        with pytest.raises(ItemNotFound):
            g.lineage(s)
    assert g.count() == 6


# ---- lineage / delete --------------------------------------------------------------------------------
def test_lineage_chain_branch_and_delete(gallery):
    a = add(gallery)
    b = add(gallery, parent_id=a["id"])
    c = add(gallery, parent_id=b["id"])
    b2 = add(gallery, parent_id=a["id"])
    lin = gallery.lineage(c["id"])
    assert lin["item"] == c and [x["id"] for x in lin["ancestors"]] == [a["id"], b["id"]]
    assert lin["descendants"] == [] and lin["truncated"] is False
    tree = gallery.lineage(a["id"])
    assert tree["ancestors"] == []
    assert [n["item"]["id"] for n in tree["descendants"]] == [b["id"], b2["id"]]  # oldest child first
    assert [n["item"]["id"] for n in tree["descendants"][0]["children"]] == [c["id"]]
    assert tree["descendants"][0]["children"][0]["children"] == [] and tree["descendants"][1]["children"] == []
    json.dumps(tree)

    assert gallery.delete(b["id"]) is True
    assert gallery.get(b["id"]) is None and not (gallery.items_dir / b["file"]).exists()
    assert gallery.get(c["id"])["parent_id"] == b["id"]  # children keep their parent id
    assert gallery.lineage(c["id"])["ancestors"] == []  # and their lineage stops there
    assert [n["item"]["id"] for n in gallery.lineage(a["id"])["descendants"]] == [b2["id"]]
    with pytest.raises(ItemNotFound):
        gallery.lineage(b["id"])
    with pytest.raises(ItemNotFound):
        add(gallery, parent_id=b["id"])


def test_lineage_is_bounded_even_on_a_cycle(gallery):
    from genforge.serve import gallery as mod

    chain = [add(gallery)]
    for _ in range(mod.LINEAGE_DEPTH + 5):
        chain.append(add(gallery, parent_id=chain[-1]["id"]))
    down = gallery.lineage(chain[0]["id"])
    depth, node = 0, {"children": down["descendants"]}
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert depth == mod.LINEAGE_DEPTH and down["truncated"] is True
    up = gallery.lineage(chain[-1]["id"])
    assert len(up["ancestors"]) == mod.LINEAGE_DEPTH and up["truncated"] is True
    assert up["ancestors"][-1]["id"] == chain[-2]["id"]
    # a cycle can only be made by hand; the walk still ends
    x, y = add(gallery), add(gallery)
    with sqlite3.connect(gallery.db_path) as db:
        db.execute("UPDATE items SET parent_id = ? WHERE id = ?", (y["id"], x["id"]))
        db.execute("UPDATE items SET parent_id = ? WHERE id = ?", (x["id"], y["id"]))
    db.close()
    lin = gallery.lineage(x["id"])
    assert [i["id"] for i in lin["ancestors"]] == [y["id"]]
    assert [n["item"]["id"] for n in lin["descendants"]] == [y["id"]] and lin["descendants"][0]["children"] == []


def test_delete_and_bad_ids(gallery):
    item = add(gallery, b"abc")
    path = gallery.path(item)
    assert gallery.delete(item["id"]) is True and not path.exists() and gallery.count() == 0
    assert gallery.delete(item["id"]) is False and gallery.delete("f" * 32) is False
    for bad in ("../x", "", "A" * 32, "0" * 31, "0" * 33, None, 5, "../" + "0" * 32):
        assert gallery.get(bad) is None and gallery.delete(bad) is False
        with pytest.raises(ItemNotFound):
            gallery.lineage(bad)
    for forged in ({"file": "../gallery.sqlite"}, {"file": "/etc/passwd"}, {}, {"file": "0" * 32 + ".png/.."}):
        with pytest.raises(ItemNotFound):
            gallery.path(forged)


# ---- restart, orphans, kill -9 -----------------------------------------------------------------------
def test_restart_keeps_everything(tmp_path):
    studio = tmp_path / ".studio"
    with Gallery(studio) as g:
        a = add(g, b"one", params={"k": "é"})
        b = add(g, b"two", ".txt", parent_id=a["id"], text="two")
    g2 = Gallery(studio)
    try:
        assert g2.get(a["id"]) == a and g2.get(b["id"]) == b and g2.count() == 2
        assert g2.path(b).read_bytes() == b"two"
        assert [x["id"] for x in g2.lineage(b["id"])["ancestors"]] == [a["id"]]
        with sqlite3.connect(g2.db_path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        db.close()
    finally:
        g2.close()
    with pytest.raises(Exception, match="closed"):
        g2.count()


def test_orphans_removed_on_open(tmp_path):
    studio = tmp_path / ".studio"
    with Gallery(studio) as g:
        keep = add(g, b"keep")
        lost = add(g, b"lost")
    items = studio / "items"
    (items / "stray.png").write_bytes(b"stray")
    (items / ("a" * 32 + ".png")).write_bytes(b"written, never recorded")
    (items / f".{'b' * 32}.png.1234abcd.tmp").write_bytes(b"half")
    (items / lost["file"]).unlink()  # a row without its file (only by hand)
    first = Gallery(studio)
    try:
        assert {p.name for p in items.iterdir()} == {keep["file"]}
        assert first.count() == 1 and first.get(lost["id"]) is None
        # a second gallery open on the same folder must not sweep: the first may be mid-add
        (items / "in-flight.png").write_bytes(b"about to get its row")
        Gallery(studio).close()
        assert (items / "in-flight.png").exists()
    finally:
        first.close()
    with Gallery(studio) as alone:
        assert {p.name for p in items.iterdir()} == {keep["file"]} and alone.get(keep["id"]) == keep


def test_corrupt_database_is_a_one_line_error(tmp_path):
    studio = tmp_path / ".studio"
    studio.mkdir()
    (studio / "gallery.sqlite").write_bytes(b"not a database at all" * 100)
    from genforge.errors import RunError

    with pytest.raises(RunError, match="corrupt"):
        Gallery(studio)


CHILD = """
import os, sys
from pathlib import Path
from genforge.serve.gallery import Gallery
g = Gallery(Path(sys.argv[1]))
n = 0
while True:
    size = (n * 7919) % 300_000 + 1
    g.add(data=os.urandom(size), suffix=".bin", run_id="r", family="f", modality="m", mode="sample",
          params={"n": n, "seed": n}, text=str(n))
    n += 1
    print(n, flush=True)
"""


def test_kill_9_mid_write_leaves_a_consistent_gallery(tmp_path):
    studio = tmp_path / ".studio"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(studio)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        reported, first = 0, None
        while True:
            line = proc.stdout.readline()
            assert line, f"the writer died: {proc.stderr.read()[-2000:]}"
            reported = int(line)
            first = first or time.monotonic()
            if reported >= 5 and time.monotonic() - first > 1.0:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reported = max([reported, *(int(x) for x in proc.stdout.read().split())])
    finally:
        watchdog.cancel()
        proc.stdout.close()
        proc.stderr.close()
    with sqlite3.connect(studio / "gallery.sqlite") as db:  # recovery happens on this first open
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Gallery(studio) as g:
        assert g.count() >= reported
        rows, total = g.search(limit=500)
        assert total == g.count() <= 500
        for item in rows:
            assert g.path(item).stat().st_size == item["size"], item
        assert files(g) == {i["file"] for i in rows}  # no orphans, no temporary files


# ---- threads, properties -----------------------------------------------------------------------------
def test_threads_adding_at_once(gallery):
    made: list[dict] = []
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for k in range(25):
                made.append(add(gallery, f"{t}-{k}".encode(), run_id=f"t{t}", params={"k": k}))
                gallery.search(run_id=f"t{t}", limit=5)  # reads interleaved with writes
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert gallery.count() == 100 and len({i["id"] for i in made}) == 100
    for item in made:
        assert gallery.get(item["id"]) == item and gallery.path(item).read_bytes().decode().endswith(
            f"-{item['params']['k']}")
    assert sorted(gallery.runs()) == ["t0", "t1", "t2", "t3"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.text(max_size=10), JSON, max_size=6))
def test_params_round_trip(gallery, params):
    item = add(gallery, params=params)
    assert item["params"] == params and gallery.get(item["id"])["params"] == params
