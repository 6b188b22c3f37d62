"""Training in several processes (torchrun, gloo on this CPU): the same result as one process with the
combined batch, rank 0 alone writing, resume on another process count, and `genforge train --nproc`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from clitools import cli, environment

import genforge
from genforge.io import load_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n" * 40
TINY = ["--set", "data.block_size=16", "--set", "model.n_layer=1", "--set", "model.n_embd=16",
        "--set", "model.n_head=2", "--set", "train.sample_every=0", "--set", "train.log_every=1",
        "--set", "train.warmup_steps=2"]


def torchrun(nproc: int, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    """`genforge ARGS...` in ``nproc`` processes started by torchrun on this machine."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "genforge", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=environment(), timeout=timeout)


def overrides(args: list[str]) -> list[str]:
    return [a for a in args if a != "--set"]


def assert_same_weights(a, b, atol: float = 2e-6) -> None:
    wa, wb = load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors")
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "corpus.txt"
    path.write_text(TEXT)
    return path


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


def test_nproc_trains_a_gan_in_two_processes_with_both_players_in_step(tmp_path):
    run = tmp_path / "gan"
    proc = cli("train", "--nproc", 2, "--family", "gan", "--data", "digits", "--out", run, "--steps", 4,
               "--batch-size", 8, "--quiet", "--set", "model.width=8", "--set", "model.latent_dim=8",
               "--set", "train.sample_every=0", "--set", "train.ckpt_every=2", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained gan for 4 steps") == 1
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    state = load_tensors(run / "trainer_state.safetensors")
    assert any(k.startswith("opt/gen/") for k in state) and any(k.startswith("opt/disc/") for k in state)
    images = genforge.load(run, device="cpu").sample(4, seed=0)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()


def test_nproc_is_checked_before_anything_starts(tmp_path):
    from clitools import one_error_line, run_main

    line = one_error_line(run_main("train", "--nproc", 0, "--family", "gan", "--data", "digits", "--out", tmp_path / "x"))
    assert "--nproc must be an integer from 1 to 1024, got 0" in line
    assert not (tmp_path / "x").exists()


def test_gradient_accumulation_equals_one_batch_k_times_larger(corpus, tmp_path):
    accumulated, whole = tmp_path / "accumulated", tmp_path / "whole"
    genforge.train("transformer", f"text:{corpus}", accumulated, steps=5, batch_size=2, grad_accum=4, progress=False,
                   overrides=overrides(TINY))
    genforge.train("transformer", f"text:{corpus}", whole, steps=5, batch_size=8, progress=False,
                   overrides=overrides(TINY))
    assert_same_weights(accumulated, whole)
    logged = [json.loads(line) for line in (accumulated / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["items_per_s"] > 0 and "main/loss" in logged[0]


@pytest.mark.parametrize("family, settings", [
    ("gan", ["model.width=8", "model.latent_dim=8"]),
    ("vae", ["model.width=8", "model.latent_dim=4"]),
    ("diffusion", ["model.base_channels=8", "model.channel_mults=[1]", "model.attention_resolutions=[]"]),
])
def test_every_family_accumulates_gradients(family, settings, tmp_path):
    """Each phase (both GAN players) steps once per step, after the micro-batches' gradients add up."""
    result = genforge.train(family, "digits", tmp_path / family, steps=3, batch_size=4, grad_accum=3, progress=False,
                            overrides=[*settings, "train.sample_every=0", "train.log_every=1"])
    assert result.step == 3 and result.bad_steps == 0
    records = [json.loads(line) for line in (tmp_path / family / "metrics.jsonl").read_text().splitlines()]
    names = {k.split("/")[0] for k in records[-1] if k.endswith("/loss")}
    assert names == ({"gen", "disc"} if family == "gan" else {"main"})
    state = load_tensors(tmp_path / family / "trainer_state.safetensors")
    for name in names:  # each optimizer took exactly one step per training step
        steps = [v for k, v in state.items() if k.startswith(f"opt/{name}/") and k.endswith("/step")]
        assert steps and all(float(s) == 3 for s in steps)


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
            "--steps", "240", "--batch-size", "4", "--quiet", *TINY, "--set", "train.ckpt_every=30"]
    launcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=environment({"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}))
    metrics, deadline = run / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and launcher.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if len(lines) >= 70:
            break
        time.sleep(0.05)
    ranks = subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert launcher.poll() is None and len(ranks) == 2, "the run ended before it could be killed"
    os.kill(int(ranks[-1]), signal.SIGKILL)
    out, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, err[-3000:]
    assert "restarted by torchrun" in err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 241))  # the killed attempt's records after its last checkpoint were dropped

    whole = tmp_path / "whole"
    genforge.train("transformer", f"text:{corpus}", whole, steps=240, batch_size=8, progress=False,
                   overrides=[*overrides(TINY), "train.ckpt_every=30"])
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


def test_a_vqvae_in_two_processes_keeps_one_codebook(tmp_path):
    """Its EMA codebook changes outside the gradients: the quantizer sums its statistics over the processes,
    and the end-of-training check (parameters and buffers equal on every process) passes. (The GAN test
    above fails that check without the broadcast of BatchNorm statistics.)"""
    run = tmp_path / "vq"
    proc = cli("train", "--nproc", 2, "--family", "vqvae", "--data", "digits", "--out", run, "--steps", 4,
               "--batch-size", 8, "--quiet", "--set", "model.width=8", "--set", "model.num_codes=16",
               "--set", "model.code_dim=4", "--set", "model.res_blocks=1", "--set", "train.sample_every=0",
               timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert genforge.load(run, device="cpu").sample(2, seed=0).shape[0] == 2



@pytest.mark.parametrize("family, data, settings", [
    ("transformer", "text", ["data.block_size=16", "model.n_layer=2", "model.n_embd=16", "model.n_head=2"]),
    ("diffusion", "digits", ["model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[4]"]),
])
def test_activation_checkpointing_trains_the_same_weights(family, data, settings, corpus, tmp_path):
    source = f"text:{corpus}" if data == "text" else data
    common = [*settings, "train.sample_every=0"]
    plain = genforge.train(family, source, tmp_path / "plain", steps=3, batch_size=4, progress=False, overrides=common)
    saved = genforge.train(family, source, tmp_path / "ckpt", steps=3, batch_size=4, progress=False,
                           overrides=[*common, "train.activation_checkpointing=true"])
    assert plain.step == saved.step == 3
    assert_same_weights(tmp_path / "ckpt", tmp_path / "plain", atol=1e-6)
    model = genforge.load(tmp_path / "ckpt", device="cpu")  # sampling is unaffected (no gradients, no recompute)
    assert model.run.config.train.activation_checkpointing


def test_activation_checkpointing_is_refused_for_a_family_without_it(tmp_path):
    from genforge.errors import ConfigError

    with pytest.raises(ConfigError, match="train.activation_checkpointing applies to .*the gan family"):
        genforge.train("gan", "digits", tmp_path / "gan", steps=1, progress=False,
                       overrides=["train.activation_checkpointing=true"])
    assert not (tmp_path / "gan").exists()
