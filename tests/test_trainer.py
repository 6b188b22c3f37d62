"""The one Trainer: phases, resume, NaN guard, EMA, schedule, checkpoints, logs."""

from __future__ import annotations

import json

import pytest
import torch

from genforge.config import RunConfig, TrainConfig
from genforge.errors import RunError, TrainingDiverged
from genforge.io import load_tensors
from genforge.runs import Run
from genforge.train.ema import EMA
from genforge.train.schedule import lr_factor
from genforge.train.trainer import Trainer

from toy import Toy, ToyConfig, ToyPrepared


@pytest.fixture
def toy_registry(monkeypatch):
    from genforge import families

    monkeypatch.setitem(families.FAMILIES, "toy", "toy:Toy")


def make_run(path, steps=12, model=None, **train):
    train = {"steps": steps, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2, "log_every": 2, "sample_every": 5,
             "ckpt_every": 4, "grid_size": 4, "ema_decay": 0.9, "device": "cpu", **train}
    config = RunConfig(family="toy", train=TrainConfig(**train), model=model or {})
    data = ToyPrepared()
    return Run.create(path, config, data.spec), data


def fit(run, data, resume=False, on_step=None):
    torch.manual_seed(run.config.train.seed)
    family = Toy(ToyConfig(**run.config.model), run.spec)
    return Trainer(run, family, data, progress=False, on_step=on_step).fit(resume=resume)


def weights(run):
    return load_tensors(run.state_path)


def test_resume_equals_uninterrupted_run(tmp_path, toy_registry):
    full, data = make_run(tmp_path / "full")
    fit(full, data)

    part, data = make_run(tmp_path / "part")
    stopped = fit(part, data, on_step=lambda t, step: t.request_stop() if step == 7 else None)
    assert stopped.stopped_by == "interrupted" and stopped.step == 7
    resumed = fit(Run.open(part.path), data, resume=True)
    assert resumed.step == 12

    a, b = weights(full), weights(Run.open(part.path))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # model, EMA and both optimizers' moments
    assert torch.equal(load_tensors(full.model_path)["offset"], load_tensors(part.model_path)["offset"])


def test_interrupted_run_without_resume_differs(tmp_path, toy_registry):
    # guards the test above against passing trivially: a different seed gives different weights
    a_run, data = make_run(tmp_path / "a")
    fit(a_run, data)
    b_run, data = make_run(tmp_path / "b", seed=1)
    fit(b_run, data)
    assert not torch.equal(weights(a_run)["model/offset"], weights(b_run)["model/offset"])


def test_phases_step_their_own_optimizers_and_logs_are_written(tmp_path, toy_registry):
    run, data = make_run(tmp_path / "r", steps=6)
    before = Toy(ToyConfig(), run.spec).state_dict()
    result = fit(run, data)
    assert result.stopped_by == "done" and result.step == 6
    lines = [json.loads(l) for l in run.metrics_path.read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4, 6]
    assert {"a/loss", "b/loss", "a/noise", "items_per_s", "lr_factor"} <= set(lines[-1])
    assert list((run.path / "tb").iterdir()), "TensorBoard events missing"
    assert sorted(p.name for p in run.samples_dir.iterdir()) == ["step_0000005.png", "step_0000006.png"]
    after = load_tensors(run.state_path)
    assert not torch.equal(after["model/offset"], before["offset"])
    assert "opt/a/0/exp_avg" in after and "opt/b/0/exp_avg" in after


def test_transient_nan_is_skipped_and_counted(tmp_path, toy_registry):
    run, data = make_run(tmp_path / "r", steps=8, model={"nan_from_step": 2, "nan_count": 3})
    result = fit(run, data)
    assert result.step == 8 and result.bad_steps == 3
    assert all(torch.isfinite(v).all() for v in weights(run).values() if v.is_floating_point())


def test_persistent_nan_stops_with_a_clear_message(tmp_path, toy_registry):
    run, data = make_run(tmp_path / "r", steps=50, model={"nan_from_step": 3}, max_bad_steps=4)
    with pytest.raises(TrainingDiverged, match="NaN/inf for 5 consecutive steps"):
        fit(run, data)
    Run.open(run.path).load_family()  # the last good weights are still loadable


def test_time_budget_stops_and_checkpoints(tmp_path, toy_registry):
    run, data = make_run(tmp_path / "r", steps=10**6, max_minutes=0.02, sample_every=0, ckpt_every=0)
    result = fit(run, data)
    assert result.stopped_by == "time budget" and 0 < result.step < 10**6
    assert run.model_path.is_file()


def test_resume_without_a_checkpoint_starts_from_step_0_like_a_fresh_run(tmp_path, toy_registry):
    """A run killed before its first checkpoint has only its config: resuming trains it from step 0 and gives
    exactly the run an uninterrupted process would have made; records the killed process logged are dropped."""
    full, data = make_run(tmp_path / "full")
    fit(full, data)
    run, data = make_run(tmp_path / "r")
    run.metrics_path.write_text('{"step": 2, "a/loss": 9.0}\n{"step": 4, "a/lo')  # what a killed process left
    result = fit(Run.open(run.path), data, resume=True)
    assert result.step == 12
    a, b = weights(full), weights(Run.open(run.path))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ours, theirs = Run.open(run.path).read_metrics(), full.read_metrics()
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    assert ours[0]["a/loss"] == theirs[0]["a/loss"] != 9.0


def test_truncated_weights_give_a_one_line_error(tmp_path, toy_registry):
    run, data = make_run(tmp_path / "r", steps=2)
    fit(run, data)
    raw = run.model_path.read_bytes()
    run.model_path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RunError, match="corrupt or truncated"):
        Run.open(run.path).load_family()
    run.model_path.unlink()
    with pytest.raises(RunError, match="missing"):
        Run.open(run.path).load_family()


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    factors = [lr_factor(s, 100, 10, 0.1) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_ema_follows_the_exact_recursion():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    expected = model.weight.detach().clone()
    for i in range(1, 30):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
        d = min(0.9, (1 + i) / (10 + i))
        expected = d * expected + (1 - d) * model.weight.detach()
        assert torch.allclose(ema.shadow.weight, expected, atol=1e-5)


def test_ema_averages_tied_weights_once():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(2, 2, bias=False)
            self.b = torch.nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

    model = Tied()
    ema = EMA(model, decay=0.5)
    start = model.a.weight.detach().clone()
    with torch.no_grad():
        model.a.weight.add_(2.0)
    ema.updates = 100  # past the warm-up: decay is exactly 0.5
    ema.update(model)
    assert torch.allclose(ema.shadow.a.weight, start + 1.0)
    assert ema.shadow.a.weight is ema.shadow.b.weight


def test_public_step_equals_fit_and_hooks_see_every_step(tmp_path, toy_registry):
    """``Trainer.step()`` is one optimisation step, EMA included: calling it 12 times gives exactly the
    weights ``fit`` reaches in 12 steps; a hook passed in place of the defaults sees each step, in order."""
    from genforge.train.hooks import Hook

    full, data = make_run(tmp_path / "full")
    fit(full, data)

    class Record(Hook):
        def __init__(self):
            self.calls = []

        def start(self, trainer):
            self.calls.append("start")

        def after_step(self, trainer, outcome):
            self.calls.append((trainer.global_step, outcome.ok, sorted(outcome.logs)))

        def end(self, trainer):
            self.calls.append("end")

        def close(self, trainer):
            self.calls.append("close")

    run, data = make_run(tmp_path / "manual")
    torch.manual_seed(run.config.train.seed)
    trainer = Trainer(run, Toy(ToyConfig(), run.spec), data, progress=False, hooks=[])
    outcomes = [trainer.step() for _ in range(12)]
    assert trainer.global_step == 12 and all(o.ok for o in outcomes) and outcomes[0].items == 8
    trainer.save_checkpoint()
    a, b = weights(full), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)

    hook = Record()
    run, data = make_run(tmp_path / "hooked", steps=3)
    torch.manual_seed(run.config.train.seed)
    result = Trainer(run, Toy(ToyConfig(), run.spec), data, progress=False, hooks=[hook]).fit()
    keys = ["a/grad_norm", "a/loss", "a/noise", "b/grad_norm", "b/loss"]
    assert hook.calls == ["start", (1, True, keys), (2, True, keys), (3, True, keys), "end", "close"]
    assert result.step == 3 and not run.model_path.exists()  # no default hooks: no checkpoint was asked for
