"""Run configuration: dataclasses, YAML round-trip and ``--set a.b=c`` overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import yaml

from genforge.errors import ConfigError


FOR_TABLES = {"applies_to": "table"}  # DataConfig field metadata: options only tables use
FOR_TOKENS = {"applies_to": "tokens"}  # ... and options only token streams (text, code grids) use
FOR_CODES = {"applies_to": "codes"}  # ... and options of one modality (by its name): VQ-VAE code grids
FOR_MUSIC = {"applies_to": "music"}  # ... symbolic music
FOR_AUDIO = {"applies_to": "audio"}  # ... audio clips


@dataclass
class DataConfig:
    source: str = "mnist"
    image_size: int | None = None  # folder: sources are resized and centre-cropped to this (default 64)
    channels: int | None = None  # folder: sources: 1 (grayscale) or 3 (RGB); None keeps what the files have
    block_size: int = 256  # text: context length in tokens
    val_fraction: float = 0.1
    tokenizer: str = "char"  # text: "char" (one id per character) or "bpe" (byte-level BPE trained on the corpus)
    vocab_size: int = 4096  # text with tokenizer "bpe": ids in all, 260 (bytes + special tokens) .. 2**32-1
    fim_rate: float = 0.0  # text: share of training windows rearranged for fill-in-the-middle (--fim-rate)
    # text: share of training windows that begin at a document's start (its end-of-text token); random windows
    # of a large corpus rarely hold one, so a short run never learns how a file opens (--doc-starts)
    doc_starts: float = field(default=0.0, metadata=FOR_TOKENS)
    # codes: each grid follows its image's class token (the VQ-VAE's images need labels); False in configs made
    # before the option, True for new runs (CodesModality.data_defaults)
    class_tokens: bool = field(default=False, metadata=FOR_CODES)
    # music: training pieces are also learnt transposed by every shift up to this many semitones each way (new
    # music runs: 3, MusicModality.data_defaults)
    transpose: int = field(default=0, metadata=FOR_MUSIC)
    # music: "events" (REMI tokens, for the transformer) or "pianoroll" (2 x 64 x 64 segments, for the image
    # families); audio: "mel" (log-mel spectrograms as 1 x frames x 64 images) or "waveform" (1 x samples, for
    # diffusion's DiffWave denoiser); new runs get the one their family accepts (Modality.defaults_for)
    representation: str = field(default="events", metadata={"applies_to": ("music", "audio")})
    # music: learn from the first N pieces of the source only (0: all of them): a quick run on part of a corpus
    # (reading `bach` through music21 takes about 0.6 s a chorale; the demo reads 40)
    pieces: int = field(default=0, metadata=FOR_MUSIC)
    # music: "key" labels each piece with its key (24 classes, estimated from its notes: data/music_keys.py), so
    # models learn to generate in a key chosen with --label "D minor"; "none" (the default) learns no labels
    labels: str = field(default="none", metadata=FOR_MUSIC)
    # audio: clips are resampled to this rate (Hz), mixed to mono, and cut or padded to clip_seconds
    sample_rate: int = field(default=16_000, metadata=FOR_AUDIO)
    clip_seconds: float = field(default=1.0, metadata=FOR_AUDIO)
    # audio: learn from the first N clips of the source only (0: all of them; spoken-digits makes 3,000)
    clips: int = field(default=0, metadata=FOR_AUDIO)
    # tables (csv:, parquet: and the built-in tables); metadata "applies_to": the data kind they mean something for,
    # so other data refuses them (modalities/prepare.py)
    columns: dict[str, str] = field(default_factory=dict, metadata=FOR_TABLES)  # NAME -> type, over the inferred one
    numeric: str = field(default="gmm", metadata=FOR_TABLES)  # numbers: gmm (mode-specific normalisation) or quantile
    max_modes: int = field(default=10, metadata=FOR_TABLES)  # numeric="gmm": most Gaussian modes per column
    onehot_max: int = field(default=50, metadata=FOR_TABLES)  # categories one-hot up to this many; a binary code above
    # rules every sampled row keeps ("age >= 18", "total = a + b", ...: data/table_constraints.py); checked on the
    # data, not part of the cache key (they change no encoded row), kept with the run in its spec
    constraints: list[str] = field(default_factory=list, metadata=FOR_TABLES)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64  # items per micro-batch and process (a step trains on batch_size x grad_accum x processes)
    grad_accum: int = 1  # micro-batches whose gradients add up before each optimizer step
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.999  # 0 disables EMA
    # > 0: power-function EMA (Karras et al. 2024), decay (1 - 1/n)^(gamma+1) after n updates (capped at
    # ema_decay): it averages a fixed share of the run so far; 6.94 is their sigma_rel = 0.10. 0: ema_decay
    ema_gamma: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | bf16 | fp32
    memory_format: str = "auto"  # images and conv weights: auto (channels_last on CUDA) | channels_last | contiguous
    compile: bool = False
    activation_checkpointing: bool = False  # recompute activations in backward: less memory, more compute
    fsdp: bool = False  # several processes: shard weights, gradients and optimizer state (FSDP2; transformer)
    # several processes: BatchNorm normalises over the global batch (all processes' items) instead of each
    # process's slice; costs an all-reduce per BatchNorm layer, forward and backward (train/sync_batchnorm.py)
    sync_batchnorm: bool = False
    seed: int = 0
    log_every: int = 25
    sample_every: int = 500  # 0 disables sample grids during training
    ckpt_every: int = 500  # 0: only by time (ckpt_minutes), on a stop signal and at the end
    ckpt_minutes: float = 5.0  # also checkpoint when this long has passed since the last one (0: never by time)
    grid_size: int = 64  # items in each sample grid
    max_minutes: float | None = None
    max_bad_steps: int = 25  # consecutive non-finite losses before stopping
    eval_every: int = 0  # score samples every N steps into metrics.jsonl as eval/* (0: never)
    eval_n: int | None = None  # samples per evaluation during training (None: 500 images or 50 texts)
    eval_features: str = "auto"  # feature extractor for image runs (see `genforge eval --help`)


@dataclass
class RunConfig:
    family: str
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: dict[str, Any] = field(default_factory=dict)  # the family's own Config, as a dict

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train"]["betas"] = list(self.train.betas)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, dict) or "family" not in d:
            raise ConfigError("config must be a mapping with a 'family' key")
        return cls(
            family=d["family"],
            data=build_dataclass(DataConfig, d.get("data") or {}, "data"),
            train=build_dataclass(TrainConfig, d.get("train") or {}, "train"),
            model=dict(d.get("model") or {}),
        )


def build_dataclass(cls: type, values: dict, where: str):
    """Instantiate ``cls`` from ``values``, naming any unknown key and the keys that exist."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown {where} option(s) {', '.join(unknown)}; known: {', '.join(names)}")
    kwargs = {}
    for key, value in values.items():
        if key == "betas" and value is not None:
            value = tuple(float(v) for v in value)
        kwargs[key] = value
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars: 3, 0.5, true, null, [1, 2], or plain strings."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" as a string; users mean a number
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    return value


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides to a config dict (sections: data, train, model)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got '{item}'")
        path, value = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) < 2 or parts[0] not in ("data", "train", "model"):
            raise ConfigError(f"--set key '{path}' must start with data., train. or model.")
        node = d.setdefault(parts[0], {})
        for p in parts[1:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = parse_value(value)
    return d


def data_config(source: str, overrides: list[str]) -> DataConfig:
    """The data settings of ``source`` with ``data.key=value`` overrides (``genforge data prepare --set``)."""
    for item in overrides:
        if not item.strip().startswith("data."):
            raise ConfigError(f"--set here takes data.* settings (data.key=value), got '{item}'")
    d = apply_overrides({"data": {"source": source}}, overrides)
    cfg = build_dataclass(DataConfig, d["data"], "data")
    check_types(cfg, "data")
    return cfg


def check_types(cfg: Any, where: str) -> None:
    """Reject values whose type cannot be what the dataclass field declares (e.g. steps='abc')."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value is None or default is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"{where}.{f.name} must be {type(default).__name__}, got {value!r}")


@dataclass(frozen=True)
class Range:
    """The valid values of one numeric option: ``low``/``high`` bounds (None: unbounded), each inclusive
    unless ``open_low``/``open_high``; ``hint`` says what the option does, for the error."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    hint: str = ""

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.open_high else value > self.high):
            return False
        return value == value  # NaN is in no range

    def check(self, name: str, value: Any, integer: bool = False) -> None:
        """A one-line ConfigError naming ``name``, the range and the value, when ``value`` is not a number in it."""
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not self.contains(value) or (integer and int(value) != value)):
            hint = f" ({self.hint})" if self.hint else ""
            raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'} {self.describe()}{hint}, "
                              f"got {value!r}")

    def describe(self) -> str:
        def num(v: float) -> str:
            return str(v) if isinstance(v, int) else f"{v:g}"

        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{num(self.low)}, {num(self.high)}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {num(self.low)}"
        return f"{'<' if self.open_high else '<='} {num(self.high)}"


TRAIN_RANGES: dict[str, Range] = {
    "steps": Range(1),
    "batch_size": Range(1),
    "grad_accum": Range(1, 4096, hint="1 is off"),
    "lr": Range(0, open_low=True),
    "weight_decay": Range(0),
    "warmup_steps": Range(0),
    "min_lr_ratio": Range(0, 1),
    "grad_clip": Range(0, hint="0 disables clipping"),
    "ema_decay": Range(0, 1, open_high=True, hint="0 disables EMA"),
    "ema_gamma": Range(0, hint="0 is off"),
    "log_every": Range(1),
    "sample_every": Range(0, hint="0 disables sample grids"),
    "ckpt_every": Range(0, hint="a step interval, or 0 for checkpoints only by time, on a stop and at the end"),
    "ckpt_minutes": Range(0, hint="minutes between checkpoints, or 0 for none by time"),
    "grid_size": Range(1, 1024),
    "max_minutes": Range(0, open_low=True),
    "max_bad_steps": Range(0),
    "eval_every": Range(0, hint="0 (off) or a positive step count; --eval-every"),
    "eval_n": Range(2, 100_000, hint="samples per evaluation"),
}


TRAIN_CHOICES: dict[str, tuple[str, ...]] = {
    "precision": ("auto", "bf16", "fp32"),
    "memory_format": ("auto", "channels_last", "contiguous"),
}


def check_ranges(cfg: Any, ranges: dict[str, Range], where: str) -> None:
    """A ``ConfigError`` naming the first value of ``cfg`` outside its range (None means "not set": allowed)."""
    for name, valid in ranges.items():
        value = getattr(cfg, name)
        if value is not None:
            valid.check(f"{where}.{name}", value, integer=isinstance(getattr(type(cfg), name, None), int))


def check_choices(cfg: Any, choices: dict[str, Sequence[str]], prefix: str = "") -> None:
    """A ``ConfigError`` naming the first value of ``cfg`` that is not one of its choices (e.g. "unknown gan loss
    'x'; expected one of: ..." with ``prefix`` "gan ")."""
    for name, valid in choices.items():
        value = getattr(cfg, name)
        if value not in valid:
            raise ConfigError(f"unknown {prefix}{name} '{value}'; expected one of: {', '.join(valid)}")


def check_count(n: Any, what: str, limit: int, low: int = 1) -> int:
    """A count a user asked for (samples, variations, evaluation size): an integer from ``low`` to ``limit``,
    or a one-line error naming both."""
    if not isinstance(n, int) or isinstance(n, bool) or not low <= n <= limit:
        raise ConfigError(f"{what} must be an integer from {low} to {limit:,}, got {n!r}")
    return n
