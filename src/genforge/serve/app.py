"""The studio's web app (FastAPI): one page with local assets, and the REST API the page and scripts use.

    app = create_app("runs")          # what `genforge serve runs` serves with uvicorn

Runs, gallery items, jobs and reports are addressed by ID, never by a path a client gives. A user's mistake
is a 4xx with ``{"detail": "one line"}``; a full queue is 429. Routes stay thin: the work is in
``work.Studio``, the runs in ``catalog``, the outputs in ``gallery``, the queue in ``jobs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from importlib.resources import files
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, File, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from genforge import __version__
from genforge.errors import GenforgeError
from genforge.io import ensure_dir
from genforge.serve import schemas
from genforge.serve.catalog import STUDIO_DIR, Catalog, RunNotFound
from genforge.serve.gallery import Gallery, ItemNotFound
from genforge.serve.jobs import JobNotFound, JobQueue, QueueFull
from genforge.serve.security import MAX_BODY, BodyLimit, TokenGate, decode_data_url, decode_image, png_of
from genforge.serve.work import Studio, cpu_slots, device_key, refine_modes

STATIC = files("genforge.serve") / "static"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]", "testserver"]  # testserver: FastAPI's TestClient
EVENT_POLL_S = 0.05  # how often an event stream looks for new events
EVENT_WAIT_S = 15.0  # an event stream sends a comment at least this often, so proxies keep it open


class SafeJSON(JSONResponse):
    """JSON any client parses: non-finite numbers (a diverged run's loss) as null, text as ASCII escapes (a lone
    surrogate a client sent, quoted back in an error, cannot break the reply)."""

    def render(self, content) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def describe_invalid(errors) -> str:
    """FastAPI's validation errors as one line: "body.count: Input should be less than or equal to 64; ..."."""
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


def create_app(runs_dir: str | Path = "runs", *, token: str | None = None, device: str = "auto",
               max_queued: int = 16, cpu_jobs: int | None = None, data_dir: str | Path | None = None,
               compare_n: int = 200) -> FastAPI:
    root = ensure_dir(runs_dir, "runs folder")
    studio_dir = root / STUDIO_DIR
    key = device_key(device)
    # one job at a time on an accelerator (its memory is the limit), a few on a CPU
    queue = JobQueue({key: (cpu_jobs or cpu_slots()) if key == "cpu" else 1}, max_queued=max_queued)
    gallery = Gallery(studio_dir)
    catalog = Catalog(root, device)
    studio = Studio(catalog, gallery, queue, studio_dir, key, Path(data_dir) if data_dir else None, compare_n)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close()  # a training job is asked to checkpoint and stop
        gallery.close()

    # docs_url/redoc_url off: FastAPI's doc pages fetch their scripts from a CDN, and the studio works offline
    app = FastAPI(title="genforge studio", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  default_response_class=SafeJSON,
                  description="Generate, refine and train with genforge runs; every output kept in a gallery.")
    app.state.studio = studio

    # ---- errors: one line each, never a traceback -------------------------------------------------
    def _status(e: Exception) -> int:
        if isinstance(e, (RunNotFound, ItemNotFound, JobNotFound)):
            return 404
        if isinstance(e, QueueFull):
            return 429
        return 400

    @app.exception_handler(GenforgeError)
    async def _user_error(request: Request, e: GenforgeError):
        return SafeJSON({"detail": str(e)}, status_code=_status(e),
                        headers={"Retry-After": "5"} if isinstance(e, QueueFull) else None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        """One line per problem, naming the field; the bad value is not echoed back (it may be anything)."""
        return SafeJSON({"detail": describe_invalid(e.errors())}, status_code=422)

    # ---- the page ------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True, "version": __version__, "device": key, "queue": {"max_queued": queue.max_queued,
                                                                             "slots": queue.slots}}

    @app.get("/api/catalog")
    def what_there_is() -> dict:
        """What a new run can be made of: the families and the built-in data sources (the training form)."""
        from genforge.families import FAMILIES
        from genforge.modalities.prepare import builtin_sources

        return {"families": list(FAMILIES),
                "sources": [{"name": name, "modality": modality.name, "description": description}
                            for name, (modality, description) in builtin_sources().items()]}

    # ---- runs ------------------------------------------------------------------------------------------
    @app.get("/api/runs")
    def runs() -> list[dict]:
        return catalog.list()

    @app.get("/api/runs/{run_id}")
    def run(run_id: str) -> dict:
        """Family, data, progress, latest scores, config and, once it has weights, every capability with its
        settings, and the refine modes it offers with the capability whose settings each takes (what the page
        builds its forms from)."""
        opened = catalog.open(run_id)
        about = {**catalog.summary(opened), "config": opened.config.to_dict(), "capabilities": None,
                 "parameters": None, "writes": None}
        if opened.model_path.is_file():
            model, _ = catalog.model(run_id)
            described = model.describe()
            about.update(capabilities=described["capabilities"], parameters=described["parameters"],
                         writes=described["data"]["writes"], class_names=described["data"]["class_names"],
                         num_classes=described["data"]["num_classes"], latest_eval=described["latest_eval"],
                         refine=refine_modes(model))
        return about

    @app.get("/api/runs/{run_id}/metrics")
    def metrics(run_id: str, since: int = Query(0, ge=0, le=2**40)) -> dict:
        return {"records": catalog.curves(run_id, since)}

    @app.get("/api/runs/{run_id}/grids")
    def grids(run_id: str) -> list[dict]:
        return catalog.grids(run_id)

    @app.get("/api/runs/{run_id}/grids/{name}")
    def grid(run_id: str, name: str) -> FileResponse:
        return FileResponse(catalog.grid_path(run_id, name))

    @app.post("/api/runs/{run_id}/generate", status_code=202)
    def generate(run_id: str, body: schemas.GenerateRequest) -> dict:
        job = studio.generate(run_id, seed=body.seed, count=body.count, prompt=body.prompt, stop=body.stop,
                              settings=body.settings, parent_id=body.parent_id)
        return queue.describe(job)

    @app.post("/api/runs/{run_id}/refine", status_code=202)
    def refine(run_id: str, body: schemas.RefineRequest) -> dict:
        mask = decode_data_url(body.mask) if body.mask is not None else None
        if mask is not None:
            decode_image(mask, "the mask")
        job = studio.refine(run_id, body.mode, input_id=body.input_id, other_id=body.other_id, mask=mask,
                            strength=body.strength, count=body.count, seed=body.seed, settings=body.settings,
                            source=body.source, target=body.target, prefix=body.prefix, suffix=body.suffix)
        return queue.describe(job)

    @app.post("/api/runs/{run_id}/uploads", status_code=201)
    def upload(run_id: str, file: UploadFile = File(...)) -> dict:
        """An image of the user's own, kept as a gallery item (mode "upload") to refine with this run."""
        opened = catalog.open(run_id)
        data = file.file.read(MAX_BODY + 1)
        img = decode_image(data, f"the upload {file.filename or ''}".strip())
        return gallery.add(data=png_of(img), suffix=".png", run_id=run_id, family=opened.config.family,
                           modality=opened.spec.modality, mode="upload",
                           params={"mode": "upload", "filename": (file.filename or "")[:200],
                                   "width": img.size[0], "height": img.size[1]})

    # ---- training and comparing ----------------------------------------------------------------------
    @app.post("/api/train", status_code=202)
    def train(body: schemas.TrainRequest) -> dict:
        job = studio.train(body.name, family=body.family, data=body.data, steps=body.steps,
                           max_minutes=body.max_minutes, batch_size=body.batch_size, lr=body.lr, seed=body.seed,
                           sets=body.sets)
        return queue.describe(job)

    @app.post("/api/runs/{run_id}/resume", status_code=202)
    def resume(run_id: str, body: schemas.ResumeRequest) -> dict:
        return queue.describe(studio.resume(run_id, body.steps, body.max_minutes))

    @app.post("/api/compare", status_code=202)
    def compare(body: schemas.CompareRequest) -> dict:
        return queue.describe(studio.compare(body.runs, body.n, body.n_text))

    @app.get("/api/reports/{job_id}", response_class=HTMLResponse)
    def report(job_id: str) -> FileResponse:
        return FileResponse(studio.report_path(job_id), media_type="text/html")

    # ---- jobs ------------------------------------------------------------------------------------------
    @app.get("/api/jobs")
    def jobs() -> list[dict]:
        return queue.list()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict:
        return queue.describe(queue.get(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict:
        return queue.describe(queue.cancel(job_id))

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, after: int = Query(0, ge=0, le=2**40),
                     last_event_id: Optional[str] = Header(None, max_length=20)) -> StreamingResponse:
        """Server-Sent Events: status, progress (done, total, eta_s), piece (streamed text), item (a finished
        output); the stream ends when the job does. ``after`` (or the Last-Event-ID header a reconnecting
        EventSource sends) resumes after that event's ``seq``."""
        job = queue.get(job_id)
        if last_event_id is not None and last_event_id.isdigit():
            after = max(after, int(last_event_id))

        async def stream():
            seq, last = after, time.monotonic()
            while True:
                ended = job.status not in ("queued", "running")  # read first: an ended job's events are all there
                found = queue.events_since(job, seq, 0)  # polled: no thread held per listener
                for event in found:
                    seq, last = event["seq"], time.monotonic()
                    yield f"id: {seq}\nevent: {event['type']}\ndata: {json.dumps(event['data'], default=str)}\n\n"
                if found:
                    continue
                if ended:
                    return
                if time.monotonic() - last >= EVENT_WAIT_S:
                    last = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(EVENT_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- gallery -------------------------------------------------------------------------------------------
    @app.get("/api/gallery")
    def gallery_list(run: Optional[str] = Query(None, max_length=100), family: Optional[str] = Query(None, max_length=40),
                     modality: Optional[str] = Query(None, max_length=40), mode: Optional[str] = Query(None, max_length=40),
                     parent: Optional[str] = Query(None, max_length=32),
                     since: Optional[float] = Query(None, ge=0, le=1e11), until: Optional[float] = Query(None, ge=0, le=1e11),
                     setting: Optional[str] = Query(None, max_length=200), q: Optional[str] = Query(None, max_length=200),
                     limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9)) -> dict:
        items, total = gallery.search(run_id=run, family=family, modality=modality, mode=mode, parent_id=parent,
                                      since=since, until=until, setting=setting, text=q, limit=limit, offset=offset)
        return {"items": items, "total": total}

    @app.get("/api/gallery/{item_id}")
    def item(item_id: str) -> dict:
        found = gallery.get(item_id)
        if found is None:
            raise ItemNotFound(f"no gallery item {item_id!r}")
        return found

    @app.get("/api/gallery/{item_id}/file")
    def item_file(item_id: str, download: bool = False) -> FileResponse:
        found = item(item_id)
        name = f"genforge-{found['run_id']}-{found['id'][:8]}{found['suffix']}"
        return FileResponse(gallery.path(found), media_type=found["media_type"],
                            filename=name if download else None)

    @app.get("/api/gallery/{item_id}/lineage")
    def lineage(item_id: str) -> dict:
        return gallery.lineage(item_id)

    @app.delete("/api/gallery/{item_id}")
    def delete(item_id: str) -> dict:
        if not gallery.delete(item_id):
            raise ItemNotFound(f"no gallery item {item_id!r}")
        return {"deleted": item_id}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    # the outermost layers: the token first, then the size of what comes in
    if not token:  # loopback only: refuse other Host names, so a web page cannot reach it by DNS rebinding
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    if token:
        app.add_middleware(TokenGate, token=token)
    return app
