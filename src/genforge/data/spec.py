"""What a family needs to know about its data, and nothing more."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


KINDS = {"tokens": "token ids below a vocab_size", "image": "(C, H, W) images", "vector": "(D,) vectors"}


@dataclass
class DataSpec:
    """Shape of the data a model is built for.

    modality: the modality's name ("image", "text", "codes", ... see genforge.modalities).
    shape: (C, H, W) for images; (block_size,) for token streams, the context length in tokens.
    vocab_size: number of token ids (token streams only).
    num_classes: number of labels when the data has them, else None.
    class_names: the label names, index-aligned with the label ids.
    """

    modality: str
    shape: tuple[int, ...]
    vocab_size: int | None = None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """The tensors a family sees, whatever the modality: "tokens" (ids below vocab_size), "image"
        ((C, H, W) floats) or "vector" ((D,) floats). Families declare the kinds they accept."""
        if self.vocab_size is not None:
            return "tokens"
        return "image" if len(self.shape) == 3 else "vector"

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
