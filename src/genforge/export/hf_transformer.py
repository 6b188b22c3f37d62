"""transformers export and import of genforge's GPT: ``GPT2LMHeadModel`` and ``LlamaForCausalLM`` folders.

Two of genforge's architectures are a transformers model weight for weight, so logits agree to float rounding:

- pos=learned, norm=layernorm, mlp=gelu is GPT-2 with the exact (erf) GELU, LayerNorm eps 1e-5 and a tied
  head. HF's GPT-2 keeps its linear weights as ``Conv1D`` (in, out), the transpose of ``nn.Linear``'s, and
  always has biases: a run without them gets zeros, which is exact.
- pos=rope, norm=rmsnorm, mlp=swiglu is Llama with as many key/value heads as query heads, a tied head and
  genforge's SwiGLU width. Both rotate channel pairs (i, i + D/2) of each head by pos * theta^(-2i/D) ("rotate
  half", the same cos/sin tables), scale attention scores by 1/sqrt(head size) and scale nothing else (no
  embedding multiplier; default RoPE's attention factor is 1). genforge's ``qkv`` and SwiGLU ``fc`` layers are
  HF's q/k/v and gate/up projections stacked in that order.

Any other combination has no such twin; ONNX export takes it. Import reads config.json as JSON and the weights
from safetensors only (never a pickle), so it needs no transformers, and refuses in one line every setting
genforge cannot reproduce exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from genforge.data.spec import DataSpec
from genforge.errors import ExportError
from genforge.export.hf_tokenizer import is_text_tokenizer, read_tokenizer, write_tokenizer
from genforge.export.peers import require
from genforge.export.registry import Exported, Imported
from genforge.families.transformer import END_OF_TEXT, Transformer
from genforge.io import save_tensors
from genforge.nets.transformer import GPT, swiglu_hidden

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
NORM_EPS = 1e-5  # genforge's LayerNorm and RMSNorm epsilon
# transformers' names of each GELU genforge's MLP has: the erf GELU (mlp "gelu") and its tanh approximation ("gelu_tanh",
# GPT-2's own activation_function "gelu_new")
GELUS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
HF_GELU = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# tensors a transformers folder may hold that carry no weights: old GPT-2 causal-mask buffers, old Llama RoPE tables
NOT_WEIGHTS = re.compile(r"\.attn\.(masked_)?bias$|\.rotary_emb\.inv_freq$")


@dataclass(frozen=True)
class Rule:
    """One genforge tensor and the HF tensors it is made of: ``parts`` stacked along dim 0, each the transpose of
    its genforge rows when ``transpose`` (GPT-2's Conv1D)."""

    genforge: str
    parts: tuple[str, ...]
    transpose: bool = False

    @property
    def is_bias(self) -> bool:
        return self.genforge.endswith(".bias")


@dataclass(frozen=True)
class Layout:
    """A transformers architecture that is exactly one of genforge's: its names, and where each tensor goes."""

    name: str  # for messages: "GPT-2"
    model_type: str  # config.json's model_type
    architecture: str  # the transformers class
    archs: tuple[tuple[str, str, str], ...]  # genforge's (pos, norm, mlp) it holds exactly
    prefix: str  # the base model's key prefix inside the causal LM's state dict
    rules: Callable[[int], list[Rule]]  # n_layer -> every tensor's rule


def _gpt2_rules(n_layer: int) -> list[Rule]:
    rules = [Rule("wte.weight", ("transformer.wte.weight",)), Rule("wpe.weight", ("transformer.wpe.weight",))]
    for i in range(n_layer):
        mine, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for part, hf_part, conv in (("ln_1", "ln_1", False), ("attn.qkv", "attn.c_attn", True),
                                    ("attn.proj", "attn.c_proj", True), ("ln_2", "ln_2", False),
                                    ("mlp.fc", "mlp.c_fc", True), ("mlp.proj", "mlp.c_proj", True)):
            rules += [Rule(f"{mine}{part}.weight", (f"{theirs}{hf_part}.weight",), conv),
                      Rule(f"{mine}{part}.bias", (f"{theirs}{hf_part}.bias",))]
    return rules + [Rule("ln_f.weight", ("transformer.ln_f.weight",)), Rule("ln_f.bias", ("transformer.ln_f.bias",))]


def _llama_rules(n_layer: int) -> list[Rule]:
    rules = [Rule("wte.weight", ("model.embed_tokens.weight",)), Rule("ln_f.weight", ("model.norm.weight",))]
    for i in range(n_layer):
        mine, theirs = f"blocks.{i}.", f"model.layers.{i}."
        rules += [Rule(f"{mine}ln_1.weight", (f"{theirs}input_layernorm.weight",)),
                  Rule(f"{mine}ln_2.weight", (f"{theirs}post_attention_layernorm.weight",))]
        for part, hf_parts in (("attn.qkv", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                               ("attn.proj", ("self_attn.o_proj",)),
                               ("mlp.fc", ("mlp.gate_proj", "mlp.up_proj")),  # fc: gate rows, then value rows
                               ("mlp.proj", ("mlp.down_proj",))):
            for kind in ("weight", "bias"):
                rules.append(Rule(f"{mine}{part}.{kind}", tuple(f"{theirs}{p}.{kind}" for p in hf_parts)))
    return rules


GPT2 = Layout("GPT-2", "gpt2", "GPT2LMHeadModel", (("learned", "layernorm", "gelu"), ("learned", "layernorm", "gelu_tanh")),
              "transformer.", _gpt2_rules)
LLAMA = Layout("Llama", "llama", "LlamaForCausalLM", (("rope", "rmsnorm", "swiglu"),), "model.", _llama_rules)
LAYOUTS = {layout.model_type: layout for layout in (GPT2, LLAMA)}


def _arch_text(arch: tuple[str, str, str]) -> str:
    return "pos={}, norm={}, mlp={}".format(*arch)


def layout_of(config: Any) -> Layout:
    """The transformers layout of a genforge transformer config, or a one-line ExportError naming both."""
    arch = (config.pos, config.norm, config.mlp)
    for layout in LAYOUTS.values():
        if arch in layout.archs:
            return layout
    raise ExportError(f"this run's transformer is {_arch_text(arch)}, which no transformers architecture matches "
                      f"exactly: GPT-2 is {_arch_text(GPT2.archs[0])} (or mlp=gelu_tanh) and Llama is "
                      f"{_arch_text(LLAMA.archs[0])}; export it with --format onnx, which takes any transformer")


# ---- export ----------------------------------------------------------------------------------------------
def export(model: Any, out: Path) -> Exported:
    """Write ``model`` (a loaded transformer run) as a transformers folder in ``out``: model.safetensors,
    config.json, generation_config.json and, for text, the tokenizer files."""
    family = model.family
    if not isinstance(family, Transformer):
        raise ExportError(f"the transformers export takes genforge's GPT transformer, not {type(family).__name__}")
    layout = layout_of(family.config)
    transformers = require("transformers", "export to transformers")
    net, tokenizer = family.net, model.tokenizer
    eot = getattr(tokenizer, "eot_id", END_OF_TEXT)
    save_tensors(to_hf(layout, net.state_dict(), net.n_layer), out / WEIGHTS, metadata={"format": "pt"})
    HF_CONFIGS[layout.model_type](transformers, family.config, net, eot).save_pretrained(str(out))
    transformers.GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot).save_pretrained(str(out))
    files = [CONFIG, GENERATION_CONFIG, WEIGHTS]
    beyond = "cannot go on (GPT-2 has no position past it)" if layout is GPT2 else "keeps rotating further positions"
    notes = [f"every text starts after the end-of-text token (id {eot}), as genforge samples; it is also eos and pad",
             f"the context is {net.block_size} tokens: past it genforge slides its window over the last "
             f"{net.block_size} tokens, while transformers' generate {beyond}"]
    if is_text_tokenizer(tokenizer):
        files += write_tokenizer(tokenizer, out, net.block_size)
        notes += _tokenizer_notes(tokenizer)
    else:
        notes.append(_token_note(model))
    if family.config.dropout and layout is LLAMA:
        notes.append(f"genforge trained with dropout {family.config.dropout} on attention and residual outputs; "
                     "transformers' Llama drops attention weights only (attention_dropout)")
    return Exported(format="hf", architecture=layout.architecture, files=files,
                    load=_load_snippet(is_text_tokenizer(tokenizer), net.block_size), notes=notes,
                    library="transformers", pipeline_tag="text-generation")


def to_hf(layout: Layout, state: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """genforge's GPT state dict (the net's own names) as the transformers model's."""
    rules = layout.rules(n_layer)
    if layout is GPT2:  # HF's GPT-2 always has biases: zeros stand for none (an nn.Linear's out rows, a norm's width)
        state = {**{r.genforge: torch.zeros(state[r.genforge[:-4] + "weight"].shape[0]) for r in rules if r.is_bias},
                 **state}
    out = {}
    for rule in rules:
        if rule.genforge not in state:  # a Llama without biases
            continue
        for name, part in zip(rule.parts, state[rule.genforge].chunk(len(rule.parts))):
            # a copy of its own: safetensors refuses tensors that share memory, as chunks and views do
            part = part.T if rule.transpose else part
            out[name] = part.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    return out


def _gpt2_config(transformers: Any, config: Any, net: GPT, eot: int) -> Any:
    return transformers.GPT2Config(
        vocab_size=net.vocab_size, n_positions=net.block_size, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, activation_function=HF_GELU[config.mlp], layer_norm_epsilon=NORM_EPS,
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, tie_word_embeddings=True,
        architectures=[GPT2.architecture])


def _llama_config(transformers: Any, config: Any, net: GPT, eot: int) -> Any:
    return transformers.LlamaConfig(
        vocab_size=net.vocab_size, max_position_embeddings=net.block_size, hidden_size=config.n_embd,
        intermediate_size=swiglu_hidden(config.n_embd), num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head, num_key_value_heads=config.n_head, hidden_act="silu",
        rms_norm_eps=NORM_EPS, rope_theta=float(config.rope_base), attention_bias=config.bias, mlp_bias=config.bias,
        attention_dropout=config.dropout, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        tie_word_embeddings=True, architectures=[LLAMA.architecture])


HF_CONFIGS = {GPT2.model_type: _gpt2_config, LLAMA.model_type: _llama_config}


def _tokenizer_notes(tokenizer: Any) -> list[str]:
    from genforge.data.tokenizers import CharTokenizer

    if not isinstance(tokenizer, CharTokenizer):
        return []
    notes = ["the tokenizer has one token per character of the training text; in transformers a character outside "
             "it encodes as <|endoftext|> (genforge refuses it)"]
    if any(0xD800 <= ord(c) < 0xE000 for c in tokenizer.chars):
        notes.append("bytes of the training files that were not UTF-8 are tokens named <|U+DCxx|> in transformers, "
                     "which no text encodes to")
    return notes


def _token_note(model: Any) -> str:
    modality = model.modality.name
    return (f"the model's tokens are genforge's {modality} tokens ({type(model.tokenizer).__name__}), not text, so no "
            "tokenizer files are written; to turn generated ids into files use genforge's codec with the run this was "
            "exported from: genforge.load(RUN).codec.save(ids, OUT_FOLDER, {}), ids an (n, T) tensor that starts "
            "with the end-of-text token")


def _load_snippet(text: bool, block_size: int) -> str:
    lines = ["import torch",
             "from transformers import AutoModelForCausalLM" + (", AutoTokenizer" if text else ""),
             "",
             'model = AutoModelForCausalLM.from_pretrained("{path}")']
    if text:
        lines.append('tokenizer = AutoTokenizer.from_pretrained("{path}")')
    lines += ["start = torch.tensor([[model.generation_config.eos_token_id]])  # genforge starts after end-of-text",
              f"out = model.generate(start, attention_mask=torch.ones_like(start), do_sample=True, "
              f"max_new_tokens={block_size - 1})"]
    lines.append("print(tokenizer.decode(out[0], skip_special_tokens=True))" if text
                 else "print(out[0].tolist())  # genforge's token ids: see the notes to make files of them")
    return "\n".join(lines) + "\n"


# ---- import ----------------------------------------------------------------------------------------------
def detect(folder: Path) -> bool:
    """Whether ``folder`` is a transformers GPT-2 or Llama folder (config.json says so); ``read`` then says
    whether genforge can hold it exactly."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") in LAYOUTS


def read(folder: Path) -> Imported:
    """The transformers model in ``folder`` as genforge's transformer: its model config, the text spec, the
    weights under the family's names and the tokenizer; a one-line ExportError for what genforge cannot hold."""
    folder = Path(folder)
    config = _read_config(folder)
    layout = LAYOUTS[config["model_type"]]
    model, block_size = MODEL_READERS[layout.model_type](config, Settings(config, folder / CONFIG))
    tensors = _read_weights(folder)
    if not any(name.startswith(layout.prefix) for name in tensors):  # saved from the base model, not the LM
        tensors = {layout.prefix + name: tensor for name, tensor in tensors.items()}
    state = from_hf(layout, tensors, model["n_layer"], layout is GPT2 or model["bias"], folder)
    if layout is GPT2:  # HF's GPT-2 always has biases; all zeros are a model without them
        biases = [name for name in state if name.endswith(".bias")]
        model["bias"] = any(bool(state[name].any()) for name in biases)
        if not model["bias"]:
            state = {name: tensor for name, tensor in state.items() if name not in biases}
    vocab_size = state["net.wte.weight"].shape[0]
    if config.get("vocab_size", vocab_size) != vocab_size:
        raise ExportError(f"{folder / CONFIG} says vocab_size {config['vocab_size']}, but the token embedding has "
                          f"{vocab_size} rows; expected them to agree")
    tokenizer = read_tokenizer(folder)
    if tokenizer.vocab_size > vocab_size:
        raise ExportError(f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens, more than the {vocab_size} rows "
                          "of the token embedding; expected a tokenizer made for this model")
    model["end_of_text"] = tokenizer.eot_id  # samples start from it and end at it (GPT-2's is 50256)
    _check_shapes(state, model, vocab_size, block_size, folder)
    n_params = sum(t.numel() for t in state.values())
    return Imported(family="transformer", model=model, spec=DataSpec("text", (block_size,), vocab_size=vocab_size),
                    tensors=state, tokenizer=tokenizer, data={"block_size": block_size},
                    description=f"transformers {layout.architecture} ({n_params / 1e6:.2f}M parameters)")


def from_hf(layout: Layout, tensors: dict[str, torch.Tensor], n_layer: int, biased: bool,
            folder: Path) -> dict[str, torch.Tensor]:
    """A transformers state dict as the genforge family's (``net.`` names, float32); one line for a tensor missing,
    an output head that is not the embedding, or a tensor genforge has no place for."""
    left = dict(tensors)
    state = {}
    for rule in layout.rules(n_layer):
        if rule.is_bias and not biased:
            continue
        missing = [name for name in rule.parts if name not in left]
        if missing:
            raise ExportError(f"{folder / WEIGHTS} has no tensor {missing[0]}, which a {layout.name} model with this "
                              f"{CONFIG} has")
        parts = [left.pop(name) for name in rule.parts]
        state[f"net.{rule.genforge}"] = torch.cat([p.T if rule.transpose else p for p in parts]).float().contiguous()
    head = left.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head.float(), state["net.wte.weight"]):
        raise ExportError(f"{folder}: lm_head.weight is not the token embedding; an untied output head has no genforge "
                          "equivalent (its head is the embedding)")
    unplaced = sorted(name for name in left if not NOT_WEIGHTS.search(name))
    if unplaced:
        raise ExportError(f"{folder / WEIGHTS} holds tensors genforge's {layout.name} layout has no place for: "
                          f"{', '.join(unplaced[:3])}{', ...' if len(unplaced) > 3 else ''}")
    return state


class Settings:
    """config.json's values, each read once with a one-line refusal when genforge has no equivalent."""

    def __init__(self, config: dict, path: Path):
        self.config, self.path = config, path

    def positive(self, key: str) -> int:
        value = self.config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExportError(f"{self.path}: {key} is {value!r}; expected a positive integer")
        return value

    def require(self, key: str, default: Any, allowed: Callable[[Any], bool], why: str) -> Any:
        """The value of ``key`` (``default`` when absent, as transformers reads it) when ``allowed``."""
        value = self.config.get(key, default)
        if not allowed(value):
            raise ExportError(f"{self.path}: {key}={value!r} has no genforge equivalent ({why})")
        return value


def _gpt2_model(config: dict, settings: Settings) -> tuple[dict, int]:
    n_embd, n_head = settings.positive("n_embd"), settings.positive("n_head")
    activation = settings.require("activation_function", "gelu_new", lambda v: v in GELUS,
                                  "genforge's GPT-2 layout has the erf GELU and its tanh approximation")
    settings.require("layer_norm_epsilon", NORM_EPS, lambda v: v == NORM_EPS, f"genforge's LayerNorm eps is {NORM_EPS}")
    settings.require("n_inner", None, lambda v: v in (None, 4 * n_embd),
                     f"genforge's MLP is 4 x n_embd = {4 * n_embd} wide")
    settings.require("scale_attn_weights", True, lambda v: v is True, "genforge scales attention by 1/sqrt(head size)")
    settings.require("scale_attn_by_inverse_layer_idx", False, lambda v: not v, "genforge scales no layer's attention")
    settings.require("reorder_and_upcast_attn", False, lambda v: not v, "genforge has no reordered, upcast attention")
    settings.require("add_cross_attention", False, lambda v: not v, "genforge's GPT has no cross-attention")
    settings.require("tie_word_embeddings", True, lambda v: v is True, "genforge's output head is the token embedding")
    model = {"n_layer": settings.positive("n_layer"), "n_head": n_head, "n_embd": n_embd, "bias": True,
             "pos": "learned", "norm": "layernorm", "mlp": GELUS[activation], "rope_base": 10000.0, "dropout": 0.0}
    return model, settings.positive("n_positions")


def _llama_model(config: dict, settings: Settings) -> tuple[dict, int]:
    n_embd, n_head = settings.positive("hidden_size"), settings.positive("num_attention_heads")
    hidden = swiglu_hidden(n_embd)
    settings.require("num_key_value_heads", n_head, lambda v: v in (None, n_head),
                     "grouped-query attention: genforge has as many key/value heads as query heads")
    settings.require("tie_word_embeddings", False, lambda v: v is True, "genforge's output head is the token embedding")
    settings.require("hidden_act", "silu", lambda v: v == "silu", "genforge's SwiGLU gates with SiLU")
    settings.require("intermediate_size", None, lambda v: v == hidden,
                     f"genforge's SwiGLU is 64 * ceil(8/3 * hidden_size / 64) = {hidden} wide")
    settings.require("head_dim", None, lambda v: v in (None, n_embd // n_head),
                     "genforge's head size is hidden_size / heads")
    settings.require("rms_norm_eps", 1e-6, lambda v: v == NORM_EPS, f"genforge's RMSNorm eps is {NORM_EPS}")
    settings.require("rope_scaling", None, lambda v: v is None or _rope_type(v) == "default",
                     "genforge's RoPE is unscaled")
    parameters = settings.require("rope_parameters", None, lambda v: v is None or _rope_type(v) == "default",
                                  "genforge's RoPE is unscaled") or {}
    bias = settings.require("attention_bias", False, lambda v: isinstance(v, bool), "expected true or false")
    settings.require("mlp_bias", False, lambda v: v is bias,
                     f"genforge's one bias setting covers attention and MLP, and attention_bias is {bias}")
    model = {"n_layer": settings.positive("num_hidden_layers"), "n_head": n_head, "n_embd": n_embd, "bias": bias,
             "pos": "rope", "norm": "rmsnorm", "mlp": "swiglu",
             "rope_base": float(parameters.get("rope_theta", config.get("rope_theta", 10000.0))), "dropout": 0.0}
    return model, settings.positive("max_position_embeddings")


def _rope_type(rope: Any) -> Any:
    return rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else rope


MODEL_READERS = {GPT2.model_type: _gpt2_model, LLAMA.model_type: _llama_model}


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ExportError(f"{path} is not a readable JSON file ({e}); expected a transformers config.json") from None
    if not isinstance(config, dict) or config.get("model_type") not in LAYOUTS:
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ExportError(f"{path} has model_type {found!r}; genforge imports {' and '.join(map(repr, LAYOUTS))}")
    return config


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors (or of the shards its index names); never a pickle."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    elif (folder / WEIGHTS_INDEX).is_file():
        try:
            shards = json.loads((folder / WEIGHTS_INDEX).read_text(encoding="utf-8"))["weight_map"].values()
            files = [folder / name for name in sorted(set(shards))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ExportError(f"{folder / WEIGHTS_INDEX} is not a readable safetensors index ({e})") from None
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ExportError(f"{folder} holds its weights as {pickles[0]}, a pickle, which genforge never loads "
                              f"(loading one can run any code); convert it to safetensors ({WEIGHTS}) first")
        raise ExportError(f"{folder} has no {WEIGHTS}; expected the model's weights in safetensors form")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise ExportError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return tensors


def _check_shapes(state: dict[str, torch.Tensor], model: dict, vocab_size: int, block_size: int, folder: Path) -> None:
    """One line naming the first tensor whose shape is not what config.json implies (built on the meta device:
    shapes without memory)."""
    arch = {key: model[key] for key in ("n_layer", "n_head", "n_embd", "bias", "pos", "norm", "mlp", "rope_base")}
    if arch["n_embd"] % arch["n_head"] or (arch["pos"] == "rope" and (arch["n_embd"] // arch["n_head"]) % 2):
        raise ExportError(f"{folder / CONFIG}: a hidden size of {arch['n_embd']} in {arch['n_head']} heads has no "
                          "genforge equivalent (expected a whole head size, even for RoPE)")
    with torch.device("meta"):
        expected = GPT(vocab_size, block_size, **arch).state_dict()
    for name, tensor in expected.items():
        shape = tuple(state[f"net.{name}"].shape)
        if shape != tuple(tensor.shape):
            raise ExportError(f"{folder / WEIGHTS}: the tensor for {name} is {shape}, but {CONFIG} makes it "
                              f"{tuple(tensor.shape)}")
