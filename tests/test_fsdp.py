"""FSDP (train.fsdp): a transformer sharded over two gloo processes trains what one process with the combined
batch trains and writes checkpoints one process loads and resumes; the whole state round-trips through
sharded modules; under mixed precision the blocks compute in bf16 on fp32 shards."""

from __future__ import annotations

import copy

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
def test_sharded_training_equals_one_process_and_its_checkpoint_serves_one_process(corpus, tmp_path):
    """Two processes, each 2 micro-batches of 2 (accumulated, sharded gradients reduce-scattered each time),
    end with the weights, EMA and optimizer state of one process with batch 8; the sample grid (every process
    samples in step) is the same; the checkpoint is the whole state, so the run loads in one process and
    resumes there, continuing exactly as the one-process run does."""
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

    # resumed in one process (the sharded resume is test_whole_state_round_trips_through_sharded_modules)
    genforge.train(out=two, resume=True, steps=5, batch_size=8, grad_accum=1, progress=False)
    genforge.train(out=one, resume=True, steps=5, progress=False)
    assert_same_weights(two, one)
    same_state(two, one)


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


@pytest.fixture
def group_of_one():
    """A gloo process group of one, in this process: enough for fully_shard (every weight in one shard)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def tiny_family(corpus, seed: int = 0):
    from genforge.modalities import prepare
    from genforge.runs import build_family

    config = genforge.make_config("transformer", f"text:{corpus}", overrides=overrides(SHARDED))
    prepared = prepare(config.data.source, config.data, progress=False)
    torch.manual_seed(seed)
    return build_family(config, prepared.spec), prepared


def test_mixed_precision_computes_in_bf16_and_keeps_fp32_shards(corpus, group_of_one):
    """Under FSDP with bf16, each block runs on bf16 weights gathered from fp32 shards, and the gradients
    stay fp32."""
    from genforge.train import fsdp

    family, prepared = tiny_family(corpus)
    fsdp.shard(family, family.fsdp_modules(), torch.bfloat16)
    seen = []
    family.net.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(m.attn.qkv.weight.dtype))
    batch = prepared.train.batch(2, torch.Generator().manual_seed(0))
    name, loss, _ = next(family.training_step(batch))
    loss.backward()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in family.parameters())
    assert type(next(family.parameters())).__name__ == "DTensor"


def test_whole_state_round_trips_through_sharded_modules(corpus, group_of_one):
    """What a sharded run checkpoints (weights and AdamW state gathered whole, parameters numbered as
    Optimizer.state_dict numbers them) loads into a freshly sharded model and into a plain one alike."""
    from genforge.train import fsdp

    family, prepared = tiny_family(corpus)
    fsdp.shard(family, family.fsdp_modules(), None)
    opt = torch.optim.AdamW(family.parameters(), lr=1e-2)
    for step in range(2):
        _, loss, _ = next(family.training_step(prepared.train.batch(4, torch.Generator().manual_seed(step))))
        loss.backward()
        opt.step()
        opt.zero_grad()
    # copies: the scalar `step` tensors in an optimizer's state dict are the optimizer's own, stepped in place
    weights, moments = fsdp.full_model_state(family), copy.deepcopy(fsdp.full_optimizer_state(family, opt))

    plain, _ = tiny_family(corpus, seed=1)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    plain.load_state_dict(weights)
    plain_opt.load_state_dict(copy.deepcopy(moments))
    sharded, _ = tiny_family(corpus, seed=2)
    fsdp.shard(sharded, sharded.fsdp_modules(), None)
    sharded_opt = torch.optim.AdamW(sharded.parameters(), lr=1e-2)
    fsdp.load_full_model_state(sharded, weights)
    fsdp.load_full_optimizer_state(sharded, sharded_opt, copy.deepcopy(moments))

    batch = prepared.train.batch(4, torch.Generator().manual_seed(9))  # one more step each: the same weights
    for model, optimizer in ((family, opt), (plain, plain_opt), (sharded, sharded_opt)):
        next(model.training_step(batch))[1].backward()
        optimizer.step()
    want = fsdp.full_model_state(family)
    for got in (plain.state_dict(), fsdp.full_model_state(sharded)):
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=key)
