"""ONNX export: the networks a family samples with (``Family.sampling_nets``), one ``<name>.onnx`` each, float32
with the weights inside and a dynamic batch axis, and ``onnx.json``: each file's inputs, outputs, dtypes, dynamic
axes and summary, the facts its sampler needs (noise levels, vocabulary, latent size...), the data's shape, value
range and classes, and the run's model settings (its sampler defaults among them).

The exporter is PyTorch's TorchScript one (``dynamo=False`` with ``dynamic_axes``). On these nets it takes well
under a second per net where the torch.export-based one took 10-20 s (a two-layer GPT on 2 CPU cores: 0.8 s
against 12 s), with the same numbers in ONNX Runtime. Its two gaps here, RMSNorm and a BatchNorm without an
affine part after a dynamic-batch reshape, get symbolics of their own for the export's duration (``SYMBOLICS``).
Its deprecation notices and the tracer's warnings are filtered: the nets are written so that nothing they trace
depends on a Python value of a tensor (``families/sampling_nets.py``), and the tests run every file at batch sizes
other than the example's.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from genforge.errors import ExportError
from genforge.export.peers import require
from genforge.export.registry import Exported
from genforge.families.sampling_nets import SamplingNet

OPSET = 17  # LayerNormalization's first opset; every ONNX Runtime of the last years runs it
# what each modality's samples are, as the Hugging Face task (absent: none fits)
PIPELINE_TAGS = {"image": "unconditional-image-generation", "text": "text-generation"}
# the sample count the model card's snippet runs
SNIPPET_BATCH = 4


def export(model: Any, out: Path) -> Exported:
    """Write the ONNX files of ``model``'s sampling networks and ``onnx.json`` into the empty folder ``out``.

    ``model`` is a loaded run (``genforge.load``); a family that does not declare "onnx" is a one-line ExportError.
    """
    family = model.family
    if "onnx" not in family.exports:
        formats = ", ".join(family.exports) or "none"
        raise ExportError(f"a {model.run.config.family} run on {model.spec.describe_kind()} has no ONNX export "
                          f"(its family exports: {formats})")
    out = Path(out)
    nets = family.sampling_nets()
    described = write_nets(nets, out)
    files = [f"{net.name}.onnx" for net in nets]
    info = {"format": "onnx", "opset": OPSET, "family": model.run.config.family, "data": data_facts(model),
            "model": plain(model.run.config.model), "nets": described}
    (out / "onnx.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    files.append("onnx.json")
    notes = [f"Each .onnx file holds one network (opset {OPSET}, float32, weights inside); every input and output "
             "takes any batch size. The sampling loop around them (noise, solver steps, token draws) is the caller's: "
             "onnx.json describes each input and output and gives the facts genforge's own sampler uses."]
    tokenizer = Path(model.run.tokenizer_path)
    if tokenizer.is_file():
        shutil.copyfile(tokenizer, out / "tokenizer.json")
        files.append("tokenizer.json")
        notes.append("tokenizer.json is the run's own (a genforge tokenizer, or a table's transform): genforge reads "
                     "it to turn ids or encoded rows back into text or table rows.")
    return Exported(format="onnx", architecture="ONNX " + " + ".join(net.name for net in nets), files=files,
                    load=load_snippet(nets[0]), notes=notes, library="onnx",
                    pipeline_tag=PIPELINE_TAGS.get(model.spec.modality))


def write_nets(nets: list[SamplingNet], out: Path) -> list[dict[str, Any]]:
    """Export each net to ``out/<name>.onnx``, check it, and return its description for onnx.json."""
    onnx = require("onnx", "ONNX export")
    described = []
    for net in nets:
        path = Path(out) / f"{net.name}.onnx"
        with evaluating(net.module), torch.no_grad():
            write_net(net, path)
            described.append(describe(net))
        onnx.checker.check_model(str(path))
    return described


def write_net(net: SamplingNet, path: Path) -> None:
    """One net to one ONNX file, its weights inside."""
    with quiet_export():
        torch.onnx.export(net.module, tuple(net.inputs.values()), str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(net.inputs), output_names=net.outputs, dynamic_axes=net.dynamic_axes,
                          do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL)


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the block (BatchNorm's running statistics stay as they are), then every
    submodule in its own mode again: the exporter restores the wrapper's one flag to them all, which would leave
    a family in training mode after an export."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """The exporter's notices filtered and ``SYMBOLICS`` registered, for one export. The notices are the
    exporter's own deprecations (of itself and of its internals, which it calls on every export: nothing a user
    can act on) and the tracer's warnings about Python values (sampling nets keep nothing traced in Python)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        for name, symbolic in SYMBOLICS.items():
            torch.onnx.register_custom_op_symbolic(name, symbolic, OPSET)
        try:
            yield
        finally:
            for name in SYMBOLICS:
                torch.onnx.unregister_custom_op_symbolic(name, OPSET)


def rms_norm_symbolic(g: Any, x: Any, normalized_shape: Any, weight: Any, eps: Any) -> Any:
    """``aten::rms_norm`` (no ONNX symbolic before opset 23) in opset-17 operators:
    x / sqrt(mean(x^2 over the normalised dims) + eps) * weight."""
    from torch.onnx import symbolic_helper as helper

    dims = helper._get_const(normalized_shape, "is", "normalized_shape")
    epsilon = torch.finfo(torch.float32).eps if helper._is_none(eps) else helper._get_const(eps, "f", "eps")
    mean_square = g.op("ReduceMean", g.op("Mul", x, x), axes_i=list(range(-len(dims), 0)), keepdims_i=1)
    rms = g.op("Sqrt", g.op("Add", mean_square, g.op("Constant", value_t=torch.tensor(epsilon, dtype=torch.float32))))
    normed = g.op("Div", x, rms)
    return normed if helper._is_none(weight) else g.op("Mul", normed, weight)


def batch_norm_symbolic(g: Any, x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, training: Any,
                        momentum: Any, eps: Any, cudnn_enabled: Any) -> Any:
    """``aten::batch_norm`` in eval mode (exports always are: ``training`` and ``momentum`` play no part), its
    missing affine part (a class-conditional BatchNorm takes its gain and bias from embeddings) sized by the running
    statistics: the built-in symbolic sizes it by the input's channels, which a dynamic-batch reshape leaves unknown
    (the ResNet generator's first feature map)."""
    from torch.onnx import symbolic_helper as helper

    channels = helper._get_tensor_sizes(running_mean)[0]
    if helper._is_none(weight):
        weight = g.op("Constant", value_t=torch.ones(channels))
    if helper._is_none(bias):
        bias = g.op("Constant", value_t=torch.zeros(channels))
    epsilon = helper._get_const(eps, "f", "eps")
    return g.op("BatchNormalization", x, weight, bias, running_mean, running_var, epsilon_f=epsilon)


# ops whose built-in symbolics fail on these nets, replaced for the export's duration
SYMBOLICS = {"aten::rms_norm": rms_norm_symbolic, "aten::batch_norm": batch_norm_symbolic}


# ---- onnx.json ---------------------------------------------------------------------------------------------------
def describe(net: SamplingNet) -> dict[str, Any]:
    """A net's entry in onnx.json: its file, inputs and outputs (dtype, shape with named dynamic axes), summary
    and facts. The outputs' dtypes and fixed sizes are read from one run of the module (in eval mode)."""
    outputs = net.module(*net.inputs.values())
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return {
        "file": f"{net.name}.onnx",
        "summary": net.summary,
        "inputs": [tensor_entry(name, t, net.dynamic_axes) for name, t in net.inputs.items()],
        "outputs": [tensor_entry(name, t, net.dynamic_axes) for name, t in zip(net.outputs, outputs)],
        "dynamic_axes": {name: {str(axis): label for axis, label in axes.items()}
                         for name, axes in net.dynamic_axes.items()},
        "facts": plain(net.facts),
    }


def tensor_entry(name: str, tensor: torch.Tensor, dynamic_axes: dict[str, dict[int, str]]) -> dict[str, Any]:
    """{"name", "dtype", "shape"}: the shape's dynamic axes by their names, the fixed ones by their sizes."""
    axes = dynamic_axes.get(name, {})
    shape = [axes.get(i, size) for i, size in enumerate(tensor.shape)]
    return {"name": name, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": shape}


def data_facts(model: Any) -> dict[str, Any]:
    """What the samples are: modality, shape, value range of image and waveform data, classes, vocabulary."""
    spec = model.spec
    facts: dict[str, Any] = {"modality": spec.modality, "kind": spec.kind, "shape": list(spec.shape)}
    if spec.kind in ("image", "waveform"):
        facts["value_range"] = [-1.0, 1.0]
    if spec.num_classes:
        facts["num_classes"] = spec.num_classes
        facts["class_names"] = list(spec.class_names)
    if spec.vocab_size is not None:
        facts["vocab_size"] = spec.vocab_size
    return facts


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: dataclasses and tuples opened up, tensors as lists."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if torch.is_tensor(value):
        return value.tolist()
    return value


# ---- the model card's snippet ------------------------------------------------------------------------------------
def load_snippet(net: SamplingNet) -> str:
    """Python that loads ``net``'s file with ONNX Runtime and runs it on SNIPPET_BATCH items (``{path}``: the
    export folder): integer inputs zeros (ids, labels and codes that always exist), per-item levels (1-D floats such
    as a noise level) ones, other floats standard normal."""
    feeds = [f'    "{name}": {feed_expression(t)},' for name, t in net.inputs.items()]
    results = ", ".join(net.outputs) + ("," if len(net.outputs) == 1 else "")
    return "\n".join([
        "import numpy as np",
        "import onnxruntime as ort",
        "",
        f'session = ort.InferenceSession("{{path}}/{net.name}.onnx", providers=["CPUExecutionProvider"])',
        "rng = np.random.default_rng(0)",
        "feeds = {",
        *feeds,
        "}",
        f"{results} = session.run(None, feeds)",
        f"print({', '.join(f'{name}.shape' for name in net.outputs)})",
    ])


def feed_expression(example: torch.Tensor) -> str:
    shape = (SNIPPET_BATCH, *example.shape[1:])
    if not example.is_floating_point():
        return f"np.zeros({shape}, dtype=np.int64)"
    if example.dim() == 1:
        return f"np.ones({SNIPPET_BATCH}, dtype=np.float32)"
    return f"rng.standard_normal({shape}).astype(np.float32)"
