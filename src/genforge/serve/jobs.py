"""The studio's job queue: bounded, one slot per GPU and a few per CPU, progress and cancel.

Work (generate, refine, train, compare) is submitted as a function of a ``JobContext``. Jobs wait in a
queue of at most ``max_queued`` (a full queue refuses new work: ``QueueFull``, HTTP 429), then run in a
thread of their own once their device has a free slot: ``slots["cuda:0"] = 1`` (one GPU job at a time per
device), ``slots["cpu"] = N``. A job reports progress (``ctx.tick(done, total)``: steps done and an ETA) and
events (``ctx.emit``: a streamed piece of text, a finished item); every event is kept with a sequence
number, so an event stream (``events_since``) can join late and miss nothing. Cancelling a waiting job
removes it; a running one is told (its next tick raises ``progress.Cancelled``, or its own ``on_cancel``
runs: a training process is asked to checkpoint and stop).
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from genforge.errors import GenforgeError
from genforge.progress import Cancelled, reporting

STATES = ("queued", "running", "done", "failed", "cancelled")
KEEP_FINISHED = 200  # finished jobs remembered for the page (the gallery keeps their outputs)
PROGRESS_EVERY = 0.25  # seconds between progress events (the last one always goes out)


class QueueFull(GenforgeError):
    """The queue holds as many waiting jobs as it may: try again once some have run."""


class JobNotFound(GenforgeError):
    """No job has this id (or it finished long ago and was forgotten)."""


@dataclass
class Job:
    id: str
    kind: str  # generate | refine | train | compare
    device: str  # the slot pool it waits for: "cpu", "cuda:0", ...
    about: dict[str, Any]  # what the page shows: run, mode, settings
    status: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: int = 0
    total: int = 0
    eta_s: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    cancel_requested: bool = False
    on_cancel: Callable[[], None] | None = None  # set by work that stops by other means than a tick
    _first_tick: float | None = None
    _last_progress: float = 0.0

    def to_dict(self, position: int | None = None) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "device": self.device, "status": self.status, **self.about,
                "position": position, "created": self.created, "started": self.started, "finished": self.finished,
                "progress": {"done": self.done, "total": self.total, "eta_s": self.eta_s},
                "result": self.result, "error": self.error}


class JobContext:
    """What a job's work sees: ticks, events, whether it was cancelled."""

    def __init__(self, queue: "JobQueue", job: Job):
        self._queue, self.job = queue, job

    @property
    def cancelled(self) -> bool:
        return self.job.cancel_requested

    def check(self) -> None:
        if self.job.cancel_requested:
            raise Cancelled()

    def tick(self, done: int, total: int) -> None:
        """Steps done of ``total`` (the sampler's or trainer's own count); raises ``Cancelled`` once cancelled."""
        self.check()
        self.report(done, total)

    def report(self, done: int, total: int) -> None:
        """Progress from work that stops by its own means once cancelled (a training process)."""
        self._queue._progress(self.job, int(done), int(total))

    def emit(self, kind: str, data: Any) -> None:
        self._queue._emit(self.job, kind, data)


Work = Callable[[JobContext], dict[str, Any]]


class JobQueue:
    def __init__(self, slots: dict[str, int], max_queued: int = 16):
        if max_queued < 1 or any(n < 1 for n in slots.values()):
            raise ValueError("the queue needs room for one waiting job and one slot per device")
        self.slots, self.max_queued = dict(slots), max_queued
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[tuple[Job, Work]] = deque()
        self._running: dict[str, int] = {device: 0 for device in slots}
        self._finished: deque[str] = deque()
        self._threads: list[threading.Thread] = []
        self._closed = False

    # ---- submitting and reading ----------------------------------------------------------------
    def submit(self, kind: str, device: str, work: Work, **about: Any) -> Job:
        if device not in self.slots:
            raise ValueError(f"no slots for device {device!r}")
        with self._lock:
            if self._closed:
                raise QueueFull("the studio is shutting down; no new jobs")
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(f"the queue is full ({self.max_queued} jobs waiting); try again when some have "
                                f"finished, or cancel one")
            job = Job(uuid.uuid4().hex, kind, device, about)
            self._jobs[job.id] = job
            self._waiting.append((job, work))
            self._emit_locked(job, "status", {"status": "queued"})
            self._start_ready()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}; list them with GET /api/jobs")
        return job

    def describe(self, job: Job) -> dict[str, Any]:
        with self._lock:
            return job.to_dict(self._position(job))

    def list(self) -> list[dict[str, Any]]:
        """Every job remembered, newest first."""
        with self._lock:
            return [job.to_dict(self._position(job)) for job in sorted(self._jobs.values(), key=lambda j: -j.created)]

    def _position(self, job: Job) -> int | None:
        """1 for the next job to start on its device, 2 after it, ...; None once it runs."""
        if job.status != "queued":
            return None
        ahead = [j for j, _ in self._waiting if j.device == job.device]
        return ahead.index(job) + 1 if job in ahead else None

    def events_since(self, job: Job, seq: int, timeout: float) -> list[dict[str, Any]]:
        """The job's events after ``seq`` (waiting up to ``timeout`` seconds for one)."""
        with self._lock:
            if len(job.events) <= seq and job.status in ("queued", "running") and timeout > 0:
                self._lock.wait(timeout)
            return job.events[seq:]

    def busy(self) -> bool:
        with self._lock:
            return bool(self._waiting) or any(self._running.values())

    # ---- cancelling and closing ----------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        stop = None
        with self._lock:
            if job.status == "queued":
                self._waiting = deque((j, w) for j, w in self._waiting if j is not job)
                self._finish_locked(job, "cancelled", error="cancelled before it started")
            elif job.status == "running" and not job.cancel_requested:
                job.cancel_requested = True
                stop = job.on_cancel
                self._emit_locked(job, "status", {"status": "cancelling"})
        if stop is not None:
            stop()
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything (running training is checkpointed by its own cancel) and wait for the threads."""
        with self._lock:
            self._closed = True
            ids = [j.id for j, _ in self._waiting] + [j.id for j in self._jobs.values() if j.status == "running"]
        for job_id in ids:
            self.cancel(job_id)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---- inside ------------------------------------------------------------------------------------
    def _start_ready(self) -> None:
        for job, work in list(self._waiting):
            if self._running[job.device] < self.slots[job.device]:
                self._waiting.remove((job, work))
                self._running[job.device] += 1
                job.status, job.started = "running", time.time()
                self._emit_locked(job, "status", {"status": "running"})
                thread = threading.Thread(target=self._run, args=(job, work), name=f"job-{job.id[:8]}", daemon=True)
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                thread.start()

    def _run(self, job: Job, work: Work) -> None:
        ctx = JobContext(self, job)
        try:
            with reporting(ctx.tick):
                result = work(ctx)
        except Cancelled:
            self._finish(job, "cancelled", error="cancelled")
        except GenforgeError as e:
            self._finish(job, "cancelled" if job.cancel_requested else "failed", error=str(e))
        except Exception as e:  # a bug, not the user's: keep the server up and say what broke
            traceback.print_exc()
            self._finish(job, "failed", error=f"internal error: {type(e).__name__}: {e}")
        else:
            self._finish(job, "cancelled" if job.cancel_requested else "done", result=result)

    def _finish(self, job: Job, status: str, result: dict | None = None, error: str | None = None) -> None:
        with self._lock:
            if job.status == "running":
                self._running[job.device] -= 1
            self._finish_locked(job, status, result, error)
            self._start_ready()

    def _finish_locked(self, job: Job, status: str, result: dict | None = None, error: str | None = None) -> None:
        job.status, job.finished, job.result, job.error = status, time.time(), result, error
        if status == "done" and job.total:
            job.done, job.eta_s = job.total, 0.0
        self._emit_locked(job, "status", {"status": status, "result": result, "error": error})
        self._finished.append(job.id)
        while len(self._finished) > KEEP_FINISHED:
            self._jobs.pop(self._finished.popleft(), None)

    def _progress(self, job: Job, done: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            if job._first_tick is None or done < job.done:  # a new phase of the work starts its own count
                job._first_tick = now
            job.done, job.total = done, total
            elapsed = now - job._first_tick
            job.eta_s = round(elapsed / done * (total - done), 1) if done > 0 and total >= done else None
            if now - job._last_progress >= PROGRESS_EVERY or done >= total:
                job._last_progress = now
                self._emit_locked(job, "progress", {"done": done, "total": total, "eta_s": job.eta_s})

    def _emit(self, job: Job, kind: str, data: Any) -> None:
        with self._lock:
            self._emit_locked(job, kind, data)

    def _emit_locked(self, job: Job, kind: str, data: Any) -> None:
        job.events.append({"seq": len(job.events) + 1, "type": kind, "data": data})
        self._lock.notify_all()
