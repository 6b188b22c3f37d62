"""Training batches of images in epoch order: every image once per epoch, a new order each epoch, each step's
batch a function of (seed, step, global batch) alone; text and plug-in datasets keep their generator draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genforge.data.datasets as datasets
from genforge.config import RunConfig, TrainConfig
from genforge.data.datasets import ImageDataset, TextDataset, epoch_order, step_batch, step_generator
from genforge.runs import Run
from genforge.train.distributed import Distributed
from genforge.train.trainer import Trainer, step_seed

from toy import Toy, ToyConfig, ToyImages, ToyPrepared

pytestmark = pytest.mark.usefixtures("one_thread")


def numbered(n: int, shape=(1, 2, 2)) -> ImageDataset:
    """Image i is filled with the value i, so a batch tells which images it holds."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, *shape)).copy()
    return ImageDataset(images, labels=np.arange(n, dtype=np.int64))


def which(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The image numbers of a batch of ``numbered`` images (read from the pixels, not the labels)."""
    return ((batch["x"][:, 0, 0, 0] + 1) * 127.5).round().long()


def sequence(n: int, seed: int, epochs: int) -> torch.Tensor:
    return torch.cat([epoch_order(n, seed, e) for e in range(epochs)])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), g=st.integers(1, 50), seed=st.integers(0, 2**40), epochs=st.integers(1, 4))
def test_steps_read_every_image_once_per_epoch(n, g, seed, epochs):
    ds = numbered(n)
    steps = -(-epochs * n // g)  # enough steps to cover the epochs; the last may run into the next one
    read = torch.cat([ds.step_indices(seed, s, g) for s in range(steps)])
    assert len(read) == steps * g
    assert torch.equal(read, sequence(n, seed, epochs + g // n + 1)[:steps * g])  # steps concatenate to the sequence
    for e in range(epochs):
        assert torch.equal(read[e * n:(e + 1) * n].sort().values, torch.arange(n)), e
    counts = torch.bincount(read[:epochs * n], minlength=n)
    assert torch.equal(counts, torch.full((n,), epochs))


def test_each_epoch_has_its_own_order_and_seed():
    assert torch.equal(epoch_order(100, 0, 3), epoch_order(100, 0, 3))
    orders = [epoch_order(100, 0, e) for e in range(4)] + [epoch_order(100, 1, 0)]
    assert all(not torch.equal(a, b) for i, a in enumerate(orders) for b in orders[i + 1:])


def test_a_step_is_a_function_of_seed_step_and_batch_alone():
    ds, fresh = numbered(30), numbered(30)
    later = which(ds.step_batch(5, 7, 8))  # out of order: the cached epoch must not leak into other steps
    assert torch.equal(which(ds.step_batch(5, 0, 8)), which(fresh.step_batch(5, 0, 8)))
    assert torch.equal(which(ds.step_batch(5, 7, 8)), later)
    assert torch.equal(which(fresh.step_batch(5, 7, 8)), later)
    assert not torch.equal(which(ds.step_batch(6, 7, 8)), later)
    batch = ds.step_batch(5, 7, 8)
    assert torch.equal(batch["y"], which(batch)) and batch["x"].shape == (8, 1, 2, 2)


def test_fewer_images_than_the_batch_span_several_epochs():
    ds = numbered(3)
    read = which(ds.step_batch(0, 0, 10))
    assert torch.equal(read, sequence(3, 0, 4)[:10])
    assert torch.equal(which(ds.step_batch(0, 1, 10)), sequence(3, 0, 7)[10:20])
    for e in range(3):
        assert sorted(read[3 * e:3 * e + 3].tolist()) == [0, 1, 2]
    assert len(numbered(1).step_batch(0, 4, 5)["x"]) == 5


def test_the_epoch_order_is_drawn_once_per_epoch(monkeypatch):
    calls = []
    real = datasets.epoch_order
    monkeypatch.setattr(datasets, "epoch_order", lambda n, seed, epoch: calls.append(epoch) or real(n, seed, epoch))
    ds = numbered(20)
    for step in range(10):  # 5 items a step: 4 steps an epoch, epochs 0, 1 and the start of 2
        ds.step_batch(0, step, 5)
    assert calls == [0, 1, 2]


def test_text_and_plug_in_datasets_draw_with_the_step_generator():
    text = TextDataset(np.arange(200, dtype=np.uint16), block_size=8)
    generator = torch.Generator().manual_seed(step_seed(3, 5))  # the trainer's seed for step 5, as before
    assert torch.equal(step_batch(text, 3, 5, 6)["x"], text.batch(6, generator)["x"])
    toy = ToyImages()  # only batch(n, generator) and __len__, no base class
    assert torch.equal(step_batch(toy, 3, 5, 6)["x"], toy.batch(6, step_generator(3, 5))["x"])


def test_an_empty_image_dataset_is_a_clear_error():
    from genforge.errors import DataError

    with pytest.raises(DataError, match="no images"):
        numbered(0).step_batch(0, 0, 4)


def trainer_on(tmp_path, name: str, ds: ImageDataset, batch_size: int, grad_accum: int = 1,
               dist: Distributed | None = None) -> Trainer:
    data = ToyPrepared(shape=(1, 2, 2))
    data.train = ds
    train = TrainConfig(steps=10, batch_size=batch_size, grad_accum=grad_accum, device="cpu", seed=4)
    run = Run.create(tmp_path / name, RunConfig(family="toy", train=train), data.spec)
    return Trainer(run, Toy(ToyConfig(), run.spec), data, progress=False, hooks=[], dist=dist)


def drawn(trainer: Trainer, step: int) -> torch.Tensor:
    trainer.global_step = step
    return torch.cat([which(micro) for micro in trainer._batch()])


def test_the_trainer_reads_the_epoch_order_however_the_batch_is_split(tmp_path, monkeypatch):
    from genforge import families

    monkeypatch.setitem(families.FAMILIES, "toy", "toy:Toy")
    ds = numbered(10)  # global batch 4: an epoch is 2.5 steps, so steps cross epoch boundaries
    one = trainer_on(tmp_path, "one", ds, batch_size=4)
    ranks = [trainer_on(tmp_path, f"rank{r}", ds, batch_size=1, grad_accum=2, dist=Distributed(rank=r, world=2))
             for r in range(2)]
    for step in [0, 1, 2, 3, 9, 2]:  # in any order, as a resumed run starts mid-way
        expected = sequence(10, 4, 5)[step * 4:(step + 1) * 4]
        assert torch.equal(drawn(one, step), expected), step
        assert torch.equal(torch.cat([drawn(t, step) for t in ranks]), expected), step
