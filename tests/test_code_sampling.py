"""Code stops (Python samples that end at top-level statement boundaries): the scanner and the cuts on
hand-made text, their properties on generated programs, and the option through the API, streams, the
scorer and `genforge sample`; the run's sampling defaults recorded in new configs, old ones unchanged."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from clitools import one_error_line, run_main
import genforge
from genforge.errors import ConfigError
from genforge.sampling.code_stops import (
    block_boundary,
    code_held_back,
    code_stop_cut,
    ended_at_end_of_text,
    resolve_code_stop,
    starts_new_line_at_column_0,
    top_level_statements,
    trim_point,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PROGRAM = ('"""Module doc.\n\nA line at column 0 inside the docstring.\n"""\n'
           "import os\n"
           "\n"
           "@decorator\n"
           "def f(x,\n"
           "y):\n"
           "    if x:  # ( not a bracket\n"
           "        return '#'\n"
           "# a comment at column 0\n"
           "    else:\n"
           "        pass\n"
           "\n"
           "\n"
           "X = 1 + \\\n"
           "2\n"
           "class A:\n"
           "    pass\n")


def starts(text: str) -> list[str]:
    return [text[s.start:].split("\n", 1)[0] for s in top_level_statements(text)]


# ---- the scanner and the cuts, exactly ----

def test_statement_starts_skip_strings_brackets_comments_continuations_and_decorated_defs():
    assert starts(PROGRAM) == ['"""Module doc.', "import os", "@decorator", "X = 1 + \\", "class A:"]
    assert [s.after_block for s in top_level_statements(PROGRAM)] == [False, False, False, True, False]


def test_block_ends_before_the_first_statement_after_a_complete_block():
    assert PROGRAM[:block_boundary(PROGRAM)].endswith("        pass\n\n\n")
    assert block_boundary("import os\nx = 1\n") == -1  # no block yet
    assert block_boundary("if a:\n    b\nelse:\n    c\n") == -1  # else continues the if
    assert block_boundary("if a:\n    b\nels") == -1  # may still become else: not decided
    assert block_boundary("if a:\n    b\nx") == 12  # no continuation starts with x: decided at once
    assert block_boundary("if a:\n    b\nelsewhere = 1") == 12
    # only cuts with content between the prompt's end and them
    assert block_boundary("def f():\n    return 1\nx = 2\n", start=21) == -1
    assert block_boundary("def f():\n    return 1\nx = 2\ny = 3\n", start=21) == -1  # x closes no block


def test_trim_drops_the_last_statement_of_a_cut_sample_but_never_all_of_it():
    cut = "import os\ndef f():\n    return ("
    assert cut[:trim_point(cut)] == "import os\n"
    assert trim_point("def f():\n    return (") == len("def f():\n    return (")  # one statement: kept
    assert trim_point("x = 1\ntry:\n    b\nexc") == 6  # "exc" may be the except the try needs: no cut there
    assert code_held_back("x = 1\nif a:\n    b\nels", 0, "trim") == len("if a:\n    b\nels")
    assert code_stop_cut(cut, 0, "trim", ended=True) == len(cut)  # ended on its own: nothing to trim
    assert code_stop_cut(cut, 0, "off", ended=False) == len(cut)
    assert code_stop_cut(PROGRAM, 0, "block", ended=True) == block_boundary(PROGRAM)


def test_resolve_and_ended_at_end_of_text():
    assert resolve_code_stop("auto", True) == "block" and resolve_code_stop("auto", False) == "off"
    assert resolve_code_stop("trim", False) == "trim"
    with pytest.raises(ConfigError, match=r"unknown code_stop 'blocks'; expected one of: off, trim, block, auto"):
        resolve_code_stop("blocks", True)
    assert ended_at_end_of_text([0, 5, 6, 0, 7], 1, 0)
    assert not ended_at_end_of_text([0, 0, 5, 6], 1, 0)  # a leading end-of-text separates documents
    assert not ended_at_end_of_text([0, 0, 0], 1, 0)


# ---- properties on generated programs ----

STATEMENTS = [
    "import os\n", "x = 1\n", "X = [1,\n2,\n]\n", "s = 'a # b' \\\n    + \"c\"\n", '"""doc\nat col 0\n"""\n',
    "def f(a):\n    return a\n", "@d\ndef g():\n    '''x\ny'''\n    pass\n", "class A:\n    x = (1,\n2)\n",
    "if x:\n    y = 1\nelif z:\n    pass\nelse:\n    pass\n", "try:\n    a()\nexcept E:\n    b\nfinally:\n    c\n",
    "for i in r:\n# col-0 comment\n    pass\n", "elsewhere = 2\n", "\n", "# comment\n", "while 1:\n    break\n\n\n",
]
programs = st.lists(st.sampled_from(STATEMENTS), min_size=1, max_size=8).map("".join)


@given(programs, st.data())
@settings(max_examples=150, deadline=None)
def test_cuts_of_a_valid_program_parse_and_never_move_back(text, data):
    ast.parse(text)
    k = data.draw(st.integers(0, len(text)))
    prefix = text[:k]
    for mode in ("trim", "block"):
        kept = prefix[:code_stop_cut(prefix, 0, mode, ended=False)]
        if kept != prefix:  # a cut at a statement start: only complete statements before it
            ast.parse(kept)
    boundary = block_boundary(prefix)
    if boundary >= 0:  # once decided, a boundary stays where it is however the text goes on
        assert block_boundary(text) == boundary
        ast.parse(text[:boundary])
    else:  # a stream still running never shows what the final cut takes back
        assert k - code_held_back(prefix, 0, "block") <= code_stop_cut(text, 0, "block", ended=False)


@given(st.text(alphabet="ab: \n\t#'\"()\\@e", max_size=40), st.data())
@settings(max_examples=150, deadline=None)
def test_boundaries_of_any_text_are_prefix_consistent(text, data):
    k = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(0, k))
    boundary = block_boundary(text[:k])
    if boundary >= 0:
        assert block_boundary(text) == boundary
        if block_boundary(text[:j]) < 0:  # the cheap test a generation loop runs first never misses it
            assert starts_new_line_at_column_0(text[:k], j)
    assert k - code_held_back(text[:k], 0, "trim") <= code_stop_cut(text, 0, "trim", ended=False)


# ---- through a (tiny) run: the API, streams, the scorer and the command line ----

CORPUS = PROGRAM + "def main():\n    return os.sep\nelsewhere = [X, A, f]\n"


@pytest.fixture(scope="module")
def code_run(tmp_path_factory) -> Path:
    """A tiny transformer on a .py file (so "auto" means block), trained two steps."""
    folder = tmp_path_factory.mktemp("code")
    (folder / "corpus.py").write_text(CORPUS * 20, encoding="utf-8")
    out = folder / "run"
    genforge.train(family="transformer", data=f"text:{folder / 'corpus.py'}", out=out, steps=2, progress=False,
                   overrides=["data.block_size=64", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
                              "train.sample_every=0"], device="cpu")
    return out


def scripted(model, script: str):
    """The run with its net replaced by one that writes ``script`` (then end-of-text), whatever came before."""
    ids = model.tokenizer.encode(script) + [model.tokenizer.eot_id]
    vocab = model.family.net.vocab_size
    calls = []

    def forward(idx: torch.Tensor, cache=None) -> torch.Tensor:
        calls.append(1)
        nxt = ids[min(len(calls) - 1, len(ids) - 1)]
        return F.one_hot(torch.full(idx.shape, nxt), vocab).float() * 50

    model.family.net.forward = forward
    return calls


def test_new_runs_record_the_sampling_defaults_and_old_configs_sample_as_before(code_run, tmp_path):
    config = yaml.safe_load((code_run / "config.yaml").read_text())
    assert config["model"]["code_stop"] == "auto"
    assert {"temperature", "top_p"} <= set(config["model"])
    old = tmp_path / "old"
    import shutil

    shutil.copytree(code_run, old)
    for key in ("code_stop", "temperature", "top_p"):
        del config["model"][key]
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    model = genforge.load(old, device="cpu")
    assert (model.family.config.code_stop, model.family.config.temperature, model.family.config.top_p) == ("off", 0.8, 1.0)
    script = "import os\ndef f():\n    return 1\nx = 2\n"
    scripted(model, script)
    assert model.sample(1, max_new_tokens=len(script) + 4)[0] == script  # no code stop: all of it


def test_block_and_trim_through_sample_and_stream(code_run):
    model = genforge.load(code_run, device="cpu")
    script = "import os\ndef f():\n    return 1\nx = 2\ny = 1\n"
    calls = scripted(model, script)
    assert model.sample(2, max_new_tokens=60) == ["import os\ndef f():\n    return 1\n"] * 2  # auto: block
    assert len(calls) == len("import os\ndef f():\n    return 1\nx")  # one token per call: ends once "x" decides
    calls.clear()
    assert "".join(model.stream(max_new_tokens=60)) == "import os\ndef f():\n    return 1\n"
    calls.clear()
    cut = "import os\ndef f():\n    ret"
    assert model.sample(1, max_new_tokens=len(cut), code_stop="trim")[0] == "import os\n"  # the length limit
    calls.clear()
    pieces = list(model.stream(max_new_tokens=len(cut), code_stop="trim"))
    assert "".join(pieces) == "import os\n" and all("def" not in p for p in pieces)  # never shown, then taken back
    calls.clear()
    assert model.sample(1, max_new_tokens=60, code_stop="off")[0] == script  # ended at end-of-text
    calls.clear()
    # a prompt's function ends where the next top-level statement begins (HumanEval's completions)
    assert model.sample(1, prompt="def g():\n    ", max_new_tokens=60)[0] == "def g():\n    import os\n"
    calls.clear()
    assert model.sample(1, prompt="def g(", max_new_tokens=60)[0] == "def g(" + script  # all inside the bracket


def test_the_scorer_scores_what_sample_returns(code_run):
    model = genforge.load(code_run, device="cpu")
    script = "import os\ndef f():\n    return 1\nx = 2\n"
    calls = scripted(model, script)
    from genforge.evaluate.evaluator import Evaluator
    from genforge.modalities import prepare

    config = model.run.config
    evaluator = Evaluator(prepare(config.data.source, config.data, progress=False), n=2, progress=False)
    tokens, _ = evaluator.draw(model.family, None, 2, prompt=[model.tokenizer.eot_id], max_new_tokens=60)
    texts = evaluator.scorer.code_stopped(model.family, evaluator.scorer.decode(tokens, 1), tokens, 1)
    calls.clear()
    assert texts == model.sample(2, max_new_tokens=60) == ["import os\ndef f():\n    return 1\n"] * 2


def test_code_stop_from_the_command_line_and_in_info(code_run, tmp_path):
    result = run_main("sample", code_run, "-n", "2", "--max-new-tokens", "40", "--code-stop", "trim",
                      "--out", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s" / "settings.json").read_text())["code_stop"] == "trim"
    bad = run_main("sample", code_run, "-n", "1", "--code-stop", "blocks", "--out", tmp_path / "t")
    assert one_error_line(bad).endswith("unknown code_stop 'blocks'; expected one of: off, trim, block, auto")
    assert "--code-stop" in run_main("sample", "--help").stdout
    info = json.loads(run_main("info", code_run, "--json").stdout)
    option = next(o for o in info["capabilities"]["sample"]["settings"] if o["name"] == "code_stop")
    assert option["choices"] == ["off", "trim", "block", "auto"] and "top-level" in option["help"]
