"""What a family can do, declared: each capability with a small frozen settings dataclass that names
its options, their defaults and valid ranges, and checks itself when made (as ``sampling.tokens.Decoding``
does for decoding controls).

A family lists its capabilities in ``Family.capabilities`` (name -> settings class). The API dispatches
on that table; asking a family for a capability it lacks is one line naming what it offers;
``genforge info RUN --json`` prints the table with every option (the web studio builds its forms from
it). Ranges here are the static ones; a model may check more (a label within its classes, steps within
its timesteps).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from genforge.config import Range
from genforge.errors import ConfigError
from genforge.sampling.code_stops import CODE_STOPS

# every capability a family may declare: what it does, and what the caller brings besides its settings
CAPABILITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sample": ("draw new items", ("n", "seed")),
    "likelihood": ("a bound on the negative log-likelihood of data (genforge eval)", ("data",)),
    "img2img": ("variations of an input image: noise it part of the way, then denoise (SDEdit)", ("image", "n", "seed")),
    "inpaint": ("regenerate the masked (white) part of an input image, keeping the rest exactly", ("image", "mask", "n", "seed")),
    "encode": ("images to latents and back (encode/decode)", ("image",)),
    "interpolate": ("images along a path between the latents of seeds or of two images", ("seeds or images", "n")),
    "variations": ("an input image's latent blended with fresh ones", ("image", "n", "seed")),
    "attribute": ("move an image's latent along the difference of two labels' mean latents", ("image", "source", "target")),
    "stream": ("one text, piece by piece while it is generated", ("prompt", "seed")),
    "continue": ("continue token ids", ("tokens", "seed")),
    "infill": ("the text between a prefix and a suffix (runs trained with --fim-rate)", ("prefix", "suffix", "seed")),
}

KINDS = ("int", "float", "str", "bool", "label", "texts", "pairs")


def option(default: Any, kind: str, help: str, range: Range | None = None,
           choices: tuple[str, ...] | None = None) -> Any:
    """A settings field: ``kind`` is one of KINDS ("label": a class id or name; "texts": one string or a list;
    "pairs": ``column=value`` pairs, see ``parse_pairs``)."""
    assert kind in KINDS, kind
    return field(default=default, metadata={"kind": kind, "help": help, "range": range, "choices": choices})


class Settings:
    """Base of the frozen settings dataclasses: checks every value when made. None means "the default of
    the family or run" wherever an option's default is None."""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f, getattr(self, f.name))

    @classmethod
    def make(cls, values: dict[str, Any], family: str, capability: str) -> "Settings":
        """Settings from keyword ``values`` (None values are "not given"); an unknown name is one line
        naming the options there are."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(k for k, v in values.items() if k not in names and v is not None)
        if unknown:
            raise ConfigError(f"{capability} with a {family} run does not take {', '.join(unknown)}; it takes "
                              f"{', '.join(names) if names else 'no options'}")
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

    def given(self) -> dict[str, Any]:
        """The options that were set (not None), as keyword arguments for the family's method."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def describe(cls, ranges: dict[str, Range] | None = None) -> list[dict[str, Any]]:
        """Each option: name, kind, default, range, choices, help (JSON-ready); ``ranges`` are a model's own
        ranges for some options (``Family.setting_ranges``), shown instead of the declared ones."""
        out = []
        for f in fields(cls):
            meta = f.metadata
            valid: Range | None = (ranges or {}).get(f.name, meta.get("range"))
            entry = {"name": f.name, "kind": meta["kind"], "default": None if f.default is MISSING else f.default,
                     "help": meta["help"]}
            if valid is not None:
                entry["range"] = {"low": valid.low, "high": valid.high, "open_low": valid.open_low,
                                  "open_high": valid.open_high, "text": valid.describe()}
            if meta.get("choices"):
                entry["choices"] = list(meta["choices"])
            out.append(entry)
        return out


def _check(f, value: Any) -> None:
    if value is None:
        return
    kind, valid, choices = f.metadata["kind"], f.metadata.get("range"), f.metadata.get("choices")
    name = f.name
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    if kind == "label" and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise ConfigError(f"{name} must be a class id or name, got {value!r}")
    if kind == "texts" and not (isinstance(value, str) or (isinstance(value, (list, tuple))
                                                          and all(isinstance(v, str) for v in value))):
        raise ConfigError(f"{name} must be a string or a list of strings, got {value!r}")
    if kind == "pairs":
        parse_pairs(value, name)
    if choices and value not in choices:
        raise ConfigError(f"unknown {name} '{value}'; expected one of: {', '.join(choices)}")
    if valid is not None:
        valid.check(name, value, integer=kind == "int")


def parse_pairs(value: Any, name: str = "where") -> tuple[tuple[str, str], ...]:
    """``column=value`` pairs from a string ("a=x,b=y"), a list of such strings (a repeated CLI option) or a
    dict {column: value}; a one-line ConfigError for anything else, a piece without "=", an empty column
    name or a column given twice. A comma followed by a piece without "=" belongs to the value before it, so
    "city=Paris, France" is one pair. Values of a dict are written as text: booleans as true/false, None as
    the empty string (a missing cell, as a CSV file writes it)."""
    if isinstance(value, dict):
        pairs = [(str(k), _as_text(v)) for k, v in value.items()]
    elif isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        pairs = [pair for text in ([value] if isinstance(value, str) else value) for pair in _split_pairs(text, name)]
    else:
        raise ConfigError(f"{name} takes column=value pairs (a string \"a=x,b=y\", a list of them or a dict), "
                          f"got {type(value).__name__}")
    if not pairs:
        raise ConfigError(f"{name} is empty; expected column=value pairs such as \"diagnosis=malignant\"")
    seen: set[str] = set()
    for column, _ in pairs:
        if not column:
            raise ConfigError(f"{name} has a pair without a column name; expected column=value")
        if column in seen:
            raise ConfigError(f"{name} gives column '{column}' twice; give each column one value")
        seen.add(column)
    return tuple(pairs)


def _split_pairs(text: str, name: str) -> list[tuple[str, str]]:
    pieces: list[str] = []
    for piece in text.split(","):
        if not piece.strip():  # "a=x," or "a=x,,b=y": nothing between the commas
            continue
        if "=" in piece or not pieces:
            pieces.append(piece)
        else:  # a comma inside a value
            pieces[-1] += "," + piece
    pairs = []
    for piece in pieces:
        if "=" not in piece:
            raise ConfigError(f"{name} takes column=value pairs such as \"diagnosis=malignant\", got {piece.strip()!r}")
        column, _, value = piece.partition("=")
        pairs.append((column.strip(), value.strip()))
    return pairs


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def offered(table: dict[str, type[Settings]]) -> str:
    return ", ".join(table) if table else "nothing"


def describe_table(table: dict[str, type[Settings]], ranges: dict[str, Range] | None = None) -> dict[str, Any]:
    """A family's capability table as JSON: each capability's summary, inputs and options (with a model's own
    ``ranges`` where it has them)."""
    return {name: {"summary": CAPABILITIES[name][0], "inputs": list(CAPABILITIES[name][1]),
                   "settings": settings.describe(ranges)} for name, settings in table.items()}


# ---- the settings each family declares ------------------------------------------------------------
LABEL_HELP = "class-conditional runs: a class id or name (default: drawn at random for each item)"
SAMPLERS = ("ddpm", "ddim", "euler", "heun", "dpmpp_2m")
SPACINGS = ("trailing", "uniform", "karras")


@dataclass(frozen=True)
class Plain(Settings):
    """A capability without options."""


@dataclass(frozen=True)
class Labelled(Settings):
    label: Any = option(None, "label", LABEL_HELP)


@dataclass(frozen=True)
class DiffusionSampling(Settings):
    steps: int | None = option(None, "int", "sampling steps (default: the run's model.sample_steps)", Range(1))
    sampler: str | None = option(None, "str", "the solver (default: the run's model.sampler)", choices=SAMPLERS)
    spacing: str | None = option(None, "str", "which noise levels the steps visit (default: the run's)", choices=SPACINGS)
    eta: float | None = option(None, "float", "ddim only: 0 deterministic, 1 fresh noise each step (DDPM-like)",
                               Range(0, 1))
    guidance: float | None = option(None, "float", "classifier-free guidance: 0 unconditional, 1 conditional, "
                                    ">1 stronger (default: the run's)", Range(0))
    label: Any = option(None, "label", LABEL_HELP)


@dataclass(frozen=True)
class Img2Img(DiffusionSampling):
    strength: float = option(0.5, "float", "how far results move from the input: 0 keeps it, 1 ignores it", Range(0, 1))


@dataclass(frozen=True)
class Inpaint(DiffusionSampling):
    resample: int | None = option(None, "int", "passes over each step, re-noised in between (RePaint; default: "
                                  "the run's model.resample)", Range(1, 100))


@dataclass(frozen=True)
class Likelihood(Settings):
    samples: int | None = option(None, "int", "Monte-Carlo samples per item (VAE importance samples, default "
                                 "1,000; diffusion timesteps, default 32)", Range(1, 100_000))


@dataclass(frozen=True)
class GanSampling(Settings):
    label: Any = option(None, "label", LABEL_HELP)
    truncation: float | None = option(None, "float", "pull latents toward the mean: psi 1 is off, 0 the mean image",
                                      Range(0, 1, hint="1: off, 0: the mean latent"))


@dataclass(frozen=True)
class Inversion(Settings):
    steps: int = option(300, "int", "GAN inversion: Adam steps on the latent (a VAE encodes in one pass)",
                        Range(1, 100_000))
    restarts: int = option(4, "int", "GAN inversion: random starts per image, the best kept", Range(1, 64))
    label: Any = option(None, "label", "class-conditional GANs: the input's class (default: searched)")


@dataclass(frozen=True)
class Variations(Inversion):
    strength: float = option(0.3, "float", "0 is the reconstruction itself, 1 unrelated samples", Range(0, 1))


@dataclass(frozen=True)
class Interpolation(Settings):
    truncation: float | None = option(None, "float", "GAN: pull latents toward the mean (1 is off)",
                                      Range(0, 1, hint="1: off, 0: the mean latent"))
    label: Any = option(None, "label", "class-conditional runs: one class along the whole path (default: the "
                        "first seed's)")


@dataclass(frozen=True)
class Attribute(Settings):
    per_label: int = option(200, "int", "training images per label averaged into the attribute vector",
                            Range(1, 100_000))
    steps: int = option(300, "int", "GAN inversion steps (unused by a VAE)", Range(1, 100_000))


@dataclass(frozen=True)
class TextDecoding(Settings):
    max_new_tokens: int | None = option(None, "int", "tokens to generate at most (default 256)", Range(0, 1_000_000))
    temperature: float | None = option(None, "float", "0 is greedy decoding (default 0.8)", Range(0, hint="0 means greedy"))
    top_k: int | None = option(None, "int", "keep only the k most likely tokens", Range(1))
    top_p: float | None = option(None, "float", "keep the most likely tokens whose probabilities reach p (1: off)",
                                 Range(0, 1, open_low=True, hint="1 keeps every token"))
    min_p: float | None = option(None, "float", "drop tokens less likely than min_p times the most likely (0: off)",
                                 Range(0, 1, hint="0 keeps every token"))
    repetition_penalty: float | None = option(None, "float", "> 1 makes tokens already in the text less likely (1: off)",
                                              Range(0, open_low=True, hint="1 means off"))


@dataclass(frozen=True)
class TextSampling(TextDecoding):
    code_stop: str | None = option(
        None, "str", "Python code: 'block' ends a sample before the first top-level statement after a complete "
        "block (def, class, if, ...), as Codex's stop sequences do; 'trim' and 'block' drop the last top-level "
        "statement of a sample cut by max_new_tokens (it may be unfinished; streams show each top-level statement "
        "once the next begins); 'auto': 'block' for Python code data (pycode, .py files), else 'off' "
        "(default: the run's model.code_stop; runs made before the option: off)", choices=CODE_STOPS)
    stop: Any = option(None, "texts", "end a text just before the first of these strings in its continuation")


@dataclass(frozen=True)
class TableSampling(Settings):
    where: Any = option(None, "pairs", "tables: keep only rows with these categories, column=value pairs "
                        "(\"a=x,b=y\", a list or a dict); categorical and boolean columns (true/false)")


@dataclass(frozen=True)
class TableDiffusionSampling(TableSampling):
    """Table sampling, plus the number of reverse steps (``genforge sample --steps``)."""

    steps: int | None = option(None, "int", "table diffusion: reverse steps (default: the run's model.sample_steps, "
                               "at most its timesteps)", Range(1))


@dataclass(frozen=True)
class TableTokenSampling(TableSampling):
    """Tables drawn token by token (the transformer on tables): each token's draw takes decoding controls."""

    temperature: float | None = option(None, "float", "table transformer: below 1 each column's likeliest values "
                                       "more often, 0 always the likeliest (default 1: as learnt)",
                                       Range(0, hint="0 means greedy"))
    top_p: float | None = option(None, "float", "table transformer: draw each token among its likeliest "
                                 "choices whose probabilities reach p (1: off)",
                                 Range(0, 1, open_low=True, hint="1 keeps every choice"))


def declare(**table: type[Settings]) -> dict[str, type[Settings]]:
    """A family's capability table, checked: known capability names, settings classes."""
    for name, settings in table.items():
        if name not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r}; known: {', '.join(CAPABILITIES)}")
        if not (isinstance(settings, type) and issubclass(settings, Settings)):
            raise TypeError(f"capability {name!r} needs a Settings dataclass, got {settings!r}")
    return dict(table)
