"""Progress reporting: the reporting block, ticks, counted and summed; and the sampling loops of every family that
ticks (diffusion samplers, inpaint and img2img, token decoding, table diffusion and transformer, GAN inversion):
their ticks count up to the right total, a raised Cancelled stops them, and a reporting block changes no output."""

from __future__ import annotations

import threading

import pytest
import torch
from tabletools import SPEC as TABLE_SPEC

from genforge import progress
from genforge.data.spec import DataSpec
from genforge.families.diffusion import Diffusion, DiffusionConfig
from genforge.families.gan import GAN, GANConfig
from genforge.families.table_diffusion import TableDiffusion, TableDiffusionConfig
from genforge.families.table_transformer import TableTransformer, TableTransformerConfig
from genforge.families.transformer import Transformer, TransformerConfig
from genforge.sampling import diffusion as solvers
from genforge.sampling.diffusion import denoiser_calls

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLERS = list(solvers.SAMPLERS)
STEPS = 4


class Ticks(list):
    """A callback that records its ticks, and raises Cancelled at tick ``cancel_at`` when given."""

    def __init__(self, cancel_at: int | None = None):
        super().__init__()
        self.cancel_at = cancel_at

    def __call__(self, done: int, total: int) -> None:
        self.append((done, total))
        if len(self) == self.cancel_at:
            raise progress.Cancelled()


def counting_up(ticks: list[tuple[int, int]], total: int) -> bool:
    return ticks == [(k, total) for k in range(1, total + 1)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sampled_with_and_without(draw, cancel_at: int | None = None):
    """``draw()`` run bare and inside a reporting block: (both outputs, the ticks)."""
    bare = draw()
    ticks = Ticks(cancel_at)
    with progress.reporting(ticks):
        reported = draw()
    return bare, reported, ticks


# ---- the module -----------------------------------------------------------------------------------
def test_a_tick_without_reporting_or_with_a_silenced_block_does_nothing():
    progress.tick(1, 2)
    with progress.reporting(None):
        progress.tick(1, 2)
    assert progress.counted(lambda x: x + 1, 3)(1) == 2


def test_an_inner_block_replaces_the_outer_one_for_its_duration():
    outer, inner = Ticks(), Ticks()
    with progress.reporting(outer):
        progress.tick(1, 3)
        with progress.reporting(inner):
            progress.tick(1, 5)
            progress.tick(2, 5)
        progress.tick(2, 3)
    progress.tick(3, 3)
    assert outer == [(1, 3), (2, 3)] and inner == [(1, 5), (2, 5)]


def test_counted_ticks_each_call_once_it_returned():
    def denoise(x: int, scale: int = 1) -> int:
        """Doubles."""
        return 2 * x * scale

    ticks = Ticks()
    wrapped = progress.counted(denoise, 3)
    with progress.reporting(ticks):
        assert [wrapped(1), wrapped(2, scale=3), wrapped(5)] == [2, 12, 10]
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    assert wrapped.__name__ == "denoise" and wrapped.__doc__ == "Doubles."


def test_what_a_callback_raises_propagates_unchanged():
    stop = progress.Cancelled("by the user")
    calls = []

    def fn():
        calls.append(1)

    def callback(done, total):
        if done == 2:
            raise stop

    wrapped = progress.counted(fn, 5)
    with pytest.raises(progress.Cancelled) as raised, progress.reporting(callback):
        for _ in range(5):
            wrapped()
    assert raised.value is stop and len(calls) == 2
    assert not issubclass(progress.Cancelled, RuntimeError) and progress.Cancelled.__doc__


def test_a_block_covers_its_own_thread_only():
    mine, theirs = Ticks(), Ticks()
    inside, ticked = threading.Barrier(2), threading.Event()

    def other(report: bool) -> None:
        if report:
            with progress.reporting(theirs):
                inside.wait()
                progress.tick(7, 9)
        else:
            progress.tick(8, 9)
        ticked.set()

    with progress.reporting(mine):
        bare = threading.Thread(target=other, args=(False,))
        bare.start()
        bare.join()
        reporting = threading.Thread(target=other, args=(True,))
        reporting.start()
        inside.wait()  # both blocks are open at once
        progress.tick(1, 2)
        reporting.join()
    assert ticked.is_set() and mine == [(1, 2)] and theirs == [(7, 9)]


def test_summed_adds_up_loops_run_one_after_the_other():
    ticks = Ticks()
    with progress.reporting(ticks), progress.summed(7):
        for done, total in [(1, 2), (2, 2), (1, 1), (1, 2), (2, 2), (1, 1), (1, 1)]:
            progress.tick(done, total)
    assert counting_up(ticks, 7)
    with progress.summed(3):  # nobody reports: nothing to add up
        progress.tick(1, 1)


# ---- diffusion ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diffusion(one_thread) -> Diffusion:
    torch.manual_seed(0)
    config = DiffusionConfig(base_channels=8, channel_mults=[1, 2], attention_resolutions=[4], timesteps=100,
                             sample_steps=STEPS)
    model = Diffusion(config, DataSpec("image", (1, 8, 8)))
    for p in model.parameters():  # zero-initialised branches would make the output ignore x and sigma
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_diffusion_ticks_each_denoiser_call_and_changes_no_output(diffusion, sampler):
    bare, reported, ticks = sampled_with_and_without(lambda: diffusion.sample(2, gen(), sampler=sampler))
    assert counting_up(ticks, denoiser_calls(sampler, STEPS))
    assert torch.equal(bare, reported)


@pytest.mark.parametrize("sampler", ["ddpm", "heun"])
def test_a_cancelled_tick_stops_diffusion_sampling(diffusion, sampler):
    calls = []
    hook = diffusion.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(progress.Cancelled), progress.reporting(Ticks(cancel_at=3)):
            diffusion.sample(2, gen(), sampler=sampler, steps=10)
    finally:
        hook.remove()
    assert len(calls) == 3 < denoiser_calls(sampler, 10)
    assert diffusion.training  # eval mode was left on the way out


@pytest.mark.parametrize("sampler", ["ddim", "heun"])
def test_inpaint_with_resampling_ticks_up_to_its_total(diffusion, sampler):
    image = torch.rand(2, 1, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    bare, reported, ticks = sampled_with_and_without(
        lambda: diffusion.inpaint(image, mask, gen(), sampler=sampler, resample=3))
    assert counting_up(ticks, 3 * denoiser_calls(sampler, STEPS))
    assert torch.equal(bare, reported)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_img2img_ticks_the_steps_it_runs(diffusion, sampler):
    image = torch.rand(2, 1, 8, 8) * 2 - 1
    bare, reported, ticks = sampled_with_and_without(
        lambda: diffusion.img2img(image, 0.5, gen(), sampler=sampler, steps=6))
    assert counting_up(ticks, denoiser_calls(sampler, 3))  # the last round(0.5 * 6) steps
    assert torch.equal(bare, reported)


def test_ddim_inversion_ticks_each_denoiser_call():
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    ticks = Ticks()
    with progress.reporting(ticks):
        solvers.invert_ddim(lambda x, sigma: 0.5 * x, torch.ones(1, 3), sigmas)
    assert counting_up(ticks, 3)  # no call at the step out of sigma 0


# ---- tokens, tables and GAN inversion -------------------------------------------------------------
def test_token_generation_ticks_each_new_token_and_stops_when_cancelled():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(n_layer=1, n_head=2, n_embd=16), DataSpec("text", (8,), vocab_size=11))
    bare, reported, ticks = sampled_with_and_without(lambda: model.sample(2, gen(), prompt=[1, 2], max_new_tokens=10))
    assert counting_up(ticks, 10)  # past the context of 8 too
    assert torch.equal(bare, reported)
    stream = model.sample_stream(2, gen(), max_new_tokens=10)
    columns = []
    with pytest.raises(progress.Cancelled), progress.reporting(Ticks(cancel_at=4)):
        for column in stream:
            columns.append(column)
    assert len(columns) == 3


def test_table_diffusion_ticks_each_reverse_step():
    torch.manual_seed(0)
    family = TableDiffusion(TableDiffusionConfig(hidden=[16], time_dim=8, timesteps=10), TABLE_SPEC)
    bare, reported, ticks = sampled_with_and_without(lambda: family.sample(5, gen(), steps=6))
    assert counting_up(ticks, 6)
    assert torch.equal(bare, reported)


def test_table_transformer_ticks_each_token_of_a_row():
    torch.manual_seed(0)
    family = TableTransformer(TableTransformerConfig(n_layer=1, n_head=2, n_embd=16, bins=8), TABLE_SPEC)
    bare, reported, ticks = sampled_with_and_without(lambda: family.sample(5, gen()))
    assert counting_up(ticks, family.rows.num_slots) and family.rows.num_slots > 1
    assert torch.equal(bare, reported)


def test_gan_inversion_ticks_each_adam_step():
    torch.manual_seed(0)
    gan = GAN(GANConfig(latent_dim=8, width=8), DataSpec("image", (1, 8, 8)))
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    (bare, _), (reported, _), ticks = sampled_with_and_without(lambda: gan.encode(images, generator=gen(), steps=5,
                                                                                  restarts=2))
    assert counting_up(ticks, 5)
    assert torch.equal(bare, reported)
