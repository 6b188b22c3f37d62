"""The contract every family meets, so that one Trainer, one sampler CLI and one web app serve them all.

A family is an ``nn.Module`` built from its own config dataclass and a ``DataSpec``. It declares its
optimizers by name, and its ``training_step`` *yields* ``(optimizer_name, loss, logs)`` phases: the
trainer runs backward, clipping, the optimizer step and EMA between yields. A GAN yields the
discriminator phase first and computes the generator loss after that update; the others yield once.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import torch
from torch import nn

from genforge.config import Range
from genforge.data.spec import KINDS, DataSpec
from genforge.errors import ConfigError
from genforge.families.capabilities import Plain, Settings, declare, offered

if TYPE_CHECKING:
    from genforge.families.sampling_nets import SamplingNet

Phase = tuple[str, torch.Tensor, dict[str, float]]


@dataclass
class OptimizerGroup:
    """Parameters one named optimizer steps. ``lr``/``betas``/``weight_decay`` of None take the run's defaults."""

    params: list[nn.Parameter]
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    # parameters exempt from weight decay (norms, biases, embeddings), stepped by the same optimizer
    no_decay: list[nn.Parameter] = field(default_factory=list)


class Family(nn.Module, abc.ABC):
    name: ClassVar[str]
    Config: ClassVar[type]
    accepts: ClassVar[tuple[str, ...]] = ("image",)  # the DataSpec kinds it trains on (DataSpec.kind)
    # defaults for TrainConfig fields that suit this family (a user's value always wins)
    train_defaults: ClassVar[dict[str, Any]] = {}
    # the nets whose activations train.activation_checkpointing recomputes in backward (attribute names)
    checkpointed_nets: ClassVar[tuple[str, ...]] = ()
    # the modules train.fsdp shards, innermost first, each its own unit (dotted attribute paths; a ModuleList's
    # items are one unit each); the family itself is the outermost unit
    fsdp_units: ClassVar[tuple[str, ...]] = ()
    # what it can do, each with its settings dataclass (see capabilities.py); the API dispatches on this
    capabilities: ClassVar[dict[str, type[Settings]]] = declare(sample=Plain)
    # the formats `genforge export` writes this family in (genforge.export.registry.FORMATS), each exact: "hf" a
    # Hugging Face folder, "onnx" the networks its sampler runs (``sampling_nets``)
    exports: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings(cls, capability: str, values: dict[str, Any]) -> Settings:
        """The checked settings of ``capability`` from keyword ``values``; a one-line ConfigError when this
        family lacks the capability (naming those it has) or a value is unknown or out of range."""
        if capability not in cls.capabilities:
            raise ConfigError(f"the {cls.name} family has no {capability}; it offers: {offered(cls.capabilities)}")
        return cls.capabilities[capability].make(values, cls.name, capability)

    @classmethod
    def check_accepts(cls, spec: DataSpec, source: str | None = None) -> None:
        """A one-line ConfigError when this family cannot train on data of ``spec`` (from ``source``)."""
        if spec.kind not in cls.accepts:
            given = f"('{source}', {spec.describe_kind()})" if source else f"given as {spec.describe_kind()}"
            raise ConfigError(f"family '{cls.name}' does not handle {spec.modality} data {given}; "
                              f"it handles {' or '.join(KINDS[k] for k in cls.accepts)}")

    def __init__(self, config: Any, spec: DataSpec):
        super().__init__()
        self.check_accepts(spec)
        self.config = config
        self.spec = spec

    @classmethod
    def check_activation_checkpointing(cls) -> None:
        if not cls.checkpointed_nets:
            raise ConfigError(f"train.activation_checkpointing applies to families with deep nets (transformer, "
                              f"diffusion); the {cls.name} family's nets are small enough without it")

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute activations in backward instead of keeping them (less memory, about a third more compute)."""
        if on:
            self.check_activation_checkpointing()
        for name in self.checkpointed_nets:
            getattr(self, name).checkpointing = on

    @classmethod
    def check_training(cls, model: dict[str, Any], train: Any) -> None:
        """Refuse train.* settings this family cannot train with under its ``model`` settings (a partial dict:
        missing keys take the Config's defaults), before anything is prepared or created."""

    @classmethod
    def check_fsdp(cls) -> None:
        if not cls.fsdp_units:
            raise ConfigError(f"train.fsdp shards transformers (family transformer); the {cls.name} family's nets "
                              f"fit one device: train it with plain data parallelism (leave train.fsdp off)")

    def fsdp_modules(self) -> list[nn.Module]:
        """The modules ``fsdp_units`` names, innermost first."""
        self.check_fsdp()
        modules: list[nn.Module] = []
        for path in self.fsdp_units:
            module = self.get_submodule(path)
            modules.extend(module if isinstance(module, nn.ModuleList) else [module])
        return modules

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        return {"main": OptimizerGroup(params=[p for p in self.parameters() if p.requires_grad])}

    @abc.abstractmethod
    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        """Yield ``(optimizer_name, loss, logs)`` once per optimizer update of this step."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> torch.Tensor:
        """``n`` items in data space: images in [-1, 1] as (n, C, H, W), or token ids as (n, T)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sampling_nets(self) -> list[SamplingNet]:
        """The networks this family's sampler runs, each with example inputs and what it computes, for ONNX export
        (``genforge.export.onnx_export``); a family that declares "onnx" in ``exports`` lists them."""
        raise ConfigError(f"the {self.name} family on {self.spec.describe_kind()} declares no ONNX export; "
                          f"formats it exports: {', '.join(self.exports) or 'none'}")

    def setting_ranges(self) -> dict[str, Range]:
        """Ranges this model puts on its capabilities' options beyond their declared ones (a diffusion model:
        sampling steps up to its timesteps): a loaded run checks them with the rest, and shows them."""
        return {}

    def labels_for(self, n: int, label: Any, generator: torch.Generator | None) -> torch.Tensor | None:
        """(n,) labels for sampling, drawn as ``sample`` draws them (``label`` None: uniformly random from
        ``generator``); None for a family without classes (``self.num_classes``), which refuses a label."""
        if getattr(self, "num_classes", None) is None:
            self.reject_conditions(self.name, {"label": label})
            return None
        from genforge.nets.conv import resolve_labels

        return resolve_labels(label, n, self.num_classes, self.spec.class_names, generator, self.device)

    def check_images(self, x: Any) -> torch.Tensor:
        """``x`` itself when it is a batch of this family's items, (B, C, H, W) images or (B, C, L) waveforms,
        else a ConfigError."""
        if not torch.is_tensor(x) or x.dim() != len(self.spec.shape) + 1 or tuple(x.shape[1:]) != tuple(self.spec.shape):
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            what = "waveforms" if self.spec.kind == "waveform" else "images"
            raise ConfigError(f"expected {what} shaped (B, {', '.join(map(str, self.spec.shape))}), got {got}")
        return x

    @staticmethod
    def reject_conditions(family: str, conditions: dict[str, Any]) -> None:
        unknown = [k for k, v in conditions.items() if v is not None]
        if unknown:
            raise ConfigError(f"family '{family}' does not accept {', '.join(unknown)} when sampling")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then the previous mode again. Sampling runs in it: BatchNorm uses its
    running statistics (a sample does not depend on the rest of the batch) and dropout does not draw
    from the global RNG (a seeded generator alone decides the output)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
