"""What a family needs to know about its data, and nothing more."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from genforge.errors import DataError

KINDS = {"tokens": "token ids below a vocab_size", "image": "(C, H, W) images", "vector": "(D,) vectors",
         "table": "(D,) encoded table rows (DataSpec.table)", "waveform": "(C, L) waveforms (audio samples)"}
TANH_SPANS = ("value", "code")  # continuous dims in about [-1, 1]: a tanh output
SOFTMAX_SPANS = ("mode", "category", "missing")  # one-hot groups: exactly one dim is 1, the rest 0


@dataclass(frozen=True)
class TableSpan:
    """Dims ``start .. start + width`` of an encoded table row, holding one part of one column (see DataSpec.table)."""

    column: str
    kind: str  # one of TANH_SPANS or SOFTMAX_SPANS
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width

    @property
    def activation(self) -> str:
        """What a generator's output for these dims goes through: "tanh" or "softmax"."""
        return "tanh" if self.kind in TANH_SPANS else "softmax"


@dataclass
class DataSpec:
    """Shape of the data a model is built for.

    modality: the modality's name ("image", "text", "codes", ... see genforge.modalities).
    shape: (C, H, W) for images; (C, L) for waveforms (channels, samples); (block_size,) for token streams, the
        context length in tokens.
    vocab_size: number of token ids (token streams only).
    num_classes: number of labels when the data has them, else None.
    class_names: the label names, index-aligned with the label ids.
    table: encoded table rows only: {"spans": [{"column", "kind", "start", "width"}, ...] covering dims 0..D-1 in
        order, "columns": [{"name", "type", "dtype", "missing", "start", "width", ...}, ...], "width": D};
        ``table_spans()`` gives the spans as ``TableSpan``s.
    """

    modality: str
    shape: tuple[int, ...]
    vocab_size: int | None = None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    table: dict | None = None

    @property
    def kind(self) -> str:
        """The tensors a family sees, whatever the modality: "tokens" (ids below vocab_size), "image"
        ((C, H, W) floats), "waveform" ((C, L) floats), "table" ((D,) encoded rows laid out by ``table``) or
        "vector" ((D,) floats). Families declare the kinds they accept."""
        if self.table is not None:
            return "table"
        if self.vocab_size is not None:
            return "tokens"
        return {3: "image", 2: "waveform"}.get(len(self.shape), "vector")

    def table_spans(self) -> list[TableSpan]:
        """The spans of an encoded table row, in order (empty for other data)."""
        return [TableSpan(s["column"], s["kind"], int(s["start"]), int(s["width"]))
                for s in (self.table or {}).get("spans", [])]

    def describe_kind(self) -> str:
        return KINDS[self.kind]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        return cls(**d)


def check_fits(model_spec: DataSpec, data_spec: DataSpec, data: str) -> None:
    """A one-line DataError when data of ``data_spec`` (from source ``data``) cannot train a model built for
    ``model_spec`` (an imported model, whose shape, vocabulary and classes are fixed): the modality may differ."""
    for what, mine, theirs in (("kind of data", model_spec.kind, data_spec.kind),
                               ("item shape", tuple(model_spec.shape), tuple(data_spec.shape)),
                               ("vocabulary size", model_spec.vocab_size, data_spec.vocab_size),
                               ("number of classes", model_spec.num_classes, data_spec.num_classes)):
        if mine != theirs:
            raise DataError(f"the data '{data}' does not fit the imported model: its {what} is {theirs}, the "
                            f"model's is {mine}")
