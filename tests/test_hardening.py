"""A kill at any moment, a second process, a full or read-only disk, absurd sizes: clear outcomes,
nothing stuck, nothing lost. The processes that get killed or hold a lock are real
`genforge` processes (the others run its entry point in this process); full and read-only disks are
simulated under the atomic-write helper (a write to /dev/full is the kernel's own ENOSPC)."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from clitools import one_error_line, run_main, start

import genforge
from genforge import io as gio
from genforge.io import atomic_write_text, load_tensors, read_metadata
from genforge.runlock import RunLock

pytestmark = pytest.mark.usefixtures("one_thread")

# a VAE small enough that a step takes a millisecond or two
TINY_VAE = ["--family", "vae", "--data", "digits", "--quiet", "--set", "model.latent_dim=4", "--set", "model.width=8",
            "--set", "train.sample_every=0", "--set", "train.log_every=5", "--set", "train.batch_size=16"]
def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def logged_steps(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


def same_state(a: Path, b: Path) -> None:
    x, y = load_tensors(a / "trainer_state.safetensors"), load_tensors(b / "trainer_state.safetensors")
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference: 200 steps in one process."""
    run = tmp_path_factory.mktemp("ref") / "run"
    proc = run_main("train", "--out", run, "--steps", "200", *TINY_VAE)  # in this process, on one thread
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_resumes_from_step_0(tmp_path, uninterrupted):
    run = tmp_path / "r"
    proc = start("train", "--out", run, "--steps", "200", *TINY_VAE, "--set", "train.ckpt_every=0",
                 "--set", "train.ckpt_minutes=0", "--set", "train.steps=100000")
    wait_for(lambda: logged_steps(run) >= 2)  # training, and no checkpoint yet
    proc.kill()
    proc.wait(timeout=60)
    assert not (run / "trainer_state.safetensors").exists()

    again = run_main("train", "--family", "vae", "--data", "digits", "--out", run)
    assert "already holds a run" in one_error_line(again) and "--resume" in again.stderr
    resumed = run_main("train", "--out", run, "--resume", "--steps", "200", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint yet" in resumed.stderr and "step 0" in resumed.stderr
    # the killed process's settings stay (steps 100000 -> 200 given now); otherwise one uninterrupted run
    with open(run / "config.yaml") as f:
        assert "steps: 200" in f.read()
    same_state(uninterrupted, run)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 200  # the killed process's records were dropped


@pytest.mark.slow
def test_sigkill_at_checkpoint_boundaries_leaves_a_loadable_run_that_resumes_exactly(tmp_path, uninterrupted):
    """Checkpoints every step, so a kill lands inside or between checkpoint writes; twice, at different times."""
    run = tmp_path / "r"
    args = ["--out", run, "--steps", "200", *TINY_VAE, "--set", "train.ckpt_every=1"]
    for min_steps in (3, 25):
        proc = start("train", *args) if min_steps == 3 else start("train", "--out", run, "--resume", "--quiet")
        wait_for(lambda: (run / "trainer_state.safetensors").exists() and logged_steps(run) >= min_steps)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        step = int(read_metadata(run / "model.safetensors")["step"])
        assert 0 < step < 200
        genforge.load(run, device="cpu").sample(2, seed=0)  # the last good checkpoint loads and samples
    resumed = run_main("train", "--out", run, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(run.glob(".*.tmp")), "temporary files of killed writes are cleaned up on resume"
    same_state(uninterrupted, run)


@pytest.mark.slow
def test_a_second_process_cannot_train_the_same_run_and_a_killed_holder_never_blocks(tmp_path):
    run = tmp_path / "r"
    first = start("train", "--out", run, "--steps", "100000", *TINY_VAE)
    wait_for(lambda: logged_steps(run) >= 1)
    line = one_error_line(run_main("train", "--out", run, "--resume", "--steps", "5"))
    assert f"process {first.pid}" in line and "in use" in line
    first.kill()
    first.wait(timeout=60)
    third = run_main("train", "--out", run, "--resume", "--steps", "3", "--quiet")  # the kill released the lock
    assert third.returncode == 0, third.stderr


def test_the_lock_is_exclusive_within_a_process_too(tmp_path):
    from genforge.errors import RunError

    with RunLock(tmp_path / "r"):
        with pytest.raises(RunError, match=f"process {os.getpid()}"):
            RunLock(tmp_path / "r").acquire()
    with RunLock(tmp_path / "r"):  # released: free again
        pass


# ---- full and read-only disks -----------------------------------------------------------------
@pytest.fixture
def tiny_run(tmp_path) -> Path:
    run = tmp_path / "run"
    genforge.train("vae", "digits", run, steps=4, progress=False,
                   overrides=["model.latent_dim=4", "model.width=8", "train.sample_every=0", "train.log_every=2"])
    return run


def full_disk(monkeypatch) -> None:
    """Every atomic write goes to /dev/full: the kernel answers ENOSPC, as a full disk does."""
    real = gio._open_temp

    def to_dev_full(path):
        fd, tmp = real(path)  # the temporary file exists, as it would on a disk that fills up mid-write
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), tmp

    monkeypatch.setattr(gio, "_open_temp", to_dev_full)


def read_only_disk(monkeypatch) -> None:
    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path.parent))

    monkeypatch.setattr(gio, "_open_temp", refuse)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_training_onto_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tiny_run, monkeypatch):
    before = files(tiny_run)
    full_disk(monkeypatch)
    line = one_error_line(run_main("train", "--out", tiny_run, "--resume", "--steps", "8", "--quiet"))
    assert "No space left on device" in line and "ENOSPC" in line and str(tiny_run) in line
    monkeypatch.undo()
    assert not list(tiny_run.rglob("*.tmp"))
    for name in ("trainer_state.safetensors", "model.safetensors"):
        assert (tiny_run / name).read_bytes() == before[name]
    assert read_metadata(tiny_run / "model.safetensors")["step"] == "4"
    resumed = genforge.train(out=tiny_run, resume=True, steps=8, progress=False)
    assert resumed.step == 8


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_sampling_onto_a_full_disk_is_one_line_and_leaves_no_temporary_files(tiny_run, tmp_path, monkeypatch):
    full_disk(monkeypatch)
    out = tmp_path / "samples"
    line = one_error_line(run_main("sample", tiny_run, "-n", "3", "--out", out))
    assert "No space left on device" in line and str(out) in line
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))


def test_read_only_out_and_cache_are_one_line(tiny_run, tmp_path, monkeypatch):
    before = files(tiny_run)
    read_only_disk(monkeypatch)
    line = one_error_line(run_main("sample", tiny_run, "-n", "2", "--out", tmp_path / "ro"))
    assert "Read-only file system" in line and "read-only" in line
    line = one_error_line(run_main("train", "--out", tiny_run, "--resume", "--steps", "6", "--quiet"))
    assert "EROFS" in line
    monkeypatch.undo()
    after = files(tiny_run)
    assert all(after[name] == content for name, content in before.items())  # nothing that existed changed

    import genforge.data.cache as cache

    def read_only_mkdtemp(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get("dir"))

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache.tempfile, "mkdtemp", read_only_mkdtemp)
    line = one_error_line(run_main("data", "prepare", "digits"))
    assert "Read-only file system" in line and str(tmp_path / "cache") in line


def test_a_write_the_library_did_not_wrap_is_still_one_line(tiny_run, monkeypatch):
    """The command line's safety net: an OSError of a full or read-only disk from anywhere is one line."""
    from genforge import api

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/events.out")

    monkeypatch.setattr(api.Model, "save_samples", refuse)
    line = one_error_line(run_main("sample", tiny_run, "-n", "2"))
    assert "/somewhere/events.out" in line and "No space left on device" in line


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*"))


# ---- checkpoints by time ------------------------------------------------------------------------
@pytest.mark.parametrize("minutes,mid_run", [(1e-9, True), (0, False), (60, False)])
def test_checkpoints_are_also_written_by_elapsed_time(tmp_path, minutes, mid_run):
    seen = []

    def on_step(trainer, step):
        path = trainer.run.model_path
        seen.append(int(read_metadata(path)["step"]) if path.exists() else None)

    genforge.train("vae", "digits", tmp_path / "r", steps=6, progress=False, on_step=on_step,
                   overrides=["model.latent_dim=4", "model.width=8", "train.sample_every=0", "train.ckpt_every=0",
                              f"train.ckpt_minutes={minutes}"])
    assert seen == ([1, 2, 3, 4, 5, 6] if mid_run else [None] * 6)


# ---- sizes ----------------------------------------------------------------------------------------
def test_many_samples_are_written_batch_by_batch_and_the_first_batch_is_one_call(tiny_run, tmp_path, monkeypatch):
    from genforge.models import batches as sample_batches

    monkeypatch.setattr(sample_batches, "SAMPLE_BATCH", 4)
    monkeypatch.setattr(sample_batches, "GRID_MAX", 6)
    model = genforge.load(tiny_run, device="cpu")
    batches = []
    real = model._sample_batch
    monkeypatch.setattr(model, "_sample_batch", lambda n, *a: batches.append(n) or real(n, *a))
    paths = model.save_samples(10, tmp_path / "out", seed=3, progress=False)
    assert batches == [4, 4, 2]
    assert [p.name for p in paths] == [f"{i:06d}.png" for i in range(10)]
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["n"] == 10
    from PIL import Image

    # grid.png shows the first GRID_MAX (6) of the 8x8 images: 3 x 2 cells with 2-pixel separators
    assert Image.open(tmp_path / "out" / "grid.png").size == (3 * (8 + 2) + 2, 2 * (8 + 2) + 2)
    # the first batch is exactly one call with the seed; the whole set is reproducible
    assert torch.equal(model.sample(10, seed=3)[:4], model._sample_tensors(4, 3, None, {})[0])
    assert torch.equal(model.sample(10, seed=3), model.sample(10, seed=3))


def test_samples_held_in_memory_are_refused_beyond_what_fits(tiny_run, monkeypatch):
    from genforge.errors import ConfigError
    from genforge.train import memory

    model = genforge.load(tiny_run, device="cpu")
    monkeypatch.setattr(memory, "device_memory", lambda device: 1024**2)  # a machine with 1 MiB
    with pytest.raises(ConfigError, match="save_samples"):
        model.sample(10_000, seed=0)
    model.sample(2, seed=0)


def test_running_out_of_memory_mid_training_is_one_line(tmp_path, monkeypatch):
    from genforge.train.trainer import Trainer

    def oom(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Trainer, "step", oom)
    line = one_error_line(run_main("train", *TINY_VAE, "--out", tmp_path / "r", "--steps", "3"))
    assert "out of memory at step 0" in line and "--batch-size" in line


def test_a_mask_of_the_input_size_is_accepted_even_when_the_run_is_smaller(tmp_path):
    """The mask must match the input (here 16x16, resized to the run's 8x8 together), not the run."""
    import numpy as np
    from PIL import Image

    run = tmp_path / "diff"
    genforge.train("diffusion", "digits", run, steps=2, progress=False,
                   overrides=["model.base_channels=8", "model.channel_mults=[1]", "model.attention_resolutions=[]",
                              "train.sample_every=0"])
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "in.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = genforge.load(run, device="cpu").inpaint(tmp_path / "in.png", tmp_path / "mask.png", n=1, steps=2)
    assert out.shape == (1, 1, 8, 8)
    from genforge.errors import ConfigError

    with pytest.raises(ConfigError, match="16x16 pixels but this run's images are 8x8"):
        genforge.load(run, device="cpu").inpaint(torch.zeros(1, 1, 8, 8), tmp_path / "mask.png", n=1, steps=2)


def test_token_samples_from_several_batches_line_up(tmp_path, monkeypatch):
    """Text batches may end at different lengths; the rows come back padded with end-of-text."""
    from genforge.models import batches as sample_batches

    text = tmp_path / "t.txt"
    text.write_text("abc\n" * 200)
    genforge.train("transformer", f"text:{text}", tmp_path / "gpt", steps=2, progress=False,
                   overrides=["data.block_size=16", "model.n_layer=1", "model.n_embd=16", "model.n_head=2",
                              "train.sample_every=0"])
    model = genforge.load(tmp_path / "gpt", device="cpu")
    monkeypatch.setattr(sample_batches, "SAMPLE_BATCH", 2)
    lengths = iter([5, 9, 3])
    real = model.family.sample

    def ragged(n, **kw):
        return real(n, **{**kw, "max_new_tokens": next(lengths), "stop_at_end": False})

    monkeypatch.setattr(model.family, "sample", ragged)
    tokens, prompt_len = model.sample_tensors(5, seed=0)
    assert tokens.shape == (5, prompt_len + 9)
    assert (tokens[:2, prompt_len + 5:] == model.tokenizer.eot_id).all()
    assert (tokens[4:, prompt_len + 3:] == model.tokenizer.eot_id).all()
