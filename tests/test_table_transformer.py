"""The transformer on tables: rows to tokens and back, a causal net over any column order, a tiny functional table
learnt, ``where`` placed into the rows (exact, whichever column it names), and a CSV run sampled end to end."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tabletools import check_sampled_patients, fit_steps, patients_csv

import genforge
from genforge.data.spec import DataSpec, TableSpan
from genforge.errors import ConfigError
from genforge.families import get_family, table_transformer
from genforge.families.capabilities import TableTokenSampling
from genforge.families.table_conditions import Condition, matching
from genforge.families.table_transformer import TableTransformer, TableTransformerConfig
from genforge.families.transformer import Transformer
from genforge.nets.row_tokens import INNER_ORDER, RowTokens
from genforge.sampling.tokens import Decoding

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = Decoding(temperature=0)


# ---- rows <-> tokens ------------------------------------------------------------------------------
COLUMN_PARTS = {  # the spans a column of each kind encodes to (kind, width); None: a width drawn later
    "number": [("value", 1)], "moded": [("value", 1), ("mode", None)], "gappy": [("value", 1), ("missing", 2)],
    "moded_gappy": [("value", 1), ("mode", None), ("missing", 2)], "category": [("category", None)],
    "code": [("code", None)],
}


@st.composite
def layouts_and_rows(draw):
    """Spans of 1-6 columns of any kind, and 1-8 rows encoded in them (values a little past [-1, 1] too)."""
    kinds = draw(st.lists(st.sampled_from(sorted(COLUMN_PARTS)), min_size=1, max_size=6))
    spans, start = [], 0
    for c, kind in enumerate(kinds):
        for part, width in COLUMN_PARTS[kind]:
            width = width or draw(st.integers(2 if part == "mode" else 1, 5))
            spans.append(TableSpan(f"c{c}", part, start, width))
            start += width
    n = draw(st.integers(1, 8))
    rows = torch.zeros(n, start)
    for span in spans:
        for i in range(n):
            if span.kind == "value":
                rows[i, span.start] = draw(st.floats(-1.25, 1.25, width=32))
            elif span.kind == "code":
                rows[i, span.start:span.stop] = torch.tensor(draw(st.lists(st.sampled_from([-1.0, 1.0]),
                                                                           min_size=span.width, max_size=span.width)))
            else:
                rows[i, span.start + draw(st.integers(0, span.width - 1))] = 1.0
    return spans, rows, draw(st.integers(0, 2**16)), draw(st.sampled_from([2, 7, 64]))


@settings(max_examples=60, deadline=None)
@given(case=layouts_and_rows())
def test_rows_become_tokens_in_their_slots_vocabulary_and_come_back(case):
    spans, rows, seed, bins = case
    tokens_of = RowTokens(spans, bins)
    tokens = tokens_of.encode(rows)
    sizes = torch.tensor([s.size for s in tokens_of.slots])
    assert tokens.shape == (rows.shape[0], tokens_of.num_slots)
    assert bool(((tokens >= 0) & (tokens < sizes)).all())
    ids = tokens_of.ids(tokens)  # ids of the shared table: each one among its slot's own
    own = tokens_of.vocab_index[torch.arange(tokens_of.num_slots)]
    assert bool(((own == ids[..., None]) & tokens_of.valid).any(dim=2).all())
    assert ids.max() < tokens_of.vocab_size

    back = tokens_of.decode(tokens, torch.Generator().manual_seed(seed))
    for span in spans:
        got, want = back[:, span.start:span.stop], rows[:, span.start:span.stop]
        if span.kind == "value":  # within the bin of the value (clamped into [-1, 1])
            assert bool(((got - want.clamp(-1, 1)).abs() <= tokens_of.bin_width + 1e-6).all())
            assert bool((got.abs() <= 1).all())
        else:  # one-hots and code bits exactly
            assert torch.equal(got, want)


@settings(max_examples=40, deadline=None)
@given(case=layouts_and_rows())
def test_a_column_order_keeps_each_columns_slots_together_and_round_trips(case):
    spans, rows, seed, bins = case
    tokens_of = RowTokens(spans, bins)
    tokens = tokens_of.encode(rows)
    keys = torch.rand(rows.shape[0], len(tokens_of.columns), generator=torch.Generator().manual_seed(seed))
    order = tokens_of.slot_order(keys)
    assert torch.equal(order.sort(dim=1).values, torch.arange(tokens_of.num_slots).expand_as(order))
    in_order = tokens.gather(1, order)
    assert torch.equal(in_order.gather(1, order.argsort(dim=1)), tokens)  # back to canonical order
    for b in range(rows.shape[0]):
        columns = [tokens_of.slots[p].column for p in order[b].tolist()]
        runs = [c for i, c in enumerate(columns) if i == 0 or c != columns[i - 1]]
        assert runs == keys[b].argsort(stable=True).tolist()  # whole columns, by key
        kinds = [INNER_ORDER.index(span_kind(spans, tokens_of.slots[p].start)) for p in order[b].tolist()]
        assert all(kinds[i] <= kinds[i + 1] for i in range(len(kinds) - 1) if columns[i] == columns[i + 1])


def span_kind(spans: list[TableSpan], dim: int) -> str:
    return next(s.kind for s in spans if s.start <= dim < s.stop)


# ---- the net -------------------------------------------------------------------------------------
# v: a value with 2 modes; a, b: 4 categories each, b = F[a]; c: a 3-bit code; 13 dims, columns a and b not first
LAYOUT = {"spans": [{"column": "v", "kind": "value", "start": 0, "width": 1},
                    {"column": "v", "kind": "mode", "start": 1, "width": 2},
                    {"column": "a", "kind": "category", "start": 3, "width": 4},
                    {"column": "b", "kind": "category", "start": 7, "width": 4},
                    {"column": "c", "kind": "code", "start": 11, "width": 2}], "columns": []}
SPEC = DataSpec(modality="table", shape=(13,), table=LAYOUT)
F = torch.tensor([2, 0, 3, 1])  # b = F[a]


def functional_rows(n: int) -> torch.Tensor:
    """Rows where b = F[a], v's mode is a's parity and v lies in [-0.5, 0.5]; c's code is a's bits."""
    g = torch.Generator().manual_seed(0)
    a = torch.arange(n) % 4
    x = torch.zeros(n, 13)
    x[:, 0] = torch.rand(n, generator=g) - 0.5
    x[torch.arange(n), 1 + a % 2] = 1
    x[torch.arange(n), 3 + a] = 1
    x[torch.arange(n), 7 + F[a]] = 1
    x[:, 11], x[:, 12] = (a // 2) * 2.0 - 1, (a % 2) * 2.0 - 1
    return x


def model(order: str = "random", **config) -> TableTransformer:
    torch.manual_seed(0)
    return TableTransformer(TableTransformerConfig(n_layer=2, n_head=2, n_embd=32, bins=16, order=order, **config),
                            SPEC)


@pytest.mark.parametrize("order", ["random", "fixed"])
def test_the_logits_of_a_slot_do_not_depend_on_tokens_read_after_it(order):
    net = model(order).eval()
    tokens = net.rows.encode(functional_rows(6))
    reading = net.column_order(torch.rand(6, 4, generator=torch.Generator().manual_seed(1)))
    logits = net(tokens, reading)
    for t in range(net.rows.num_slots):
        changed = tokens.clone()
        later = reading[:, t:]  # the slots read at step t and after: their tokens change
        sizes = torch.tensor([s.size for s in net.rows.slots])[later]
        changed.scatter_(1, later, (changed.gather(1, later) + 1) % sizes)
        other = net(changed, reading)
        upto = reading[:, :t + 1]  # the logits of steps 0..t read only tokens before step t
        torch.testing.assert_close(other.gather(1, upto[..., None].expand(-1, -1, other.shape[2])),
                                   logits.gather(1, upto[..., None].expand(-1, -1, logits.shape[2])))
        if t + 1 < net.rows.num_slots:  # and the next step's do see the changed token
            step = reading[:, t + 1:t + 2, None].expand(-1, -1, logits.shape[2])
            assert not torch.allclose(other.gather(1, step), logits.gather(1, step))


def test_drawing_with_the_cache_follows_the_teacher_forced_logits():
    """Greedy draws, one step at a time with the cache, are the argmax of the full teacher-forced pass."""
    net = model().eval()
    with torch.no_grad():
        tokens, order = net.draw_tokens(8, torch.Generator().manual_seed(0), GREEDY)
        assert torch.equal(net(tokens, order).argmax(dim=2), tokens)


def train(net: TableTransformer, x: torch.Tensor, steps: int) -> list[float]:
    return fit_steps(net, x, steps, torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0))


@pytest.fixture(scope="module")
def learnt() -> TableTransformer:
    net = model()
    net.losses = train(net, functional_rows(64), 150)
    return net


def categories(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, 3:7].argmax(1), x[:, 7:11].argmax(1)


def test_a_tiny_functional_table_is_learnt(learnt):
    """The loss falls from about the uniform guess's to near the table's own entropy per token: a row's only
    freedom is a (4 categories) and v's bin within its half (8 of 16), shared over its 6 tokens."""
    floor = (math.log(4) + math.log(8)) / 6
    assert learnt.losses[0] > floor + 0.5 and sum(learnt.losses[-10:]) / 10 < floor + 0.1
    x = learnt.sample(400, generator=torch.Generator().manual_seed(0))
    a, b = categories(x)
    assert (b == F[a]).float().mean() > 0.95  # the function holds in the samples
    assert set(a.tolist()) == {0, 1, 2, 3}
    assert (x[:, 1:3].argmax(1) == a % 2).float().mean() > 0.9  # v's mode follows a
    assert ((x[:, 11] > 0).long() * 2 + (x[:, 12] > 0).long() == a).float().mean() > 0.9  # and so do c's bits


@pytest.mark.parametrize("where, column, value", [([Condition("a", 2)], "a", 2), ([Condition("b", 1)], "b", 1),
                                                  ([Condition("c", 3, count=4)], "c", 3)])
def test_where_places_the_condition_into_every_row_and_the_rest_follows(learnt, monkeypatch, where, column, value):
    """Whichever column is named (not the first, the last, a binary code), every row holds it, without a
    single row rejected, and the other columns follow it as the table does."""
    monkeypatch.setattr(table_transformer, "draw_matching", None)  # random order never rejects
    x = learnt.sample(200, generator=torch.Generator().manual_seed(0), where=where)
    assert x.shape == (200, 13) and bool(matching(x, learnt.spans, where).all())
    a, b = categories(x)
    codes = (x[:, 11] > 0).long() * 2 + (x[:, 12] > 0).long()
    assert (b == F[a]).float().mean() > 0.95 and (codes == a).float().mean() > 0.9
    assert bool(((a if column == "a" else b if column == "b" else codes) == value).all())


def test_where_is_exact_before_any_training_and_the_same_seed_gives_the_same_rows():
    net = model()
    where = [Condition("b", 3), Condition("c", 1, count=4)]
    x = net.sample(100, generator=torch.Generator().manual_seed(0), where=where)
    assert bool(matching(x, net.spans, where).all())
    assert torch.equal(x, net.sample(100, generator=torch.Generator().manual_seed(0), where=where))
    assert not torch.equal(x, net.sample(100, generator=torch.Generator().manual_seed(1), where=where))
    assert net.sample(0, generator=torch.Generator().manual_seed(0), where=where).shape == (0, 13)
    with pytest.raises(ConfigError, match="has 4 categories; category 4 is not one of them"):
        net.sample(5, where=[Condition("a", 4)])
    with pytest.raises(ConfigError, match="conditioned on twice"):
        net.sample(5, where=[Condition("a", 1), Condition("a", 2)])


def test_fixed_order_places_leading_conditions_and_rejects_for_others(monkeypatch):
    net = model("fixed")
    asked = []
    original = table_transformer.draw_matching

    def spy(draw, n, spans, conditions):
        asked.append(conditions)
        return original(draw, n, spans, conditions)

    monkeypatch.setattr(table_transformer, "draw_matching", spy)
    assert net.prompt([Condition("a", 1)]) is None  # a is not the first column: rows are drawn and kept
    x = net.sample(50, generator=torch.Generator().manual_seed(0), where=[Condition("a", 1)])
    assert asked == [[Condition("a", 1)]] and bool((categories(x)[0] == 1).all())

    a_first = {"spans": [{"column": "a", "kind": "category", "start": 0, "width": 4},
                         {"column": "b", "kind": "category", "start": 4, "width": 4}], "columns": []}
    leading = TableTransformer(TableTransformerConfig(n_layer=1, n_head=2, n_embd=16, order="fixed"),
                               DataSpec("table", (8,), table=a_first))
    x = leading.sample(50, generator=torch.Generator().manual_seed(0), where=[Condition("a", 3)])
    assert len(asked) == 1 and bool((x[:, 0:4].argmax(1) == 3).all())  # a leads: placed, not rejected


def test_temperature_and_top_p_are_sampling_settings():
    """Greedy draws in fixed order are the same rows whatever the seed, but for the values' draws within bins."""
    net = model("fixed")
    one, two = (net.sample(20, generator=torch.Generator().manual_seed(seed), temperature=0) for seed in (0, 1))
    assert torch.equal(one[:, 1:], two[:, 1:]) and bool(((one[:, 0] - two[:, 0]).abs() <= net.rows.bin_width).all())
    assert net.sample(5, generator=torch.Generator().manual_seed(0), top_p=0.5).shape == (5, 13)
    assert TableTransformer.capabilities["sample"] is TableTokenSampling
    assert TableTransformer.settings("sample", {"temperature": 0.7, "top_p": 0.9}).given() == {
        "temperature": 0.7, "top_p": 0.9}
    with pytest.raises(ConfigError, match="top_p must be"):
        TableTransformer.settings("sample", {"top_p": 0})
    with pytest.raises(ConfigError, match="does not accept label"):
        net.sample(5, label=1)


def test_the_transformer_on_tables_is_its_own_class_and_checks_its_config():
    assert get_family("transformer", "table") is TableTransformer and get_family("transformer", "tokens") is Transformer
    for bad, message in (({"bins": 1}, "model.bins must be an integer in"), ({"order": "zigzag"}, "unknown model.order"),
                         ({"n_embd": 30, "n_head": 4}, "must be divisible by model.n_head"),
                         ({"dropout": 1.0}, "model.dropout")):
        with pytest.raises(ConfigError, match=message):
            TableTransformer(TableTransformerConfig(**bad), SPEC)


def test_a_table_run_from_csv_samples_rows_with_the_original_header(tmp_path):
    run = tmp_path / "run"
    result = genforge.train("transformer", f"csv:{patients_csv(tmp_path)}", run, steps=30, batch_size=64,
                            progress=False, overrides=["model.n_layer=1", "model.n_embd=16", "model.n_head=2",
                                                       "train.sample_every=0"])
    assert result.step == 30
    loaded = genforge.load(run, device="cpu")
    check_sampled_patients(loaded, tmp_path / "gen")
    rows = loaded.sample(30, seed=1, where="smoker=yes", temperature=0.8)
    assert len(rows) == 30 and set(rows["smoker"]) == {"yes"}
