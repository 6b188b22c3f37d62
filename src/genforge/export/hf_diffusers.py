"""diffusers: an image diffusion run as a DDPM/DDIM pipeline folder, and a diffusers UNet2DModel as a run.

``export`` writes what ``diffusers.DDPMPipeline.from_pretrained(out)`` and ``DDIMPipeline.from_pretrained(out)`` load:
``model_index.json``, ``unet/`` (a UNet2DModel) and ``scheduler/`` (the run's exact noise schedule).
``detect``/``read`` turn a diffusers pipeline folder, or a bare UNet2DModel folder, into a diffusion run.

genforge's UNet (nets/unet.py) is diffusers' UNet2DModel op for op (checked in diffusers' source, 0.42):
  time embedding   cos-first sinusoidal features of width base_channels, frequencies 10000^(-i/half):
                   Timesteps(flip_sin_to_cos=True, freq_shift=0), then Linear-SiLU-Linear to 4 * base_channels
  ResBlock         ResnetBlock2D(time_embedding_norm="default", output_scale_factor=1): GroupNorm, SiLU, conv,
                   + Linear(SiLU(emb)), GroupNorm, SiLU, dropout, conv, + a 1x1 shortcut where the width changes
  SelfAttention    Attention(residual_connection, group_norm, bias): genforge's qkv 1x1 conv is to_q/to_k/to_v
                   stacked, head-major; proj is to_out.0; both scale scores by 1/sqrt(head width)
  Down/Upsample    Downsample2D (stride-2 conv, padding 1), Upsample2D (nearest x2, conv)
  levels           DownBlock2D / AttnDownBlock2D and UpBlock2D / AttnUpBlock2D with the same skip order;
                   the middle is UNetMidBlock2D (ResBlock, attention, ResBlock)
  labels           genforge's label embedding (num_classes + 1 rows, the last the "null" class) is UNet2DModel's
                   class_embedding (class_embed_type None), added to the time embedding as genforge adds it
  GroupNorm        eps 1e-5 in both; UNet2DModel takes one group count for every norm, attention's and the
                   middle's included
What UNet2DModel cannot hold (several group counts, EDM's preconditioning, a first level wider than the stem,
attention head widths that differ) is refused in one line with what would work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from genforge.data.spec import DataSpec
from genforge.errors import ExportError, GenforgeError
from genforge.export.peers import require
from genforge.export.registry import Exported, Imported

if TYPE_CHECKING:
    from genforge.models import Model

# genforge's prediction -> diffusers' prediction_type (EDM's preconditioned output has none)
PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
# genforge's sigma spacing -> diffusers' timestep_spacing: "uniform" is the DDIM paper's, diffusers' "leading"
SPACINGS = {"trailing": "trailing", "uniform": "leading"}
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
PIPELINES = {"DDPMScheduler": "DDPMPipeline", "DDIMScheduler": "DDIMPipeline"}
CLASS_NAMES = "class_names.json"  # beside unet/config.json: label id -> name (diffusers has no place for them)
WEIGHTS = "diffusion_pytorch_model.safetensors"
GROUPNORM_EPS = 1e-5  # torch's default, which genforge's GroupNorms use
MAX_NAMED = 20  # class names listed in the notes; the file has them all


# ---- the shared layout: where each weight lives on both sides -----------------------------------------------
@dataclass(frozen=True)
class Layout:
    """The shape of the network both sides agree on: levels, blocks per level, attention per level (down and up
    alike; the middle always has attention) and whether there is a class embedding."""

    levels: int
    blocks: int
    attention: tuple[bool, ...]
    class_conditional: bool


class Pair(NamedTuple):
    """One genforge tensor and the diffusers tensor(s) it is: several are stacked along dim 0 (q, k, v)."""

    genforge: str
    diffusers: tuple[str, ...]
    optional: bool = False  # a shortcut conv, present only where a block changes width (on both sides alike)
    pointwise: bool = False  # a 1x1 conv in genforge, a Linear in diffusers: (o, i, 1, 1) <-> (o, i)


RESNET_PARTS = (("norm1", "norm1"), ("conv1", "conv1"), ("emb_proj", "time_emb_proj"), ("norm2", "norm2"),
                ("conv2", "conv2"))


def _modules(layout: Layout) -> Iterator[tuple[str, str, str]]:
    """(genforge module, diffusers module, kind) for every module with weights, kind "resnet", "attention" or
    "plain". genforge's ``down`` and ``up`` lists hold one EmbedSequential per block and per resampler."""
    yield "time_embed.mlp.0", "time_embedding.linear_1", "plain"
    yield "time_embed.mlp.2", "time_embedding.linear_2", "plain"
    yield "stem", "conv_in", "plain"
    index = 0
    for level in range(layout.levels):
        for j in range(layout.blocks):
            yield f"down.{index}.0", f"down_blocks.{level}.resnets.{j}", "resnet"
            if layout.attention[level]:
                yield f"down.{index}.1", f"down_blocks.{level}.attentions.{j}", "attention"
            index += 1
        if level != layout.levels - 1:
            yield f"down.{index}.0.conv", f"down_blocks.{level}.downsamplers.0.conv", "plain"
            index += 1
    yield "middle.0", "mid_block.resnets.0", "resnet"
    yield "middle.1", "mid_block.attentions.0", "attention"
    yield "middle.2", "mid_block.resnets.1", "resnet"
    index = 0
    for block, level in enumerate(reversed(range(layout.levels))):
        attention = layout.attention[level]
        for j in range(layout.blocks + 1):
            yield f"up.{index}.0", f"up_blocks.{block}.resnets.{j}", "resnet"
            if attention:
                yield f"up.{index}.1", f"up_blocks.{block}.attentions.{j}", "attention"
            if level != 0 and j == layout.blocks:
                yield f"up.{index}.{1 + attention}.conv", f"up_blocks.{block}.upsamplers.0.conv", "plain"
            index += 1
    yield "out.0", "conv_norm_out", "plain"
    yield "out.2", "conv_out", "plain"


def tensor_pairs(layout: Layout) -> list[Pair]:
    """Every tensor of the Diffusion family's state dict with its UNet2DModel name(s)."""
    pairs: list[Pair] = []

    def add(genforge: str, diffusers: tuple[str, ...], optional: bool = False, pointwise: bool = False) -> None:
        for part in ("weight", "bias"):
            pairs.append(Pair(f"unet.{genforge}.{part}", tuple(f"{d}.{part}" for d in diffusers), optional, pointwise))

    for g, d, kind in _modules(layout):
        if kind == "resnet":
            for gp, dp in RESNET_PARTS:
                add(f"{g}.{gp}", (f"{d}.{dp}",))
            add(f"{g}.skip", (f"{d}.conv_shortcut",), optional=True)
        elif kind == "attention":
            add(f"{g}.norm", (f"{d}.group_norm",))
            add(f"{g}.qkv", (f"{d}.to_q", f"{d}.to_k", f"{d}.to_v"), pointwise=True)
            add(f"{g}.proj", (f"{d}.to_out.0",), pointwise=True)
        else:
            add(g, (d,))
    if layout.class_conditional:
        pairs.append(Pair("label_embedding.weight", ("class_embedding.weight",)))
    return pairs


def to_diffusers(state: dict[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """The Diffusion family's state dict under UNet2DModel's names."""
    pairs = tensor_pairs(layout)
    out: dict[str, torch.Tensor] = {}
    for pair in pairs:
        if pair.genforge not in state:
            if pair.optional:
                continue
            raise ExportError(f"the run's UNet has no '{pair.genforge}', which the diffusers layout needs")
        tensor = state[pair.genforge]
        if pair.pointwise and tensor.dim() == 4:
            tensor = tensor.flatten(1)
        for name, part in zip(pair.diffusers, tensor.chunk(len(pair.diffusers), dim=0)):
            out[name] = part.detach().clone().contiguous()
    _check_all_used(set(state), {p.genforge for p in pairs}, "the run's UNet has weights")
    return out


def to_genforge(tensors: dict[str, torch.Tensor], layout: Layout, where: Path) -> dict[str, torch.Tensor]:
    """UNet2DModel's tensors under the Diffusion family's names (float32, as genforge trains)."""
    tensors = {_current_attention_name(k): v for k, v in tensors.items()}
    pairs = tensor_pairs(layout)
    out: dict[str, torch.Tensor] = {}
    for pair in pairs:
        present = [name in tensors for name in pair.diffusers]
        if not all(present):
            if pair.optional and not any(present):
                continue
            missing = [n for n, p in zip(pair.diffusers, present) if not p]
            raise ExportError(f"{where} lacks '{missing[0]}', which a UNet2DModel of this config has; the weights "
                              f"do not match config.json")
        tensor = torch.cat([tensors[name] for name in pair.diffusers], dim=0).float()
        if pair.pointwise and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]
        out[pair.genforge] = tensor.contiguous()
    used = {d for p in pairs for d in p.diffusers}
    _check_all_used(set(tensors), used, f"{where} holds weights")
    return out


def _current_attention_name(name: str) -> str:
    # checkpoints saved before diffusers 0.14 name attention weights query/key/value/proj_attn; diffusers
    # renames them when it loads, and so does this
    for old, new in ((".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")):
        name = name.replace(old, new)
    return name


def _check_all_used(names: set[str], used: set[str], what: str) -> None:
    left = sorted(names - used)
    if left:
        raise ExportError(f"{what} that a UNet2DModel of this config has no place for: {', '.join(left[:3])}"
                          + (f" and {len(left) - 3} more" if len(left) > 3 else ""))


# ---- export ---------------------------------------------------------------------------------------------------
def export(model: Model, out: Path) -> Exported:
    """Write the diffusion run ``model`` (``genforge.load``) into the empty folder ``out`` as a diffusers pipeline."""
    diffusers = require("diffusers", "export to diffusers")
    family, spec = model.family, model.spec
    config = family.config
    groups, head_dim, layout = _exportable(family, spec)
    unet = diffusers.UNet2DModel(**unet_config(config, spec, layout, groups, head_dim))
    unet.load_state_dict(to_diffusers(family.state_dict(), layout), strict=True)
    scheduler_name = "DDPMScheduler" if config.sampler == "ddpm" else "DDIMScheduler"
    scheduler = getattr(diffusers, scheduler_name)(**scheduler_config(config, scheduler_name))
    pipeline = getattr(diffusers, PIPELINES[scheduler_name])(unet=unet.eval(), scheduler=scheduler)
    pipeline.save_pretrained(out, safe_serialization=True)
    if layout.class_conditional:
        (out / "unet" / CLASS_NAMES).write_text(json.dumps(_class_names(spec), indent=1) + "\n", encoding="utf-8")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return Exported(
        format="hf",
        architecture=f"UNet2DModel + {scheduler_name}",
        files=files,
        load=load_snippet(config, spec, scheduler_name, layout.class_conditional),
        notes=_notes(config, spec, scheduler_name, layout.class_conditional),
        library="diffusers",
        pipeline_tag=None if layout.class_conditional else "unconditional-image-generation",
    )


def _exportable(family: Any, spec: DataSpec) -> tuple[int, int | None, Layout]:
    """(group count, attention head width or None for one head per block, layout), or a one-line refusal."""
    from genforge.nets.unet import SelfAttention, UNet

    unet = getattr(family, "unet", None)
    if not isinstance(unet, UNet) or spec.kind != "image":
        raise ExportError(f"only image diffusion runs (genforge's UNet) export to diffusers; this run is on "
                          f"{spec.modality} data: export it with --format onnx")
    config = family.config
    if config.prediction not in PREDICTION_TYPES:
        raise ExportError(f"this run predicts EDM's preconditioned output (prediction {config.prediction}), which mixes "
                          f"the input back in with noise-level weights that no UNet2DModel or diffusers scheduler holds: "
                          f"train with --set model.prediction=v to export to diffusers, or export this run with "
                          f"--format onnx (any diffusion run's denoiser)")
    counts = sorted({m.num_groups for m in unet.modules() if isinstance(m, nn.GroupNorm)})
    if len(counts) > 1:
        raise ExportError(f"this run's GroupNorms use {_listed(counts)} groups (norm_groups "
                          f"{config.norm_groups}: each width picks its own) but diffusers' UNet2DModel takes one count "
                          f"for the whole net: train with --set model.norm_groups=-1 to export to diffusers, or export "
                          f"this run with --format onnx")
    if config.channel_mults[0] != 1:
        raise ExportError(f"this run's first level is {config.channel_mults[0]}x wider than its stem (channel_mults "
                          f"{list(config.channel_mults)}) but UNet2DModel's first level has the stem's width: train "
                          f"with channel_mults starting at 1 to export to diffusers, or export with --format onnx")
    attentions = [m for m in unet.modules() if isinstance(m, SelfAttention)]
    head_dim = _head_dim([(m.norm.num_channels, m.heads) for m in attentions])
    blocks = config.blocks_per_level
    # each level's first down block shows whether the level has attention (the UNet places it per level)
    attention = tuple(len(unet.down[level * (blocks + 1)]) > 1 for level in range(len(config.channel_mults)))
    layout = Layout(len(config.channel_mults), blocks, attention, family.num_classes is not None)
    return counts[0], head_dim, layout


def _listed(values: list[Any]) -> str:
    return ", ".join(map(str, values[:-1])) + f" and {values[-1]}" if len(values) > 1 else str(values[0])


def _head_dim(widths_heads: list[tuple[int, int]]) -> int | None:
    """UNet2DModel's attention_head_dim giving each attention block genforge's head count: None (one head per
    block, each as wide as its block) or one head width shared by every block."""
    if all(heads == 1 for _, heads in widths_heads):
        return None
    dims = {width // heads for width, heads in widths_heads}
    if len(dims) == 1:
        dim = dims.pop()
        if all(width // dim == heads for width, heads in widths_heads):
            return dim
    described = ", ".join(f"{h} x {w // h} at width {w}" for w, h in sorted(set(widths_heads)))
    raise ExportError(f"this run's attention heads differ in width ({described}) but UNet2DModel takes one head width "
                      f"for the whole net: export needs every attention width a multiple of 32 (heads of 32) or every "
                      f"attention block with one head (widths of 32 or not multiples of 32), or export with --format onnx")


def unet_config(config: Any, spec: DataSpec, layout: Layout, groups: int, head_dim: int | None) -> dict[str, Any]:
    """UNet2DModel's constructor arguments for the run's UNet."""
    c, h, w = spec.shape
    widths = [config.base_channels * m for m in config.channel_mults]
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in layout.attention]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(layout.attention)]
    return {
        "sample_size": h if h == w else [h, w], "in_channels": c, "out_channels": c, "center_input_sample": False,
        "time_embedding_type": "positional", "time_embedding_dim": None, "flip_sin_to_cos": True, "freq_shift": 0,
        "down_block_types": down, "mid_block_type": "UNetMidBlock2D", "up_block_types": up,
        "block_out_channels": widths, "layers_per_block": layout.blocks, "mid_block_scale_factor": 1,
        "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": float(config.dropout),
        "act_fn": "silu", "attention_head_dim": head_dim, "norm_num_groups": groups, "attn_norm_num_groups": None,
        "norm_eps": GROUPNORM_EPS, "resnet_time_scale_shift": "default", "add_attention": True,
        "class_embed_type": None, "num_class_embeds": spec.num_classes + 1 if layout.class_conditional else None,
    }


def run_betas(config: Any) -> torch.Tensor:
    """The run's betas (float64), derived from its alphas_cumprod: any schedule and timestep count, exactly."""
    from genforge.sampling.schedules import make_alphas_cumprod

    abar = make_alphas_cumprod(config.schedule, config.timesteps, config.beta_start, config.beta_end)
    return 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])


def scheduler_config(config: Any, scheduler_name: str) -> dict[str, Any]:
    """DDPMScheduler's or DDIMScheduler's arguments: the run's betas, prediction and spacing, and x0 clipped to
    [-1, 1] as genforge's denoiser clamps it."""
    betas = run_betas(config)
    values: dict[str, Any] = {
        "num_train_timesteps": config.timesteps, "trained_betas": betas.tolist(),
        # ignored beside trained_betas; the run's first and last betas, for a reader of the file
        "beta_start": float(betas[0]), "beta_end": float(betas[-1]), "beta_schedule": "linear",
        "prediction_type": PREDICTION_TYPES[config.prediction], "clip_sample": True, "clip_sample_range": 1.0,
        "thresholding": False, "timestep_spacing": SPACINGS.get(config.spacing, "trailing"), "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    if scheduler_name == "DDIMScheduler":
        values["set_alpha_to_one"] = True  # the last step lands on the clean estimate, as genforge's does
    else:
        values["variance_type"] = "fixed_small"  # the posterior's variance, genforge's ancestral step
    return values


def _class_names(spec: DataSpec) -> list[str]:
    names = list(spec.class_names)
    return names if len(names) == spec.num_classes else [str(i) for i in range(spec.num_classes or 0)]


def load_snippet(config: Any, spec: DataSpec, scheduler_name: str, class_conditional: bool) -> str:
    """Python that loads the export with diffusers and samples as the run's defaults do (``{path}``: the folder)."""
    steps, eta = config.sample_steps, float(config.eta)
    ddim = scheduler_name == "DDIMScheduler"
    if not class_conditional:
        pipeline = PIPELINES[scheduler_name]
        options = f"eta={eta}, use_clipped_model_output=True" if ddim else ""
        return "\n".join([
            "import torch", f"from diffusers import {pipeline}", "",
            f'pipe = {pipeline}.from_pretrained("{{path}}")',
            "generator = torch.Generator().manual_seed(0)",
            *(["# use_clipped_model_output: take the noise from the clipped image estimate, as genforge does"]
              if ddim else []),
            f"images = pipe(batch_size=16, generator=generator, num_inference_steps={steps}"
            + (f", {options}" if options else "") + ").images",
            'images[0].save("sample.png")',
        ])
    c, h, w = spec.shape
    n = spec.num_classes
    step = ("scheduler.step(out, t, x, eta=" + str(eta) + ", use_clipped_model_output=True, generator=generator)"
            if ddim else "scheduler.step(out, t, x, generator=generator)")
    first = _class_names(spec)[: min(4, n)]
    ids = ", ".join(str(i) for i in range(len(first)))
    return "\n".join([
        "import torch", f"from diffusers import {scheduler_name}, UNet2DModel", "",
        'unet = UNet2DModel.from_pretrained("{path}", subfolder="unet").eval()',
        f'scheduler = {scheduler_name}.from_pretrained("{{path}}", subfolder="scheduler")',
        f"labels = torch.tensor([{ids}])  # class ids ({', '.join(first)}...: unet/{CLASS_NAMES})",
        f"null = torch.full_like(labels, {n})  # class {n}: the unconditional model",
        f"guidance = {float(config.guidance)}  # 1 conditional, 0 unconditional, > 1 classifier-free guidance",
        "generator = torch.Generator().manual_seed(0)",
        f"x = torch.randn((len(labels), {c}, {h}, {w}), generator=generator)",
        f"scheduler.set_timesteps({steps})",
        "with torch.no_grad():",
        "    for t in scheduler.timesteps:",
        "        cond, uncond = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample.chunk(2)",
        "        out = uncond + guidance * (cond - uncond)",
        f"        x = {step}.prev_sample",
        "images = (x / 2 + 0.5).clamp(0, 1)  # (batch, channels, height, width) in [0, 1]",
    ])


def _notes(config: Any, spec: DataSpec, scheduler_name: str, class_conditional: bool) -> list[str]:
    notes = []
    if scheduler_name == "DDIMScheduler":
        notes.append("Pass use_clipped_model_output=True to DDIM (as above): genforge clamps each clean-image estimate "
                     "to [-1, 1] and takes the noise from the clamped estimate; diffusers' default keeps the network's.")
        if config.spacing == "trailing":
            notes.append(f"With DDIMScheduler use a step count that divides num_train_timesteps ({config.timesteps}): "
                         "it steps from t to t - T // steps, which is the next step of the trailing ladder genforge "
                         "walks only then (DDPMScheduler walks its ladder for any count).")
    if config.sampler not in ("ddim", "ddpm"):
        notes.append(f"The run samples with {config.sampler} by default; the export's DDIMScheduler is exact, and "
                     "diffusers' other schedulers load from its config (e.g. DPMSolverMultistepScheduler.from_config) "
                     "but are not checked against genforge's solvers.")
    if config.spacing not in SPACINGS:
        notes.append(f"The run spaces its sampling steps '{config.spacing}', which diffusers' DDPM and DDIM schedulers "
                     "do not offer; the export uses trailing spacing.")
    if class_conditional:
        names = _class_names(spec)
        notes.append(f"Class-conditional: DDPMPipeline and DDIMPipeline cannot pass class labels, so sample with the "
                     f"loop above (class_labels 0 to {spec.num_classes - 1}, and {spec.num_classes} for the "
                     f"unconditional model that classifier-free guidance mixes in)." + _named(names))
    return notes


def _named(names: list[str]) -> str:
    if names == [str(i) for i in range(len(names))]:  # the ids are the names: nothing to list
        return ""
    shown = ", ".join(f"{i} {name}" for i, name in enumerate(names[:MAX_NAMED]))
    return f" Classes: {shown}" + (f" ... ({len(names)} in unet/{CLASS_NAMES})" if len(names) > MAX_NAMED else "") + "."


# ---- import ---------------------------------------------------------------------------------------------------
# UNet2DModel's defaults (diffusers 0.42), for configs written before a key existed
UNET_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "layers_per_block": 2, "norm_num_groups": 32, "attention_head_dim": 8,
    "dropout": 0.0, "time_embedding_dim": None, "attn_norm_num_groups": None, "num_class_embeds": None,
    "block_out_channels": [224, 448, 672, 896],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
# options genforge's UNet has one fixed way of doing: (key, UNet2DModel's default, the values genforge matches,
# what genforge's UNet does)
FIXED = (
    ("center_input_sample", False, (False,), "takes its input as it is"),
    ("time_embedding_type", "positional", ("positional",), "embeds timesteps with sinusoidal features"),
    ("flip_sin_to_cos", True, (True,), "puts the cosine features first"),
    ("freq_shift", 0, (0,), "spaces the frequencies without a shift"),
    ("mid_block_type", "UNetMidBlock2D", ("UNetMidBlock2D",), "has a ResBlock-attention-ResBlock middle"),
    ("add_attention", True, (True,), "has attention in the middle"),
    ("mid_block_scale_factor", 1, (1,), "does not rescale residual sums"),
    ("downsample_padding", 1, (1,), "pads its stride-2 convolutions by 1"),
    ("downsample_type", "conv", ("conv",), "downsamples with a stride-2 convolution"),
    ("upsample_type", "conv", ("conv",), "upsamples with nearest x2 and a convolution"),
    ("act_fn", "silu", ("silu", "swish"), "uses SiLU"),
    ("norm_eps", GROUPNORM_EPS, (GROUPNORM_EPS,), "uses GroupNorm eps 1e-5"),
    ("resnet_time_scale_shift", "default", ("default",), "adds the timestep embedding (no scale-shift)"),
    ("class_embed_type", None, (None,), "looks class ids up in a table (class_embed_type null)"),
)
BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}
UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
# a UNet2DModel folder without a scheduler beside it: diffusers' own DDPMScheduler defaults
DEFAULT_SCHEDULER: dict[str, Any] = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000,
                                     "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                                     "prediction_type": "epsilon"}
BETA_RTOL = 1e-5  # trained_betas written in float32 by another tool still match genforge's float64 schedule


def detect(folder: Path) -> bool:
    """A diffusers pipeline folder (model_index.json) or a diffusers model folder (config.json with _class_name)."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return True
    config = _json_or_none(folder / "config.json")
    return isinstance(config, dict) and "_class_name" in config and "model_type" not in config


def read(folder: Path) -> Imported:
    """The UNet2DModel in ``folder`` (a pipeline folder or a bare model folder) as a diffusion run."""
    folder = Path(folder)
    unet_dir, scheduler, notes = _locate(folder)
    config = _read_json(unet_dir / "config.json")
    if config.get("_class_name") != "UNet2DModel":
        raise ExportError(f"{unet_dir} holds a diffusers {config.get('_class_name')}; genforge imports UNet2DModel "
                          f"(unconditional or class-conditional image diffusion) only")
    shape, layout, values = _from_unet_config(config, unet_dir)
    schedule, text, more = _from_scheduler(scheduler, unet_dir)
    values.update(schedule)
    notes += more
    tensors = to_genforge(_read_weights(unet_dir), layout, unet_dir)
    num_classes = int(config["num_class_embeds"]) - 1 if layout.class_conditional else None
    names = _json_or_none(unet_dir / CLASS_NAMES) if num_classes else None
    if not (isinstance(names, list) and len(names) == num_classes):
        names = [str(i) for i in range(num_classes or 0)]
    spec = DataSpec("image", shape, num_classes=num_classes, class_names=[str(n) for n in names])
    head_dim = config.get("attention_head_dim", UNET_DEFAULTS["attention_head_dim"])
    _check_against_family(values, spec, tensors, head_dim, unet_dir)
    c, h, w = shape
    if h != w:
        notes.append(f"{h}x{w} images: genforge samples them, but its image sources are square, so fine-tuning needs "
                     "data of this shape")
    size = sum(t.numel() for t in tensors.values())
    kind = f"class-conditional ({num_classes} classes)" if num_classes else "unconditional"
    description = (f"diffusers UNet2DModel ({size / 1e6:.2f}M parameters, {kind}, {c}x{h}x{w}) + {text}"
                   + "".join(f"; {n}" for n in notes))
    return Imported(family="diffusion", model=values, spec=spec, tensors=tensors,
                    data={"image_size": h if h == w else None, "channels": c}, description=description)


def _locate(folder: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """(the UNet's folder, the scheduler's config, notes) for a pipeline folder or a bare UNet2DModel folder."""
    index = _json_or_none(folder / "model_index.json")
    if isinstance(index, dict):
        unet = index.get("unet")
        if not isinstance(unet, list) or len(unet) != 2:
            raise ExportError(f"{folder}/model_index.json names no unet; genforge imports pipelines whose network is a "
                              f"UNet2DModel (DDPMPipeline, DDIMPipeline)")
        if unet[1] != "UNet2DModel":
            raise ExportError(f"{folder} is a {index.get('_class_name')} whose unet is a {unet[1]}; genforge imports "
                              f"UNet2DModel pipelines (DDPMPipeline, DDIMPipeline), not text- or latent-conditioned ones")
        scheduler = _json_or_none(folder / "scheduler" / "scheduler_config.json")
        if isinstance(scheduler, dict):
            scheduler.setdefault("_class_name", (index.get("scheduler") or [None, None])[1])
            return folder / "unet", scheduler, []
        return folder / "unet", dict(DEFAULT_SCHEDULER), ["no scheduler config: DDPM, linear, 1000 steps assumed"]
    for candidate in (folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json"):
        scheduler = _json_or_none(candidate)
        if isinstance(scheduler, dict):
            return folder, scheduler, []
    return folder, dict(DEFAULT_SCHEDULER), ["no scheduler beside the model: DDPM, linear, 1000 steps assumed"]


def _from_unet_config(config: dict[str, Any], where: Path) -> tuple[tuple[int, int, int], Layout, dict[str, Any]]:
    """(image shape, layout, DiffusionConfig's network values) from UNet2DModel's config, or a one-line refusal."""
    def get(key: str) -> Any:
        return config.get(key, UNET_DEFAULTS.get(key))

    for key, default, matches, does in FIXED:
        value = config.get(key, default)
        if value not in matches:
            raise ExportError(f"{where}: UNet2DModel {key}={value!r} has no counterpart in genforge's UNet, which "
                              f"{does} ({key}={matches[0]!r}); genforge imports only what it reproduces exactly")
    widths = [int(w) for w in get("block_out_channels")]
    base = widths[0]
    down, up = list(get("down_block_types")), list(get("up_block_types"))
    if any(b not in BLOCKS for b in down) or any(b not in UP_BLOCKS for b in up):
        raise ExportError(f"{where}: blocks {down} / {up}; genforge's UNet has DownBlock2D or AttnDownBlock2D and "
                          f"UpBlock2D or AttnUpBlock2D levels")
    attention = tuple(BLOCKS[b] for b in down)
    if tuple(UP_BLOCKS[b] for b in reversed(up)) != attention or len(widths) != len(down):
        raise ExportError(f"{where}: the up blocks {up} do not mirror the down blocks {down}; genforge's UNet has "
                          f"attention at the same levels on both paths")
    if any(w % base for w in widths):
        raise ExportError(f"{where}: block_out_channels {widths} are not multiples of the first; genforge's UNet "
                          f"widens each level by an integer multiple of base_channels")
    groups = get("norm_num_groups")
    if groups is None or any(w % groups for w in widths):
        raise ExportError(f"{where}: norm_num_groups {groups} does not divide every width {widths}; genforge's UNet "
                          f"needs one GroupNorm count that divides them all")
    if get("attn_norm_num_groups") not in (None, groups):
        raise ExportError(f"{where}: attn_norm_num_groups {get('attn_norm_num_groups')} differs from norm_num_groups "
                          f"{groups}; genforge's UNet uses one group count for every norm")
    if get("time_embedding_dim") not in (None, 4 * base):
        raise ExportError(f"{where}: time_embedding_dim {get('time_embedding_dim')}; genforge's UNet embeds "
                          f"timesteps in 4 x base_channels = {4 * base} dims")
    c, out = int(get("in_channels")), int(get("out_channels"))
    if c != out:
        raise ExportError(f"{where}: {c} input and {out} output channels (a learned variance?); genforge's UNet "
                          f"predicts one value per input channel")
    size = config.get("sample_size")
    h, w = (size, size) if isinstance(size, int) else tuple(size or (None, None))
    if not (isinstance(h, int) and isinstance(w, int)):
        raise ExportError(f"{where}: sample_size {size!r}; genforge needs the image size (an int or [height, width])")
    classes = get("num_class_embeds")
    if classes is not None and int(classes) < 2:
        raise ExportError(f"{where}: num_class_embeds {classes}; a class-conditional genforge run has at least one "
                          f"class and the unconditional 'null' class")
    layout = Layout(len(widths), int(get("layers_per_block")), attention, classes is not None)
    smaller = min(h, w)
    values = {"base_channels": base, "channel_mults": [w_ // base for w_ in widths], "blocks_per_level": layout.blocks,
              "attention_resolutions": [smaller // 2**i for i, a in enumerate(attention) if a],
              "dropout": float(get("dropout")), "norm_groups": int(groups), "class_conditional": classes is not None}
    return (c, h, w), layout, values


def _from_scheduler(scheduler: dict[str, Any], where: Path) -> tuple[dict[str, Any], str, list[str]]:
    """(DiffusionConfig's schedule and sampling values, a description, notes) from a DDPM/DDIM scheduler config."""
    name = scheduler.get("_class_name")
    if name not in SCHEDULERS:
        raise ExportError(f"{where}: the scheduler is {name}; genforge imports DDPMScheduler or DDIMScheduler configs "
                          f"(save the pipeline with DDPMScheduler.from_config(pipe.scheduler.config) to import it)")
    prediction = {v: k for k, v in PREDICTION_TYPES.items()}.get(scheduler.get("prediction_type", "epsilon"))
    if prediction is None:
        raise ExportError(f"{where}: prediction_type {scheduler.get('prediction_type')!r}; genforge's diffusion "
                          f"predicts epsilon, v_prediction or sample")
    if scheduler.get("rescale_betas_zero_snr"):
        raise ExportError(f"{where}: rescale_betas_zero_snr makes the last step pure noise (infinite sigma), which "
                          f"genforge's schedules do not reach")
    timesteps = int(scheduler.get("num_train_timesteps", 1000))
    schedule = _schedule(scheduler, timesteps, where)
    steps = min(50, timesteps)
    spacing = {"trailing": "trailing", "leading": "uniform"}.get(scheduler.get("timestep_spacing", "leading"))
    notes = []
    if spacing is None or scheduler.get("steps_offset", 0):
        notes.append("its timestep spacing has no genforge equivalent: trailing spacing by default")
        spacing = "trailing"
    if not scheduler.get("clip_sample", True) or scheduler.get("thresholding"):
        notes.append("genforge clamps clean-image estimates to [-1, 1] where the scheduler did not")
    sampler = {"sampler": "ddpm"} if name == "DDPMScheduler" else {"sampler": "ddim", "eta": 0.0}
    values = {"timesteps": timesteps, **schedule, "prediction": prediction, "noise_sampling": "uniform",
              **sampler, "spacing": spacing, "sample_steps": steps}
    return values, f"{name} ({schedule['schedule']}, {timesteps} steps, {PREDICTION_TYPES[prediction]})", notes


def _schedule(scheduler: dict[str, Any], timesteps: int, where: Path) -> dict[str, Any]:
    """genforge's schedule values for the scheduler's betas: trained_betas that are one of genforge's schedules,
    or a linear or squaredcos_cap_v2 beta_schedule; anything else is refused."""
    from genforge.sampling.schedules import cosine_betas, linear_betas

    trained = scheduler.get("trained_betas")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float64)
        if betas.shape != (timesteps,):
            raise ExportError(f"{where}: {betas.numel()} trained_betas for {timesteps} num_train_timesteps")
        if torch.allclose(betas, cosine_betas(timesteps), rtol=BETA_RTOL, atol=0):
            return {"schedule": "cosine"}
        linear = _as_linear(betas, timesteps)
        if linear is not None and torch.allclose(betas, linear_betas(timesteps, *linear), rtol=BETA_RTOL, atol=0):
            return _linear_values(*linear, where)
        raise ExportError(f"{where}: trained_betas that are neither a linear nor a cosine schedule; genforge's "
                          f"diffusion has only those two (sampling/schedules.py)")
    kind = scheduler.get("beta_schedule", "linear")
    if kind == "squaredcos_cap_v2":  # diffusers' cosine: improved DDPM's, with s = 0.008 and betas capped at 0.999
        return {"schedule": "cosine"}
    if kind == "linear":
        start, end = float(scheduler.get("beta_start", 1e-4)), float(scheduler.get("beta_end", 0.02))
        if end > 0.999:
            raise ExportError(f"{where}: beta_end {end} is above 0.999, where genforge's linear schedule caps betas")
        # genforge's linear betas are given for 1000 timesteps and scaled by 1000 / timesteps
        return _linear_values(start * timesteps / 1000, end * timesteps / 1000, where)
    raise ExportError(f"{where}: beta_schedule '{kind}' has no genforge equivalent; genforge's diffusion has linear "
                      f"and cosine (squaredcos_cap_v2) schedules")


def _as_linear(betas: torch.Tensor, timesteps: int) -> tuple[float, float] | None:
    """(beta_start, beta_end) as genforge states them (for 1000 timesteps) if ``betas`` may be linear: the line
    through the first beta and the last one below genforge's 0.999 cap."""
    below = (betas < 0.999).nonzero().flatten()
    last = int(below[-1]) if below.numel() else 0
    if last == 0:
        return None
    step = (betas[last] - betas[0]) / last
    start, end = float(betas[0]), float(betas[0] + step * (timesteps - 1))
    return start * timesteps / 1000, end * timesteps / 1000


def _linear_values(start: float, end: float, where: Path) -> dict[str, Any]:
    if not 0 < start < end < 1:
        raise ExportError(f"{where}: a linear schedule from {start:g} to {end:g} (stated for 1000 timesteps); "
                          f"genforge's needs 0 < beta_start < beta_end < 1")
    return {"schedule": "linear", "beta_start": start, "beta_end": end}


def _check_against_family(values: dict[str, Any], spec: DataSpec, tensors: dict[str, torch.Tensor],
                          head_dim: int | None, where: Path) -> None:
    """Build the Diffusion family the run will be and check it takes the tensors as they are: every name, every
    shape, and each attention block's head count (genforge picks it from the width; UNet2DModel from
    attention_head_dim)."""
    from genforge.families.diffusion import Diffusion, DiffusionConfig
    from genforge.nets.unet import SelfAttention

    try:
        family = Diffusion(DiffusionConfig(**values), spec)
    except GenforgeError as e:
        raise ExportError(f"{where}: genforge cannot build this model: {e}") from None
    for module in family.unet.modules():
        if isinstance(module, SelfAttention):
            width = module.norm.num_channels
            dim = head_dim or width
            if width % dim or width // dim != module.heads:
                raise ExportError(f"{where}: attention_head_dim {head_dim} gives {width // dim} heads of {dim} at width "
                                  f"{width}; genforge's UNet uses {module.heads} (heads of 32 channels where the width "
                                  f"is a multiple of 32, else one head)")
    expected = family.state_dict()
    for name, tensor in expected.items():
        if name not in tensors:
            raise ExportError(f"{where}: the weights lack '{name}', which genforge's UNet of this config has")
        if tuple(tensors[name].shape) != tuple(tensor.shape):
            raise ExportError(f"{where}: '{name}' is {tuple(tensors[name].shape)} where genforge's UNet of this config "
                              f"has {tuple(tensor.shape)}")


def _read_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    """The UNet's safetensors (one file or an index of shards); pickled .bin weights are refused."""
    from genforge.io import load_tensors

    single, index = unet_dir / WEIGHTS, unet_dir / f"{WEIGHTS}.index.json"
    if single.is_file():
        return load_tensors(single)
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        return {k: v for shard in shards for k, v in load_tensors(unet_dir / shard).items()}
    pickles = sorted(p.name for p in unet_dir.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise ExportError(f"{unet_dir} holds {pickles[0]}, PyTorch pickle weights, which genforge does not load (a "
                          f"pickle can run code): convert it to safetensors, e.g. UNet2DModel.from_pretrained(folder)"
                          f".save_pretrained(folder, safe_serialization=True)")
    raise ExportError(f"{unet_dir} has no {WEIGHTS}; expected a UNet2DModel saved by diffusers")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path} is missing; expected a diffusers config file") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path} is not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise ExportError(f"{path} is not a JSON object; expected a diffusers config")
    return value


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
