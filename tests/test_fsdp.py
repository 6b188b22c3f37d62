"""FSDP (train.fsdp): a transformer sharded over two gloo processes trains what one process with the combined
batch trains, writes checkpoints one process loads, resumes on any number of processes, and computes in bf16
with fp32 shards under mixed precision."""

from __future__ import annotations

import shutil

import pytest
import torch
from disttools import TINY, assert_same_weights, make_corpus, overrides, torchrun

import genforge
from genforge.io import load_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

SHARDED = [*TINY, "--set", "model.n_layer=2", "--set", "train.fsdp=true"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory)


def same_state(a, b, atol: float = 2e-6) -> None:
    """trainer_state.safetensors of runs ``a`` and ``b``: the same weights, EMA and AdamW moments."""
    sa, sb = load_tensors(a / "trainer_state.safetensors"), load_tensors(b / "trainer_state.safetensors")
    assert set(sa) == set(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=0, msg=k)


@pytest.mark.slow
def test_sharded_training_equals_one_process_and_resumes_on_any_number_of_processes(corpus, tmp_path):
    """Two processes, each 2 micro-batches of 2 (accumulated, sharded gradients reduce-scattered each time),
    end with the weights, EMA and optimizer state of one process with batch 8; the sample grid (every process
    samples in step) is the same; the checkpoint is the whole state, so the run loads in one process and
    resumes sharded or not, continuing exactly as the one-process run does."""
    two, one = tmp_path / "two", tmp_path / "one"
    sets = ["--set", "train.sample_every=3", "--set", "train.grad_accum=2"]
    proc = torchrun(2, "train", "--family", "transformer", "--data", f"text:{corpus}", "--out", two, "--steps", 3,
                    "--batch-size", 2, "--quiet", *SHARDED, *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    genforge.train("transformer", f"text:{corpus}", one, steps=3, batch_size=8, progress=False,
                   overrides=[*overrides(SHARDED), "train.fsdp=false", "train.sample_every=3"])
    assert_same_weights(two, one)
    same_state(two, one)
    grid = "step_0000003.txt"
    assert (two / "samples" / grid).read_text().splitlines()[1:] == (one / "samples" / grid).read_text().splitlines()[1:]
    texts = genforge.load(two, device="cpu").sample(2, seed=0, max_new_tokens=8)  # one process, no FSDP
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)

    # resume: sharded over two processes, and in one process; both continue as the one-process run does
    alone = tmp_path / "alone"
    shutil.copytree(two, alone)
    proc = torchrun(2, "train", "--out", two, "--resume", "--steps", 5, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    genforge.train(out=alone, resume=True, steps=5, batch_size=8, grad_accum=1, progress=False)
    genforge.train(out=one, resume=True, steps=5, progress=False)
    for run in (two, alone):
        assert_same_weights(run, one)
        same_state(run, one)


def test_fsdp_is_refused_for_a_family_without_shardable_nets():
    from genforge.errors import ConfigError

    with pytest.raises(ConfigError, match="train.fsdp shards transformers"):
        genforge.make_config("gan", "digits", overrides=["train.fsdp=true"])


def test_memory_check_counts_a_share_of_the_model_per_process_with_fsdp(monkeypatch):
    from genforge.api import make_config
    from genforge.data.spec import DataSpec
    from genforge.errors import ConfigError
    from genforge.train import memory

    config = make_config("transformer", "pycode", overrides=["model.n_layer=2", "model.n_embd=1024", "model.n_head=8",
                                                              "train.fsdp=true"])
    spec = DataSpec(modality="text", shape=(64,), vocab_size=50304)
    whole = memory.parameter_count(config, spec) * memory.TRAINING_BYTES_PER_PARAMETER
    monkeypatch.setattr(memory, "device_memory", lambda _device: int(whole * 0.6))  # fits as two shards only
    with pytest.raises(ConfigError, match=r"shard it over several processes \(train.fsdp\)"):
        memory.check_training_fits(config, spec, torch.device("cpu"))
    memory.check_training_fits(config, spec, torch.device("cpu"), shards=2)


def test_mixed_precision_computes_in_bf16_and_keeps_fp32_shards(corpus):
    """Under FSDP with bf16, each block runs on bf16 weights gathered from fp32 shards, and the gradients and
    AdamW state stay fp32 (one process group of one, in this process)."""
    import torch.distributed as dist

    from genforge.modalities import prepare
    from genforge.runs import build_family
    from genforge.train import fsdp

    config = genforge.make_config("transformer", f"text:{corpus}", overrides=overrides(SHARDED))
    prepared = prepare(config.data.source, config.data, progress=False)
    family = build_family(config, prepared.spec)
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        fsdp.shard(family, family.fsdp_modules(), torch.bfloat16)
        seen = []
        family.net.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(m.attn.qkv.weight.dtype))
        batch = prepared.train.batch(2, torch.Generator().manual_seed(0))
        name, loss, _ = next(family.training_step(batch))
        loss.backward()
        assert seen == [torch.bfloat16]
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in family.parameters())
        assert type(next(family.parameters())).__name__ == "DTensor"
    finally:
        dist.destroy_process_group()
