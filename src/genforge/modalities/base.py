"""What every modality plug-in provides, and the pieces of a prepared dataset.

A modality owns everything specific to one kind of data: its source kinds (built-in names and
``kind:PATH`` forms) and how they are read, cached and split; its Dataset and ``DataSpec``; its codec
(tensors -> files, a preview, a user's input read back); how many items a training step sees and
what they are called (img/s, tok/s); which scorer evaluates its samples and how the report shows
them. ``registry.py`` names the modalities; the trainer, evaluator, API, report and command line ask
the modality of a run instead of comparing names.

A new modality is one file with a ``Modality`` subclass plus one line in ``registry.MODALITIES`` (or,
from outside the package, ``registry.register``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from genforge.config import DataConfig
from genforge.data.sources import Source
from genforge.data.spec import DataSpec


@dataclass
class Prepared:
    """A prepared source: its spec, train and validation datasets, tokenizer (token data) and cache entry."""

    spec: DataSpec
    train: Any
    val: Any
    tokenizer: Any  # token modalities: the tokenizer; tables: the table transform; else None
    manifest: dict
    path: Path  # the cache entry
    extra: dict = field(default_factory=dict)  # what a modality keeps beside (e.g. the images behind code grids)

    @property
    def modality(self) -> str:
        return self.spec.modality


@dataclass(frozen=True)
class ReportStyle:
    """How the comparison report shows a modality's scores."""

    title: str  # heads the metrics table: "Images", "Text"
    columns: tuple[str, ...]  # metric columns, in order (those no result has are left out)
    lower_is_better: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()  # what the columns mean, under the table
    shows: str = "grid"  # "grid": the latest training grid; "examples": the scored samples as text
    # whether its scorer draws figures of the samples it scored (``figures()``): `genforge eval` keeps them as PNG
    # files beside eval.json and the run's card in the report shows them
    figures: bool = False


class Modality(abc.ABC):
    """One kind of data. Class attributes declare; methods do the modality-specific work (those marked
    abstract must be written by every modality; the others have defaults that suit most)."""

    name: ClassVar[str]  # recorded in DataSpec.modality, cache manifests and eval results
    # the tensors families see (DataSpec.kind): "image", "tokens", "table"; picks a family's variant (families.VARIANTS)
    data_kind: ClassVar[str | None] = None
    unit: ClassVar[str]  # what a training or sampling rate counts: "img", "tok"
    builtin_sources: ClassVar[dict[str, str]] = {}  # name -> one-line description
    path_forms: ClassVar[dict[str, str]] = {}  # kind -> how to write it, e.g. "folder:PATH (...)"
    model_kind: ClassVar[str] = "generic"  # which Model class the API loads its runs with
    # data.* values new runs start from (configs made before an option keep the DataConfig default)
    data_defaults: ClassVar[dict[str, Any]] = {}
    # model.* values new runs of a family (by name) start from on this data, over the family's own model_defaults
    # (a VAE binarises images by default; a spectrogram must stay continuous)
    family_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    scorer: ClassVar[Any] = None  # the evaluate-layer scorer: a class, or "module:Class"
    scores_as: ClassVar[str | None] = None  # results compare with this modality's (codes are scored as images)
    default_eval_n: ClassVar[int] = 100  # samples `genforge eval` scores
    sized_by_n_text: ClassVar[bool] = False  # `genforge compare` sizes its runs by --n-text, not --n (text)
    training_eval_n: ClassVar[int] = 50  # samples --eval-every scores
    report: ClassVar[ReportStyle]

    def defaults_for(self, accepts: tuple[str, ...]) -> dict[str, Any]:
        """The data.* values a new run starts from, for a family that accepts these ``DataSpec`` kinds: a
        modality with several representations picks the one the family trains on."""
        return dict(self.data_defaults)

    def kind_of(self, cfg: DataConfig | None) -> str | None:
        """The ``DataSpec`` kind this data has under the settings ``cfg`` (None: the defaults new runs start
        from), known before it is prepared: ``data_kind``, unless the settings choose a representation."""
        return self.data_kind

    # ---- sources ----------------------------------------------------------------------------------
    def check_path(self, source: Source) -> None:
        """A one-line DataError when ``source.path`` cannot be this kind of data (it exists)."""

    def source_files(self, source: Source) -> list[Path] | None:
        """The files the source reads (their sizes and mtimes key the cache); None for package data."""
        return None

    def source_root(self, source: Source) -> Path | None:
        return source.path

    # ---- preparation -----------------------------------------------------------------------------
    def check_config(self, source: Source, cfg: DataConfig) -> None:
        """Refuse data.* settings that do not apply to this modality."""

    @abc.abstractmethod
    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        """The settings that change what lands in the cache (part of its key)."""

    @abc.abstractmethod
    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        """Decode the source into ``tmp``; returns the manifest's modality-specific fields."""

    @abc.abstractmethod
    def read(self, path: Path, manifest: dict) -> Any:
        """The arrays of a cache entry, checked (``cache.CorruptEntry`` when they do not match the manifest)."""

    @abc.abstractmethod
    def assemble(self, entry: Any, source: Source, cfg: DataConfig) -> Prepared:
        """Datasets and spec from a cache entry and the settings that do not touch the cache."""

    # ---- runs -------------------------------------------------------------------------------------
    def load_tokenizer(self, path: Path) -> Any:
        """A run's tokenizer file (``tokenizer.json``), for modalities that have one."""
        return None

    def adopts(self, spec: DataSpec, run_path: Path) -> bool:
        """Whether a run recorded under another modality name is really this modality's (older runs)."""
        return False

    def items_per_step(self, spec: DataSpec, batch_size: int) -> int:
        """Items (counted in ``unit``) one training batch holds."""
        return batch_size

    def grid_items(self, grid_size: int) -> int:
        """Samples a training grid (samples/step_*.*) shows."""
        return grid_size

    def sample_options(self, spec: DataSpec, tokenizer: Any) -> dict:
        """What ``family.sample`` needs besides ``n`` and ``generator`` to draw an unconditional sample."""
        return {}

    @abc.abstractmethod
    def codec(self, spec: DataSpec, tokenizer: Any) -> Any:
        """Samples -> files: ``decode``, ``write_items``, ``finish``, ``grid`` (see data/codecs.py)."""

    def report_audio(self, samples_dir: Path) -> bytes | None:
        """WAV bytes the report's card of a run plays (``samples_dir``: its training grids), or None: by default
        the latest grid's sound (``samples/step_*.wav``, which codecs of audio write beside their grid PNG)."""
        clips = sorted(samples_dir.glob("step_*.wav"))
        return clips[-1].read_bytes() if clips else None

    def rate(self, items_per_s: float | None) -> str:
        return "-" if items_per_s is None else f"{items_per_s:,.0f} {self.unit}/s"
