"""Slow end-to-end check: a real SIGTERM mid-training, then a resume that matches an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from clitools import command

from genforge.io import load_tensors


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    from genforge.modalities import prepare

    common = ["--family", "vae", "--data", "digits", "--steps", "200", "--quiet", "--set", "train.ckpt_every=100000",
              "--set", "train.sample_every=0", "--set", "train.log_every=5", "--set", "model.width=8"]
    prepare("digits", progress=False)  # in the session's cache before two processes read it
    # the uninterrupted run trains alongside the interrupted one: one thread each, on two cores
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    with open(tmp_path / "full.log", "w") as full_log:
        uninterrupted = subprocess.Popen(command("train", "--out", full, *common), stdout=full_log,
                                         stderr=subprocess.STDOUT, env=env)

    part = tmp_path / "part"
    proc = subprocess.Popen(command("train", "--out", part, *common), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not ((part / "metrics.jsonl").exists() and (part / "metrics.jsonl").read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
    stopped_at = int(err.split("interrupted at step ")[1].split(";")[0])
    assert 0 < stopped_at < 200

    resumed = subprocess.run(command("train", "--out", part, "--resume", "--quiet"), capture_output=True, text=True,
                             timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "full.log").read_text()[-2000:]
    a, b = load_tensors(full / "trainer_state.safetensors"), load_tensors(part / "trainer_state.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
