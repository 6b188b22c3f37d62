"""The studio (``genforge serve``) under abuse: a fuzzer on its OpenAPI schema, ten times more requests than
its queue holds, a restart, a ``kill -9`` mid-write, hostile requests a fuzzer would not make, and its token.

Real servers are ``genforge serve`` processes on a free loopback port; the rest runs the app in-process.
Every test has its own copy of the tiny studio runs (``studiotools``), so its own gallery."""

from __future__ import annotations

import base64
import io
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clitools import command, environment, one_error_line, run_main
from genforge.serve.app import create_app
from genforge.serve.catalog import STUDIO_DIR
from genforge.serve.security import COOKIE, MAX_BODY
from studiotools import copy_runs

pytestmark = pytest.mark.usefixtures("one_thread")

STATIC = Path(__file__).resolve().parents[1] / "src" / "genforge" / "serve" / "static"
ACTIVE = ("queued", "running")
SERVER_START_S = 90  # a cold interpreter importing torch on two busy cores
JOB_S = 90


# ---- helpers -------------------------------------------------------------------------------------------
def png(size=(8, 8), mode="L", color=0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def half_mask(size=(8, 8)) -> bytes:
    """White (generate) on the left half, black (keep) on the right."""
    img = Image.new("L", size, 0)
    img.paste(255, (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A valid little PNG whose header declares ``width`` x ``height`` (a decompression bomb's header)."""
    real = png((1, 1))
    ihdr = struct.pack(">II", width, height) + real[24:29]  # bit depth, colour type, ... of the real one
    chunk = b"IHDR" + ihdr
    return real[:8] + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + real[33:]


def one_line_detail(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, response.text[:500]
    assert "Traceback" not in detail
    return detail


def wait_job(get, job_id: str, timeout: float = JOB_S) -> dict:
    """The job once it has finished (``get`` answers GET paths)."""
    deadline = time.monotonic() + timeout
    while True:
        job = get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ACTIVE:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s: {job}"
        time.sleep(0.05)


def raw_get(app, raw_path: str, host: bytes = b"127.0.0.1") -> tuple[int, bytes]:
    """GET ``raw_path`` exactly as written (HTTP clients resolve '..' before sending; a hostile client does
    not): the app sees what uvicorn hands it, the percent-decoded path, dots and all."""
    path, _, query = raw_path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote(path), "raw_path": path.encode("latin-1"), "query_string": query.encode("latin-1"),
             "root_path": "", "headers": [(b"host", host)], "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8000)}
    sent: list[dict] = []
    asked = 0

    async def receive():  # the request, then (a response listens for it) the client leaving once answered
        nonlocal asked
        asked += 1
        if asked == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        while not (sent and sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body")):
            await anyio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def call():
        with anyio.fail_after(30):
            await app(scope, receive, send)

    anyio.run(call)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``genforge serve RUNS --port P --max-queued 4 --cpu-jobs 1`` in a child process, its output in a log."""

    def __init__(self, runs: Path, log: Path):
        self.runs, self.log_path = runs, log
        self.proc: subprocess.Popen | None = None
        for _ in range(3):  # a free port can be taken between the probe and the bind: try another
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(command("serve", runs, "--port", self.port, "--max-queued", 4,
                                                     "--cpu-jobs", 1),
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             env=environment())
            if self._wait_up():
                self.client = httpx.Client(base_url=self.url, timeout=60)
                return
        raise AssertionError(f"the studio did not start: {self.log()[-3000:]}")

    def _wait_up(self) -> bool:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log().lower():
                    return False
                raise AssertionError(f"the studio exited with {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/health", timeout=5).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        self.proc.wait(30)
        raise AssertionError(f"the studio did not answer /api/health in {SERVER_START_S} s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.client.post(path, **kw)

    def generate(self, run: str = "diff", **body) -> dict:
        response = self.post(f"/api/runs/{run}/generate", json=body)
        assert response.status_code == 202, response.text
        return wait_job(self.get, response.json()["id"])

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def gallery(self, **query) -> list[dict]:
        listing = self.get("/api/gallery", params={"limit": 500, **query}).json()
        assert listing["total"] == len(listing["items"]) < 500, listing["total"]
        return listing["items"]


@pytest.fixture
def servers(tmp_path):
    """Start studios with ``servers(runs)``; whatever is still running at the end is killed."""
    started: list[Server] = []

    def start(runs: Path) -> Server:
        server = Server(runs, tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(30)


def no_traceback(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


def item_files(runs: Path) -> set[str]:
    return {p.name for p in (runs / STUDIO_DIR / "items").iterdir()}


# ---- 1. a fuzzer on the OpenAPI schema ---------------------------------------------------------------------
FUZZ_EXAMPLES = 5  # per strategy: about 400 requests in all
FUZZ_DEADLINE = timedelta(seconds=10)  # per request; models are loaded before, jobs run beside


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_server_error(studio_runs, tmp_path):
    """schemathesis on every operation of /openapi.json, in-process: no 5xx, whatever it sends.

    Random ids only ever reach a 404, so each operation is fuzzed again with its ids pinned to real ones
    (every run for run-scoped operations, a gallery item, a finished job) and refinements get a real input
    item: bodies then reach the run's own checks and real jobs. Operations that take a body or a query are
    also fuzzed with data that breaks the schema (negative mode: 422s, never 500s).

    Bounded: 8 examples a strategy, derandomized (the same requests every run: a failure reproduces), a
    deadline a request; one job runs at a time and 4 may wait (429 after that), and every job left is
    cancelled at the end. Training cannot start: a new run needs a real family and data source (random
    strings are refused before any process starts) and ``resume`` is only fuzzed on runs that do not exist;
    the test checks that no training job was ever accepted."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    runs = copy_runs(studio_runs, tmp_path / "runs")
    app = create_app(runs, cpu_jobs=1, max_queued=4)
    studio = app.state.studio
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # also starts the app's lifespan
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]

    setup = TestClient(app)  # the lifespan is running already
    made, job_ids = {}, []
    for run, count in (("diff", 2), ("gan", 2), ("code", 1)):  # also loads each model outside any deadline
        response = setup.post(f"/api/runs/{run}/generate", json={"count": count, "seed": 1})
        assert response.status_code == 202, response.text
        job = wait_job(setup.get, response.json()["id"])
        assert job["status"] == "done", job
        made[run], job_ids = job["result"]["items"], [*job_ids, job["id"]]
    doomed = made["gan"][1]  # the one item DELETE may take

    def with_inputs(run):
        def pin(case):
            if isinstance(case.body, dict):
                case.body["input_id"] = made[run][0]
                if "other_id" in case.body:
                    case.body["other_id"] = made[run][-1]
                if case.body.get("mode") == "inpaint" and "mask" in case.body:
                    case.body["mask"] = data_url(half_mask())
            return case
        return pin

    strategies = []
    for op in operations:
        strategies.append((op.label, op.as_strategy()))
        if op.body or op.query:
            strategies.append((f"{op.label} (negative)", op.as_strategy(GenerationMode.NEGATIVE)))
        pins = []
        if "{run_id}" in op.path and not op.path.endswith("/resume"):
            pins = [{"run_id": run} for run in made]
        elif "{item_id}" in op.path:
            pins = [{"item_id": doomed if op.method.upper() == "DELETE" else made["diff"][0]}]
        elif "{job_id}" in op.path:
            pins = [{"job_id": job_ids[0]}]
        for pin in pins:
            strategy = op.as_strategy(path_parameters=pin)
            if op.path.endswith("/refine"):
                strategy = strategy.map(with_inputs(pin["run_id"]))
            strategies.append((f"{op.label} {pin}", strategy))

    failures: list[str] = []
    started = time.monotonic()
    try:
        for label, strategy in strategies:
            @settings(max_examples=FUZZ_EXAMPLES, deadline=FUZZ_DEADLINE, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                      report_multiple_bugs=False)
            @given(case=strategy)
            def fuzz(case):
                response = case.call()
                case.validate_response(response, checks=[not_a_server_error])

            try:
                fuzz()
            except Unsatisfiable:
                assert "(negative)" in label, label  # nothing in it can break the schema: nothing to send
            except Exception as e:  # every strategy runs; their failures are reported together
                failures.append(f"{label}: {type(e).__name__}: {str(e)[:1500]}")
    finally:
        jobs = studio.queue.list()
        for job in jobs:
            if job["status"] in ACTIVE:
                studio.queue.cancel(job["id"])
        studio.queue.close()
        studio.gallery.close()
    assert not failures, "\n\n".join(failures)
    assert not [j for j in jobs if j["kind"] == "train"], "a fuzzed request started training"
    assert len(jobs) > len(job_ids), "no fuzzed request got as far as a job"
    assert time.monotonic() - started < 300


# ---- 2-4. a burst ten times the queue, a restart, a kill -9 mid-write: one studio's life ------------------------
@pytest.mark.slow
def test_a_burst_a_kill_9_and_a_restart_lose_no_answer_and_no_item(studio_runs, tmp_path, servers):
    """One runs folder through two servers (each a cold `genforge serve` process: the costly part): a burst, a
    lineage, a kill -9 while jobs write, then a restart that finds all of it; the second server stops cleanly."""
    runs = copy_runs(studio_runs, tmp_path / "runs", names=("diff",))
    server = servers(runs)
    warm = server.generate(count=1, seed=0)  # the model loaded, so the burst meets the queue, not the loading
    assert warm["status"] == "done", warm

    # 40 requests at once against 1 running + 4 waiting: each answered 202 or 429, nothing lost
    gate = threading.Barrier(40)

    def at_once(i: int) -> httpx.Response:
        gate.wait(30)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.post("/api/runs/diff/generate", json={"count": 3, "seed": i})

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(at_once, range(40)))  # a connection error would raise here
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {202, 429}, statuses
    accepted = [r.json() for r in answers if r.status_code == 202]
    refused = [r for r in answers if r.status_code == 429]
    assert accepted and refused, statuses
    for r in refused:
        assert "queue is full" in one_line_detail(r)
        assert int(r.headers["Retry-After"]) > 0
    assert server.get("/api/health").json()["ok"] is True
    done = [wait_job(server.get, job["id"]) for job in accepted]
    assert [j["status"] for j in done] == ["done"] * len(done), [(j["status"], j["error"]) for j in done]
    assert all(len(j["result"]["items"]) == 3 for j in done)
    made = [item for job in [warm, *done] for item in job["result"]["items"]]
    listed = server.gallery(run="diff")
    assert sorted(i["id"] for i in listed) == sorted(made)
    assert item_files(runs) == {i["file"] for i in listed}

    # a lineage three deep, kept through the kill -9 below and the restart after it
    parent = made[0]
    inpaint = server.post("/api/runs/diff/refine", json={"mode": "inpaint", "input_id": parent, "count": 2,
                                                         "seed": 6, "mask": data_url(half_mask())})
    assert inpaint.status_code == 202, inpaint.text
    children = wait_job(server.get, inpaint.json()["id"])["result"]["items"]
    grandchild = server.post("/api/runs/diff/refine", json={"mode": "img2img", "input_id": children[0], "count": 1,
                                                            "seed": 7, "strength": 0.4})
    assert grandchild.status_code == 202, grandchild.text
    [grandchild_id] = wait_job(server.get, grandchild.json()["id"])["result"]["items"]
    before = server.gallery()
    files = {i["id"]: server.get(f"/api/gallery/{i['id']}/file").content for i in before}
    lineage = server.get(f"/api/gallery/{children[0]}/lineage").json()
    assert [a["id"] for a in lineage["ancestors"]] == [parent]
    assert [d["item"]["id"] for d in lineage["descendants"]] == [grandchild_id]

    # kill -9 while jobs write items: every listed item whole, no file without its row, scratch cleaned
    stop = threading.Event()
    submitted: list[str] = []

    def keep_busy():
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post("/api/runs/diff/generate", json={"count": 8})
                except httpx.TransportError:
                    return  # killed
                if response.status_code == 202:
                    submitted.append(response.json()["id"])
                time.sleep(0.02)

    feeder = threading.Thread(target=keep_busy, daemon=True)
    feeder.start()
    deadline = time.monotonic() + JOB_S
    while True:  # kill once items are pouring in: some jobs done, one running (writing items), others waiting
        assert time.monotonic() < deadline, "the studio never got busy"
        if len(submitted) >= 4 and len(item_files(runs)) >= len(before) + 9:
            if [j for j in server.get("/api/jobs").json() if j["status"] == "running"]:
                break
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(30)
    stop.set()
    feeder.join(30)

    again = servers(runs)  # a restart: what was there before the kill is there, the same
    assert again.get("/api/health").json()["ok"] is True
    listed = again.gallery()
    assert [i for i in listed if i["id"] in files] == before  # the same items, params, parents, order
    for item in before:
        assert again.get(f"/api/gallery/{item['id']}/file").content == files[item["id"]]
    assert again.get(f"/api/gallery/{children[0]}/lineage").json() == lineage
    tree = again.get(f"/api/gallery/{parent}/lineage").json()
    assert sorted(d["item"]["id"] for d in tree["descendants"]) == sorted(children)
    assert len(listed) > len(before)
    for item in listed:
        response = again.get(f"/api/gallery/{item['id']}/file")
        assert response.status_code == 200 and len(response.content) == item["size"], item
        with Image.open(io.BytesIO(response.content)) as img:
            img.load()
    assert item_files(runs) == {i["file"] for i in listed}  # no file without its row, no row without its file
    studio_dir = runs / STUDIO_DIR
    left = [p.relative_to(studio_dir).as_posix() for p in (studio_dir / "scratch").glob("*")]
    left += [p.name for p in studio_dir.iterdir() if p.is_file() and not p.name.startswith("gallery.")]
    assert not left, f"a kill -9 left {left} under RUNS/{STUDIO_DIR}, and a restart kept them"
    fresh = again.generate(count=2)
    assert fresh["status"] == "done", fresh
    assert again.get("/api/gallery", params={"limit": 1}).json()["total"] == len(listed) + 2
    assert again.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
    no_traceback(again)


# ---- 5. what a fuzzer would not send ---------------------------------------------------------------------------
@pytest.fixture
def studio(studio_runs, tmp_path):
    """The app in-process on its own runs, with one diffusion item (``studio.item``) to refine."""
    runs = copy_runs(studio_runs, tmp_path / "runs")
    app = create_app(runs, cpu_jobs=1, max_queued=4)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/api/runs/diff/generate", json={"count": 1, "seed": 3})
        assert response.status_code == 202, response.text
        job = wait_job(client.get, response.json()["id"])
        assert job["status"] == "done", job
        client.app_under_test, client.runs, client.item = app, runs, job["result"]["items"][0]
        yield client


TRAVERSALS = [
    "/api/runs/..%2f..%2fetc/metrics", "/api/runs/..%2f..%2fetc%2fpasswd", "/api/runs/runs/../x",
    "/api/runs/../../etc/passwd", "/api/runs/%2Fetc%2Fpasswd", "/api/runs/%2e%2e", "/api/runs/.studio",
    "/api/runs/.studio/metrics", "/api/runs/diff/grids/..%2fmodel.safetensors", "/api/runs/diff/grids/../config.yaml",
    "/api/runs/diff/grids/%2Fetc%2Fpasswd", "/api/runs/diff%2F..%2Fgan", "/api/runs/diff/../../../etc/passwd",
    "/api/gallery/..%2fgallery.sqlite/file", "/api/gallery/..%2f..%2fdiff%2fmodel.safetensors/file",
    "/api/gallery/%2e%2e/file", "/api/gallery/../gallery.sqlite", "/api/gallery/%2Fetc%2Fpasswd/file",
    "/api/gallery/..%2f..%2fetc%2fpasswd", "/api/reports/..%2f..%2fgallery.sqlite", "/api/reports/../items",
    "/api/jobs/..%2f..%2fetc", "/static/..%2f..%2fapp.py", "/static/../app.py", "/static/%2e%2e/app.py",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static//etc/passwd", "/static/%2Fetc%2Fpasswd",
]


def test_path_traversal_in_ids_is_a_404_never_a_file(studio):
    app = studio.app_under_test
    secrets = [b"root:", b"def create_app", b"SQLite format", b"safetensors", b"family:", b"__metadata__"]
    for path in TRAVERSALS:
        status, body = raw_get(app, path)
        assert status in (404, 422), (path, status, body[:200])
        assert not any(s in body for s in secrets), (path, body[:200])
    item = studio.item
    for path in (f"/api/gallery/{item}/..%2f..%2fgallery.sqlite",
                 f"/api/gallery/{item}%2f..%2f..%2fgallery.sqlite/file"):
        status, body = raw_get(app, path)
        assert status in (404, 405, 422) and b"SQLite" not in body, (path, status)
    assert raw_get(app, f"/api/gallery/{item}/file")[0] == 200  # the real one still served
    # a training source outside --data-dir (there is none) is refused before anything starts
    for data in ("folder:../../etc", "folder:/etc", "csv:../diff/metrics.jsonl"):
        response = studio.post("/api/train", json={"name": "t1", "family": "diffusion", "data": data})
        assert response.status_code == 400, response.text
        assert "--data-dir" in one_line_detail(response)
    assert not (studio.runs / "t1").exists() and studio.get("/api/jobs").json()[0]["kind"] == "generate"
    # another Host name (DNS rebinding) is refused when there is no token
    assert raw_get(app, "/api/health", host=b"evil.example")[0] == 400


def test_huge_bodies_are_refused_and_the_studio_answers_on(studio):
    big = b'{"count": 1, "prompt": "' + b"x" * (MAX_BODY + 1024) + b'"}'
    response = studio.post("/api/runs/code/generate", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text[:300]
    assert "larger than 16 MiB" in one_line_detail(response)

    def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]

    response = studio.post("/api/runs/code/generate", content=chunks(), headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text[:300]
    one_line_detail(response)
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_BODY)
    response = studio.post("/api/runs/diff/uploads", files={"file": ("big.png", too_big)})
    assert response.status_code == 413
    response = studio.post("/api/runs/diff/generate", content=b"1", headers={"content-length": "x1",
                                                                             "content-type": "application/json"})
    assert response.status_code == 400
    assert studio.get("/api/health").json()["ok"] is True
    assert studio.get("/api/jobs").json()[0]["kind"] == "generate" and len(studio.get("/api/jobs").json()) == 1


def test_bad_uploads_are_a_one_line_4xx(studio):
    # a 5000x5000 palette image: 25 M pixels in a file of a few KiB
    bomb = io.BytesIO()
    Image.new("P", (5000, 5000), 0).save(bomb, format="PNG", optimize=True)
    assert len(bomb.getvalue()) < 100_000
    cases = {
        "bomb.png": bomb.getvalue(),
        "declared.png": declared_png(20000, 20000),  # Pillow's own bomb limit, before any pixel is read
        "zero.png": declared_png(0, 8),
        "notes.png": b"just some text, not an image at all\n" * 10,
        "script.png": b"<?php system($_GET['c']); ?>",
        "truncated.png": png()[:40],
        "empty.png": b"",
        "doc.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
        "big.png": b"\x89PNG\r\n\x1a\n" + bytes(9 * 2**20),  # over the 8 MiB of one image
    }
    for name, data in cases.items():
        response = studio.post("/api/runs/diff/uploads", files={"file": (name, data, "image/png")})
        assert response.status_code == 400, (name, response.status_code, response.text[:300])
        detail = one_line_detail(response)
        assert len(detail) < 300, (name, detail)
    assert "pixels" in studio.post("/api/runs/diff/uploads",
                                   files={"file": ("bomb.png", cases["bomb.png"])}).json()["detail"]
    response = studio.post("/api/runs/diff/uploads", files={"not_file": ("a.png", png())})
    assert response.status_code == 422
    response = studio.post("/api/runs/diff/uploads", content=b"x", headers={"content-type": "multipart/form-data"})
    assert 400 <= response.status_code < 500
    # nothing of all that reached the gallery: the one generated item is alone
    assert studio.get("/api/gallery").json()["total"] == 1
    assert len(item_files(studio.runs)) == 1
    good = studio.post("/api/runs/diff/uploads", files={"file": ("ok.png", png((8, 8), "RGB", (9, 9, 9)))})
    assert good.status_code == 201 and good.json()["mode"] == "upload"


def test_bad_masks_and_settings_are_refused_naming_what_is_wrong(studio):
    item = studio.item

    def refine(**body):
        return studio.post("/api/runs/diff/refine", json={"mode": "inpaint", "input_id": item, "count": 1, **body})

    response = refine(mask=data_url(half_mask((4, 6))))
    assert response.status_code == 400, response.text
    detail = one_line_detail(response)
    assert "4x6" in detail and "8x8" in detail, detail
    for mask, words in ((None, "mask"), ("not base64!", "base64"), ("data:image/png,abc", "base64"),
                        (base64.b64encode(b"GIF89a nonsense").decode(), "mask"),
                        (data_url(declared_png(20000, 20000)), "mask")):
        response = refine(**({} if mask is None else {"mask": mask}))
        assert response.status_code == 400, (mask, response.text)
        assert words in one_line_detail(response)
    response = refine(mask=data_url(half_mask()), settings={"steps": "x"})
    assert response.status_code == 400 and "steps" in one_line_detail(response)
    response = refine(input_id="0" * 32, mask=data_url(half_mask()))
    assert response.status_code == 404

    def generate(**body):
        return studio.post("/api/runs/diff/generate", json={"count": 1, **body})

    for settings, name in (({"steps": "x"}, "steps"), ({"steps": 0}, "steps"), ({"steps": -3}, "steps"),
                           ({"steps": 2.5}, "steps"), ({"sampler": 5}, "sampler"), ({"sampler": "nope"}, "sampler"),
                           ({"eta": 2}, "eta"), ({"guidance": -1}, "guidance"), ({"bogus": 1}, "bogus"),
                           ({"steps": [4]}, "steps"), ({"steps": {"a": 1}}, "steps"), ({"steps": True}, "steps")):
        response = generate(settings=settings)
        assert response.status_code in (400, 422), (settings, response.text)
        assert name in response.text, (settings, response.text)
    for body in ({"count": 0}, {"count": 65}, {"count": 4.5}, {"count": "four"}, {"seed": -2}, {"seed": 2**31},
                 {"extra": 1},
                 {"parent_id": "../../etc"}, {"stop": ["x"] * 17}, {"settings": {f"k{i}": 1 for i in range(33)}}):
        response = studio.post("/api/runs/diff/generate", json=body)
        assert response.status_code == 422, (body, response.text)
    for raw in (b"", b"{", b"[]", b"null", b'{"count": 1}' * 2, b"\xff\xfe", b'{"count": 1,}'):
        response = studio.post("/api/runs/diff/generate", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, (raw, response.text)
    response = generate(prompt="hello")
    assert response.status_code == 400 and "text runs" in one_line_detail(response)
    assert [j["kind"] for j in studio.get("/api/jobs").json()] == ["generate"]  # none of them queued a job


def test_settings_out_of_the_runs_range_are_refused_when_they_arrive(studio):
    """work.py promises "a bad setting is a 400 before anything waits in the queue". Today these pass the
    request's check, are accepted (202) and fail later, in the job: the page shows "queued", then an error,
    and the request held a queue slot meanwhile (a full queue refuses others)."""
    accepted = []
    for run, body in (("diff", {"settings": {"steps": 1000}}),  # more than the run's 100 timesteps
                      ("diff", {"settings": {"label": 99}}), ("diff", {"settings": {"label": "x"}}),
                      ("gan", {"settings": {"label": -1}}), ("code", {"prompt": "def", "stop": [""]})):
        response = studio.post(f"/api/runs/{run}/generate", json={"count": 1, **body})
        if response.status_code == 202:
            job = wait_job(studio.get, response.json()["id"])
            accepted.append(f"POST /api/runs/{run}/generate {body}: 202, then the job {job['status']}: {job['error']}")
        else:
            assert response.status_code in (400, 422), response.text
    assert not accepted, "\n".join(accepted)


def test_accepted_decoding_settings_never_end_in_an_internal_error(studio):
    """Values the run declares valid (repetition_penalty > 0, temperature >= 0) give text, or a 400 naming
    them; never a failed job "internal error: RuntimeError: probability tensor contains either inf, nan..."."""
    broken = []
    for settings in ({"repetition_penalty": 1e-300}, {"temperature": 1e-300}, {"temperature": 1e300},
                     {"repetition_penalty": 1e300}, {"top_p": 1e-300}, {"min_p": 1.0}):
        response = studio.post("/api/runs/code/generate", json={"count": 1, "prompt": "def", "settings": settings})
        if response.status_code == 400:
            one_line_detail(response)  # refused up front, naming the setting: fine too
            continue
        assert response.status_code == 202, response.text
        job = wait_job(studio.get, response.json()["id"])
        if job["status"] != "done":
            broken.append(f"POST /api/runs/code/generate settings={settings}: {job['status']}: {job['error']}")
    assert not broken, "\n".join(broken)


def test_json_values_a_response_cannot_echo_are_a_4xx_not_a_500(studio):
    """Python's JSON reader takes NaN and Infinity, and "\\ud800" (half a UTF-16 pair) becomes a lone
    surrogate; no JSON response can carry them back (Starlette renders with allow_nan=False, then UTF-8), so
    an error message that echoes one must not turn a 4xx into a 500."""
    answers = []
    for path, raw in (("/api/runs/diff/generate", '{"count": NaN}'),
                      ("/api/runs/diff/generate", '{"seed": Infinity}'),
                      ("/api/runs/diff/refine", '{"mode": "img2img", "strength": NaN}'),
                      ("/api/train", '{"name": "t1", "family": "nope", "data": "nope", "lr": NaN}'),
                      ("/api/runs/diff/resume", '{"max_minutes": -Infinity}'),
                      ("/api/compare", '{"runs": ["diff"], "n": NaN}'),
                      ("/api/runs/code/generate", r'{"count": 1, "prompt": "\ud800def"}'),
                      ("/api/runs/diff/generate", r'{"count": 1, "settings": {"\ud800": 1}}'),
                      ("/api/runs/diff/generate", r'{"count": 1, "settings": {"sampler": "\udfff"}}'),
                      ("/api/runs/diff/generate", r'{"count": 1, "\ud800": 1}'),
                      ("/api/runs/code/generate", r'{"count": 1, "prompt": "d", "stop": ["\ud800"]}')):
        response = studio.post(path, content=raw.encode(), headers={"content-type": "application/json"})
        outcome = response.status_code
        if outcome == 202:  # accepted: then its job must not fail storing what it made
            job = wait_job(studio.get, response.json()["id"])
            outcome = f"202, then the job {job['status']}: {job['error']}" if job["status"] != "done" else 202
        answers.append((f"POST {path} {raw}", outcome))
    bad = [f"{request} -> {outcome}" for request, outcome in answers
           if not (isinstance(outcome, int) and (400 <= outcome < 500 or outcome == 202))]
    assert not bad, "\n".join(bad)
    assert studio.get("/api/health").json()["ok"] is True
    assert not any(j["kind"] == "train" for j in studio.get("/api/jobs").json())


# ---- 6. the token --------------------------------------------------------------------------------------------------
TOKEN = "s3cret-token"


def test_a_token_guards_every_route_and_is_carried_three_ways(studio_runs, tmp_path):
    runs = copy_runs(studio_runs, tmp_path / "runs", names=("diff",))
    app = create_app(runs, token=TOKEN, cpu_jobs=1, max_queued=4)
    static = sorted(p.name for p in STATIC.iterdir() if p.is_file())[0]
    job_id = "0" * 32
    gets = ["/", f"/static/{static}", "/openapi.json", "/docs", "/api/health", "/api/runs", "/api/runs/diff",
            "/api/jobs", f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/events", "/api/gallery", f"/api/gallery/{job_id}",
            f"/api/gallery/{job_id}/file", "/favicon.ico", "/no/such/page"]
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in gets:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN},
                            {"Cookie": f"{COOKIE}=nope"}, {"Cookie": "garbage;;=="}):
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers, response.status_code)
                assert "token" in one_line_detail(response)
            assert client.get(path + "?token=wrong").status_code == 401
        for path, body in (("/api/runs/diff/generate", {"count": 1}), ("/api/train", {}),
                           (f"/api/jobs/{job_id}/cancel", {})):
            assert client.post(path, json=body).status_code == 401
        routes = 0  # every route the app has, today's and tomorrow's
        for route in app.routes:
            path = getattr(route, "path", "")
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                url = re.sub(r"\{[^}]+\}", job_id, path.replace("{run_id}", "diff"))
                if method == "HEAD":
                    continue
                if not getattr(route, "methods", None):  # a mount: the static files
                    url = f"{path}/{static}"
                response = client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
                assert response.status_code == 401, (method, url, response.status_code)
                routes += 1
        assert routes >= 25
        assert client.delete(f"/api/gallery/{job_id}").status_code == 401
        assert client.post("/api/runs/diff/uploads", files={"file": ("a.png", png())}).status_code == 401
        assert client.get("/api/gallery").status_code == 401 and not client.cookies

        # 1. the header
        for path in ("/", f"/static/{static}", "/openapi.json", "/api/health"):
            assert client.get(path, headers=bearer).status_code == 200, path
        assert client.get("/api/health", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
        assert client.get(f"/api/jobs/{job_id}/events", headers=bearer).status_code == 404
        response = client.post("/api/runs/diff/generate", json={"count": 1, "seed": 1}, headers=bearer)
        assert response.status_code == 202, response.text
        job = response.json()["id"]
        with client.stream("GET", f"/api/jobs/{job}/events", headers=bearer) as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
            text = "".join(events.iter_text())
        assert "event: item" in text and '"status": "done"' in text, text[-1000:]
        assert not client.cookies  # a header sets no cookie

        # 2. the query, which sets a cookie
        response = client.get(f"/?token={TOKEN}")
        assert response.status_code == 200 and "<html" in response.text.lower()
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.cookies.get(COOKIE) == TOKEN

        # 3. the cookie alone, as the page's images and event streams carry it: the one the server set, then
        # one sent by hand
        for jar in ("the server's", "by hand"):
            if jar == "by hand":
                client.cookies.clear()
                client.cookies.set(COOKIE, TOKEN)
            for path in ("/", f"/static/{static}", "/openapi.json", "/api/health", "/api/gallery", f"/api/jobs/{job}"):
                assert client.get(path).status_code == 200, (jar, path)
            item = client.get("/api/gallery").json()["items"][0]["id"]
            assert client.get(f"/api/gallery/{item}/file").status_code == 200
            with client.stream("GET", f"/api/jobs/{job}/events") as events:
                assert events.status_code == 200
                assert '"status": "done"' in "".join(events.iter_text())
        client.cookies.clear()
        assert client.get("/api/health").status_code == 401


def test_serve_refuses_other_hosts_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("GENFORGE_TOKEN", raising=False)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        line = one_error_line(run_main("serve", tmp_path / "runs", "--host", host, "--port", free_port()))
        assert f"--host {host}" in line and "--token" in line, line
    line = one_error_line(run_main("serve", tmp_path / "runs", "--host", "0.0.0.0", "--token", "short"))
    assert "at least 8" in line
    assert not (tmp_path / "runs").exists()  # refused before anything was made
