"""transformers export and import of genforge's GPT: GPT-2 and Llama layouts give transformers' logits and greedy
continuations, the tokenizers give the same ids, other layouts and inexact settings are refused in one line, and a
GPT-2 folder made by transformers itself imports exactly."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import genforge
from genforge.config import build_dataclass
from genforge.data.tokenizers import EOT, BPETokenizer, CharTokenizer
from genforge.errors import ExportError
from genforge.export.hf_transformer import GPT2, detect, export, read, to_hf
from genforge.families import get_family

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

BLOCK = 32
# code and prose, with the string of the end-of-text token as ordinary text (tokens of its characters)
CORPUS = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n# the cat sat on mat {i} <|endoftext|>\n"
                 for i in range(80))
LAYOUTS = {"gpt2": ["model.pos=learned", "model.norm=layernorm", "model.mlp=gelu"],
           "llama": ["model.pos=rope", "model.norm=rmsnorm", "model.mlp=swiglu"]}
# (layout, tokenizer, bias): each layout with each tokenizer, biases on in one run of each layout
RUNS = [("gpt2", "char", True), ("gpt2", "bpe", False), ("llama", "bpe", False), ("llama", "char", True)]


def train_run(corpus: Path, out: Path, overrides: list[str]) -> Path:
    genforge.train(family="transformer", data=f"text:{corpus}", out=out, steps=1, progress=False, device="cpu",
                   batch_size=2, sample_every=0, ckpt_every=0, grid_size=1,
                   overrides=["model.n_layer=2", "model.n_embd=32", "model.n_head=4", f"data.block_size={BLOCK}",
                              *overrides])
    return out


def perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Noise on every weight, so that norm gains are not 1, biases not 0: a wrong mapping cannot agree by chance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "code.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


@dataclass
class Export:
    """A trained run (weights perturbed), its export, and the export loaded by transformers."""

    model: Any  # genforge.load's Model, the exported weights
    folder: Path
    exported: Any
    hf: Any  # AutoModelForCausalLM
    tokenizer: Any  # AutoTokenizer


@pytest.fixture(scope="module", params=RUNS, ids=["-".join(map(str, p)) for p in RUNS])
def done(request, corpus, tmp_path_factory) -> Export:
    layout, kind, bias = request.param
    root = tmp_path_factory.mktemp(f"{layout}-{kind}")
    run = train_run(corpus, root / "run", [*LAYOUTS[layout], f"data.tokenizer={kind}", "data.vocab_size=300",
                                          f"model.bias={str(bias).lower()}"])
    model = genforge.load(run, device="cpu")
    perturb(model.family)
    folder = root / "export"
    folder.mkdir()
    exported = export(model, folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return Export(model, folder, exported, hf, transformers.AutoTokenizer.from_pretrained(folder))


def test_the_folder_is_what_transformers_loads(done):
    layout = done.model.run.config.model["pos"]
    assert done.exported.architecture == ("GPT2LMHeadModel" if layout == "learned" else "LlamaForCausalLM")
    assert type(done.hf).__name__ == done.exported.architecture
    assert sorted(p.name for p in done.folder.iterdir()) == sorted(done.exported.files)
    eot = done.model.tokenizer.eot_id
    generation = json.loads((done.folder / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (eot, eot, eot)
    assert done.exported.library == "transformers" and done.exported.pipeline_tag == "text-generation"


def test_logits_equal_genforge_on_random_batches(done):
    net, generator = done.model.family.net, torch.Generator().manual_seed(1)
    for length in (1, 7, BLOCK):
        ids = torch.randint(0, net.vocab_size, (3, length), generator=generator)
        with torch.no_grad():
            theirs, ours = done.hf(ids).logits, net(ids)
        assert ours.abs().max() > 1  # logits of perturbed weights, far from a flat zero
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_greedy_continuation_is_token_identical(done):
    prompt = [done.model.tokenizer.eot_id, *done.model.tokenizer.encode("def f3(x):\n")]
    ours = done.model.family.continue_(prompt, max_new_tokens=20, temperature=0)[0, len(prompt):].tolist()
    start = torch.tensor([prompt])
    theirs = done.hf.generate(start, attention_mask=torch.ones_like(start), do_sample=False,
                              max_new_tokens=20)[0, len(prompt):].tolist()
    # transformers stops at end-of-text (its eos); genforge's continuation goes on past it
    assert theirs == ours[:len(theirs)] and (len(theirs) == 20 or theirs[-1] == done.model.tokenizer.eot_id)


def test_the_load_snippet_runs(done):
    snippet = done.exported.load.replace("{path}", str(done.folder))
    exec(compile(snippet, "card", "exec"), {"print": lambda *args: None})


def test_tokenizer_gives_genforge_ids_and_special_ids(done):
    ours, theirs = done.model.tokenizer, done.tokenizer
    eot = ours.eot_id
    assert (theirs.eos_token_id, theirs.bos_token_id, theirs.pad_token_id, theirs.unk_token_id) == (eot,) * 4
    assert {name: theirs.convert_tokens_to_ids(name) for name in ours.special_ids} == ours.special_ids
    assert sorted(theirs.all_special_ids) == sorted(ours.special_ids.values())
    assert theirs.model_max_length == BLOCK and len(theirs) == ours.vocab_size
    # the string of a special token in text is its characters, in both
    text = f"x{EOT}x"
    assert theirs.encode(text, add_special_tokens=False) == ours.encode(text) and eot not in ours.encode(text)

    alphabet = st.sampled_from(ours.chars) if isinstance(ours, CharTokenizer) else st.characters(exclude_categories=("Cs",))

    @settings(max_examples=60, deadline=None)
    @given(st.text(alphabet, max_size=80), st.lists(st.sampled_from(sorted(ours.special_ids.values())), max_size=3))
    def same_ids(text: str, specials: list[int]):
        ids = ours.encode(text)
        assert theirs.encode(text, add_special_tokens=False) == ids
        mixed = specials + ids + specials  # decoding drops special tokens in both
        assert theirs.decode(mixed, skip_special_tokens=True) == ours.decode(mixed) == text

    same_ids()


def test_export_then_read_gives_back_the_run(done):
    assert detect(done.folder)
    imported = read(done.folder)
    state = done.model.family.state_dict()
    assert imported.tensors.keys() == state.keys()
    assert all(torch.equal(imported.tensors[name], tensor) for name, tensor in state.items())
    architecture = ("n_layer", "n_head", "n_embd", "bias", "pos", "norm", "mlp", "rope_base")
    assert {k: imported.model[k] for k in architecture} == {k: done.model.run.config.model[k] for k in architecture}
    assert imported.tokenizer == done.model.tokenizer and type(imported.tokenizer) is type(done.model.tokenizer)
    assert (imported.spec.kind, tuple(imported.spec.shape), imported.spec.vocab_size) == \
        (done.model.spec.kind, tuple(done.model.spec.shape), done.model.spec.vocab_size)
    assert imported.family == "transformer" and imported.data == {"block_size": BLOCK}


def test_a_llama_config_of_older_transformers_reads_alike(done, tmp_path):
    """transformers 4 wrote RoPE's theta and scaling as top-level keys; 5 writes rope_parameters."""
    config = json.loads((done.folder / "config.json").read_text())
    if config["model_type"] != "llama":
        return
    shutil.copytree(done.folder, tmp_path / "old")
    config.pop("rope_parameters")
    (tmp_path / "old" / "config.json").write_text(json.dumps({**config, "rope_theta": 5000.0, "rope_scaling": None}))
    assert read(tmp_path / "old").model["rope_base"] == 5000.0


def test_other_layouts_are_refused_in_one_line(corpus, tmp_path):
    run = train_run(corpus, tmp_path / "run", ["model.pos=rope", "model.norm=layernorm", "model.mlp=gelu",
                                               "model.n_layer=1"])
    with pytest.raises(ExportError) as error:
        export(genforge.load(run, device="cpu"), tmp_path)
    line = one_line(error)
    for words in ("pos=rope, norm=layernorm, mlp=gelu", "GPT-2 is pos=learned, norm=layernorm, mlp=gelu",
                  "Llama is pos=rope, norm=rmsnorm, mlp=swiglu", "--format onnx"):
        assert words in line
    assert [p.name for p in tmp_path.iterdir()] == ["run"], "nothing written"


# ---- a GPT-2 made by transformers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """A tiny random GPT2LMHeadModel (every weight perturbed, biases included, GPT-2's tanh GELU "gelu_new") and a
    GPT-2 style byte-level BPE (end-of-text as its last id, no FIM tokens), both saved by transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("gpt2") / "model"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([CORPUS], trainer=trainer)
    bpe.add_special_tokens([AddedToken(EOT, special=True)])
    folder.mkdir()
    bpe.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    (folder / "vocab.json").write_text(json.dumps({**vocab, EOT: 300}), encoding="utf-8")  # where GPT-2 has it: last
    tokenizer = transformers.GPT2Tokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    config = transformers.GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=BLOCK, n_embd=32, n_layer=2,
                                     n_head=4, activation_function="gelu_new", bos_token_id=300, eos_token_id=300)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    perturb(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build(imported) -> Any:
    """The family the importer describes, with its weights loaded strictly (what `genforge import` does)."""
    family_cls = get_family(imported.family, imported.spec.kind)
    family = family_cls(build_dataclass(family_cls.Config, imported.model, "model"), imported.spec)
    family.load_state_dict(imported.tensors, strict=True)
    return family.eval()


def test_a_transformers_gpt2_imports_with_its_logits_and_tokenizer(gpt2_folder):
    assert (gpt2_folder / "model.safetensors").is_file() and detect(gpt2_folder)
    imported = read(gpt2_folder)
    assert imported.model["bias"] is True and imported.model["pos"] == "learned" and imported.spec.vocab_size == 301
    assert imported.model["mlp"] == "gelu_tanh" and imported.model["end_of_text"] == 300
    assert imported.data == {"block_size": BLOCK} and "GPT2LMHeadModel" in imported.description
    family = build(imported)
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    ids = torch.randint(0, 301, (2, BLOCK), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(family(ids), hf(ids).logits, atol=1e-4, rtol=0)

    tokenizer, theirs = imported.tokenizer, transformers.AutoTokenizer.from_pretrained(gpt2_folder)
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.eot_id == 300 and tokenizer.fim_ids() is None
    assert tokenizer.special_ids == {EOT: 300} and tokenizer.token_bytes(300) == b""
    text = "def f12(x):\n    return x * 12  # é, 🙂\n"
    assert tokenizer.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert tokenizer.decode_bytes(tokenizer.encode(text)) == text.encode() and tokenizer.decode([300, 71]) == theirs.decode([71])


def test_a_gpt2_tokenizer_from_vocab_and_merges_alone(gpt2_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    (folder / "tokenizer.json").unlink()
    with_json = read(gpt2_folder).tokenizer
    alone = read(folder).tokenizer
    text = CORPUS[:500] + " ünïcode 🙂"
    assert alone.special_ids == {EOT: 300} and alone.encode(text) == with_json.encode(text)
    assert alone.decode(alone.encode(text)) == text


def test_a_gpt2_saved_again_from_an_import_keeps_its_tensors(gpt2_folder, tmp_path):
    imported = read(gpt2_folder)
    model = build(imported)
    # through genforge's own exporter: a GPT-2 with biases comes back with the same tensors
    again = to_hf(GPT2, {k[len("net."):]: v for k, v in model.state_dict().items()}, 2)
    original = load_file(str(gpt2_folder / "model.safetensors"))
    assert all(torch.equal(again[name], original[name]) for name in again)
    assert set(original) - set(again) <= {"lm_head.weight"}


@pytest.mark.parametrize("setting, value, words", [
    ("activation_function", "relu", "erf GELU and its tanh approximation"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=True"),
    ("reorder_and_upcast_attn", True, "reorder_and_upcast_attn=True"),
    ("n_inner", 64, "4 x n_embd = 128"),
    ("layer_norm_epsilon", 1e-6, "eps is 1e-05"),
    ("tie_word_embeddings", False, "token embedding"),
    ("vocab_size", 400, "vocab_size 400"),
])
def test_inexact_gpt2_settings_are_refused_in_one_line(gpt2_folder, tmp_path, setting, value, words):
    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, setting: value}))
    with pytest.raises(ExportError) as error:
        read(folder)
    assert words in one_line(error)


def test_pickled_weights_are_never_read(gpt2_folder, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(gpt2_folder / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    assert detect(folder)
    with pytest.raises(ExportError) as error:
        read(folder)
    line = one_line(error)
    assert "pytorch_model.bin" in line and "pickle" in line and "convert it to safetensors" in line


def test_inexact_llama_settings_are_refused_in_one_line(tmp_path):
    base = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 4,
            "num_hidden_layers": 1, "intermediate_size": 128, "hidden_act": "silu", "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True, "max_position_embeddings": 32, "vocab_size": 300}
    for change, words in (({"num_key_value_heads": 2}, "grouped-query"), ({"tie_word_embeddings": False}, "embedding"),
                          ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "unscaled"),
                          ({"hidden_act": "gelu"}, "SiLU"), ({"intermediate_size": 96}, "= 128 wide"),
                          ({"attention_bias": True}, "one bias setting")):
        (tmp_path / "config.json").write_text(json.dumps({**base, **change}))
        with pytest.raises(ExportError) as error:
            read(tmp_path)
        assert words in one_line(error), change


def test_a_music_run_exports_its_model_and_says_how_its_tokens_become_files(tmp_path):
    from symusic import Note, Score, Track

    folder = tmp_path / "midi"
    folder.mkdir()
    for seed in range(2):
        score, track = Score(8), Track(name="melody", program=0)
        track.notes.extend(Note(8 * beat, 8, 60 + (beat * (seed + 2)) % 12, 80) for beat in range(16))
        score.tracks.append(track)
        score.dump_midi(str(folder / f"piece{seed}.mid"))
    genforge.train(family="transformer", data=f"music:{folder}", out=tmp_path / "run", steps=1, progress=False,
                   device="cpu", batch_size=2, sample_every=0, ckpt_every=0, grid_size=1,
                   overrides=["model.n_layer=1", "model.n_embd=32", "model.n_head=2", "data.block_size=32"])
    model = genforge.load(tmp_path / "run", device="cpu")
    perturb(model.family)
    out = tmp_path / "export"
    out.mkdir()
    exported = export(model, out)
    assert not any(name.startswith("tokenizer") or name == "special_tokens_map.json" for name in exported.files)
    assert any("genforge's music tokens" in note and ".codec.save(" in note for note in exported.notes)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, model.spec.vocab_size, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model.family.net(ids), atol=1e-4, rtol=0)
    exec(compile(exported.load.replace("{path}", str(out)), "card", "exec"), {"print": lambda *args: None})


def test_a_transformers_gpt2_imported_as_a_run_samples_from_its_own_end_of_text(gpt2_folder, tmp_path):
    from genforge.export import import_folder

    run = import_folder(gpt2_folder, tmp_path / "run")
    model = genforge.load(run.path, device="cpu")
    assert model.family.config.end_of_text == 300 and model.family.start_ids(1).tolist() == [[300]]
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    start = torch.tensor([[300]])
    theirs = hf.generate(start, attention_mask=torch.ones_like(start), do_sample=False, max_new_tokens=12)[0, 1:]
    ours = model.family.continue_([300], max_new_tokens=12, temperature=0)[0, 1:]
    assert theirs.tolist() == ours[:len(theirs)].tolist()
    assert isinstance(model.sample(2, seed=0, max_new_tokens=8)[0], str)
