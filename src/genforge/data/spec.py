"""What a family needs to know about its data, and nothing more."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class DataSpec:
    """Shape of the data a model is built for.

    modality: "image" or "text".
    shape: (C, H, W) for images; (block_size,) for text, the context length in tokens.
    vocab_size: number of token ids (text only).
    num_classes: number of labels when the data has them, else None.
    class_names: the label names, index-aligned with the label ids.
    """

    modality: str
    shape: tuple[int, ...]
    vocab_size: int | None = None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        return cls(**d)
