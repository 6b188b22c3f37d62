"""Training in several processes (torchrun, gloo on this CPU): the same weights as one process with the
combined batch, rank 0 alone writing, resume on another process count, torchrun's restarts, `--nproc`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from clitools import cli, environment
from disttools import TINY, assert_same_weights, make_corpus, overrides, torchrun

import genforge

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory)


def test_two_processes_train_what_one_process_with_the_combined_batch_trains(corpus, tmp_path):
    two = tmp_path / "two"
    proc = torchrun(2, "train", "--family", "transformer", "--data", f"text:{corpus}", "--out", two, "--steps", 6,
                    "--batch-size", 4, "--quiet", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained transformer for 6 steps") == 1  # rank 0 reports
    one = tmp_path / "one"
    genforge.train("transformer", f"text:{corpus}", one, steps=6, batch_size=8, progress=False,
                   overrides=overrides(TINY))
    assert_same_weights(two, one)
    # rank 0 alone wrote the records: one per step, and the speed counts both processes' tokens
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    losses_one = [json.loads(line)["main/loss"] for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["main/loss"] for r in records] != losses_one  # a rank logs its own half's loss
    assert not list(two.glob("*.tmp*")) and (two / "trainer_state.safetensors").is_file()

    # resumed on one process with the global batch (8), it continues exactly as the one-process run does
    proc = cli("train", "--out", two, "--resume", "--steps", 9, "--batch-size", 8, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    genforge.train(out=one, resume=True, steps=9, progress=False)
    assert_same_weights(two, one)


def test_nproc_is_checked_before_anything_starts(tmp_path):
    from clitools import one_error_line, run_main

    line = one_error_line(run_main("train", "--nproc", 0, "--family", "gan", "--data", "digits", "--out", tmp_path / "x"))
    assert "--nproc must be an integer from 1 to 1024, got 0" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_killed_rank_is_restarted_by_torchrun_and_the_run_ends_as_if_nothing_happened(corpus, tmp_path):
    """SIGKILL of one of two processes mid-run: torchrun (--max-restarts 1) starts the group again, the same
    command resumes from the last checkpoint, and the run ends at its full step count with exactly the
    weights of an uninterrupted run; only the steps after that checkpoint were done twice."""
    import os
    import signal
    import time

    run = tmp_path / "killed"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts", "1",
            "-m", "genforge", "train", "--family", "transformer", "--data", f"text:{corpus}", "--out", str(run),
            "--steps", "160", "--batch-size", "4", "--quiet", *TINY, "--set", "train.ckpt_every=20"]
    launcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=environment({"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}))
    metrics, deadline = run / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and launcher.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if len(lines) >= 50:
            break
        time.sleep(0.05)
    ranks = subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert launcher.poll() is None and len(ranks) == 2, "the run ended before it could be killed"
    os.kill(int(ranks[-1]), signal.SIGKILL)
    out, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, err[-3000:]
    assert "restarted by torchrun" in err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 161))  # the killed attempt's records after its last checkpoint were dropped

    whole = tmp_path / "whole"
    genforge.train("transformer", f"text:{corpus}", whole, steps=160, batch_size=8, progress=False,
                   overrides=[*overrides(TINY), "train.ckpt_every=20"])
    assert_same_weights(run, whole)


def test_the_launcher_passes_its_own_options_to_torchrun_only():
    from genforge.launch import torchrun_command

    argv = ["train", "--nproc", "4", "--family", "gan", "--max-restarts=2", "--out", "r", "--steps", "10"]
    command = torchrun_command(4, argv, max_restarts=2)
    assert command[1:8] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "--max-restarts", "2"]
    assert command[8:] == ["-m", "genforge", "train", "--family", "gan", "--out", "r", "--steps", "10"]
    from clitools import one_error_line, run_main

    line = one_error_line(run_main("train", "--max-restarts", 1, "--family", "gan", "--data", "digits", "--out", "x"))
    assert "--max-restarts applies with --nproc" in line
