"""The studio's job queue: bounded (429 when full), one slot per GPU and N per CPU, positions, progress with an
ETA, events replayable from any point, cancel before and while running, errors kept per job."""

import threading
import time

import pytest

from genforge import progress
from genforge.errors import ConfigError
from genforge.serve.jobs import JobNotFound, JobQueue, QueueFull


def wait(queue: JobQueue, job, states=("done", "failed", "cancelled"), timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while job.status not in states:
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.01)
    return queue.describe(job)


def blocker():
    """Work that runs until released: (work, release)."""
    gate = threading.Event()

    def work(ctx):
        while not gate.wait(0.01):
            ctx.check()
        return {"ok": True}

    return work, gate.set


def test_a_full_queue_refuses_new_jobs_and_frees_up_as_jobs_start():
    queue = JobQueue({"cpu": 1}, max_queued=2)
    work, release = blocker()
    running = queue.submit("generate", "cpu", work)
    wait(queue, running, ("running",))
    waiting = [queue.submit("generate", "cpu", work) for _ in range(2)]
    with pytest.raises(QueueFull, match="2 jobs waiting"):
        queue.submit("generate", "cpu", work)
    assert [queue.describe(j)["position"] for j in waiting] == [1, 2]
    release()
    for job in (running, *waiting):
        assert wait(queue, job)["status"] == "done"
    queue.submit("generate", "cpu", lambda ctx: {})  # room again
    queue.close()


def test_slots_bound_how_many_jobs_of_a_device_run_at_once():
    queue = JobQueue({"cpu": 2, "cuda:0": 1}, max_queued=10)
    peak = {"cpu": 0, "cuda:0": 0}
    now = {"cpu": 0, "cuda:0": 0}
    lock = threading.Lock()

    def work_on(device):
        def work(ctx):
            with lock:
                now[device] += 1
                peak[device] = max(peak[device], now[device])
            time.sleep(0.05)
            with lock:
                now[device] -= 1
            return {}
        return work

    jobs = [queue.submit("generate", d, work_on(d)) for d in ["cpu"] * 5 + ["cuda:0"] * 3]
    for job in jobs:
        wait(queue, job)
    assert peak == {"cpu": 2, "cuda:0": 1}


def test_progress_gives_an_eta_and_events_replay_from_any_sequence_number():
    queue = JobQueue({"cpu": 1})

    def work(ctx):
        for i in range(1, 5):
            time.sleep(0.02)
            progress.tick(i, 4)  # what a sampler does: reaches the job through progress.reporting
        ctx.emit("piece", "hello")
        return {"n": 4}

    job = queue.submit("generate", "cpu", work, run="r")
    described = wait(queue, job)
    assert described["status"] == "done" and described["result"] == {"n": 4} and described["run"] == "r"
    assert described["progress"]["done"] == 4 and described["progress"]["total"] == 4
    events = queue.events_since(job, 0, 0.1)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["status", "status"] and kinds[-1] == "status" and "piece" in kinds
    last_progress = [e for e in events if e["type"] == "progress"][-1]["data"]
    assert last_progress["done"] == 4 and last_progress["eta_s"] == 0.0
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert queue.events_since(job, 3, 0.1) == events[3:]


def test_cancel_a_waiting_job_and_a_running_one():
    queue = JobQueue({"cpu": 1})
    started = threading.Event()
    ticks = []

    def long_work(ctx):
        started.set()
        for i in range(1, 10_000):
            time.sleep(0.005)
            ticks.append(i)
            progress.tick(i, 10_000)  # raises Cancelled once the job is cancelled
        return {}

    running = queue.submit("generate", "cpu", long_work)
    waiting = queue.submit("generate", "cpu", lambda ctx: {"never": True})
    started.wait(5)
    assert queue.cancel(waiting.id).status == "cancelled"
    queue.cancel(running.id)
    assert wait(queue, running)["status"] == "cancelled"
    assert len(ticks) < 9_999 and waiting.result is None


def test_errors_are_kept_with_their_job_and_the_queue_goes_on():
    queue = JobQueue({"cpu": 1})

    def user_mistake(ctx):
        raise ConfigError("unknown sampler 'x'")

    def bug(ctx):
        raise ZeroDivisionError("boom")

    failed = [queue.submit("generate", "cpu", w) for w in (user_mistake, bug)]
    assert wait(queue, failed[0])["error"] == "unknown sampler 'x'"
    assert wait(queue, failed[1])["error"].startswith("internal error: ZeroDivisionError")
    assert wait(queue, queue.submit("generate", "cpu", lambda ctx: {"ok": 1}))["status"] == "done"
    with pytest.raises(JobNotFound):
        queue.get("nope")


def test_work_that_stops_by_its_own_means_is_told_to_stop():
    queue = JobQueue({"cpu": 1})
    stopped = threading.Event()

    def training(ctx):
        ctx.job.on_cancel = stopped.set  # a training process: asked to checkpoint and stop
        while not stopped.wait(0.01):
            ctx.report(1, 10)
        return {"step": 1}

    job = queue.submit("train", "cpu", training)
    wait(queue, job, ("running",))
    time.sleep(0.05)
    queue.cancel(job.id)
    assert wait(queue, job)["status"] == "cancelled" and stopped.is_set()
