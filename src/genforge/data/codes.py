"""Code grids: a trained VQ-VAE's images as token streams, so a transformer can learn a prior over them.

``--data codes:runs/VQ`` encodes the VQ-VAE run's own training and validation images (the data it was
trained on, prepared as it was) into code grids, each written row by row after an end-of-text token:
token 0 is end-of-text and code c is token c + 1. The transformer family then trains on these streams
exactly as on text; no second transformer exists. Sampling the prior starts from end-of-text, draws one
grid's worth of tokens, and ``CodesCodec`` decodes them through the VQ-VAE into images, so ``genforge
sample`` on the prior run writes PNGs.

The cache key includes the VQ-VAE's weights file (size and mtime): retrain it, and the codes are
rebuilt on the next run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch

from genforge.data.codecs import register_token_codec
from genforge.data.tokenizers import register_tokenizer_type
from genforge.errors import DataError

END_OF_TEXT = 0


class CodeTokenizer:
    """Ids of a VQ-VAE's codes: 0 is end-of-text, code c is c + 1. Saved as the prior run's tokenizer.json,
    it also remembers which VQ-VAE run decodes the codes and the grid they fill."""

    type: ClassVar[str] = "codes"

    def __init__(self, num_codes: int, grid: Sequence[int], run: str):
        if num_codes < 1 or len(grid) != 2 or min(grid) < 1:
            raise DataError(f"a code tokenizer needs num_codes >= 1 and a (height, width) grid, got {num_codes}, {grid}")
        self.num_codes, self.grid, self.run = int(num_codes), (int(grid[0]), int(grid[1])), str(run)

    @property
    def vocab_size(self) -> int:
        return self.num_codes + 1

    @property
    def eot_id(self) -> int:
        return END_OF_TEXT

    @property
    def special_ids(self) -> dict[str, int]:
        return {"<|endoftext|>": END_OF_TEXT}

    @property
    def grid_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def fim_ids(self) -> None:
        return None

    def encode(self, text: str) -> list[int]:
        """Codes written as text ("12 5 7"): the inverse of ``decode``, for prompts."""
        try:
            codes = [int(part) for part in text.split()]
        except ValueError:
            raise DataError(f"a code prompt is whitespace-separated code numbers, got {text[:40]!r}") from None
        if any(not 0 <= c < self.num_codes for c in codes):
            raise DataError(f"codes must be in 0..{self.num_codes - 1}")
        return [c + 1 for c in codes]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array(self.encode(t), dtype=np.int64) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """The codes as text, for display: space-separated numbers; end-of-text is dropped."""
        return " ".join(str(i - 1) for i in (int(i) for i in ids) if i != END_OF_TEXT)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode()

    def token_bytes(self, token_id: int) -> bytes:
        return b"" if token_id == END_OF_TEXT else str(token_id - 1).encode()

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "num_codes": self.num_codes, "grid": list(self.grid), "run": self.run}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CodeTokenizer":
        return cls(int(d["num_codes"]), d["grid"], str(d["run"]))

    def save(self, path: str | os.PathLike) -> None:
        from genforge.io import atomic_write_json

        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CodeTokenizer":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodeTokenizer) and self.to_dict() == other.to_dict()


def open_vq_run(path: Path):
    """The VQ-VAE run a codes source or a prior decodes through, with a one-line error when it is not one."""
    from genforge.runs import Run

    run = Run.open(path)
    if run.config.family != "vqvae":
        raise DataError(f"codes:{path} must be a vqvae run (genforge train --family vqvae ...); it is a "
                        f"'{run.config.family}' run")
    return run


@torch.no_grad()
def write_codes(tmp: Path, source, params: dict, progress: bool = True) -> dict:
    """Encode the VQ-VAE run's training and validation images into token streams in ``tmp``."""
    from tqdm.auto import tqdm

    from genforge.data import prepare
    from genforge.data.cache import _common

    run = open_vq_run(source.path)
    family = run.load_family("cpu")
    images = prepare(run.config.data.source, run.config.data, progress=progress)
    tokenizer = CodeTokenizer(family.num_codes, family.code_grid, str(source.path))
    tokenizer.save(tmp / "tokenizer.json")
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    sizes = {}
    for split, data in (("train", images.train), ("val", images.val)):
        n = len(data)
        stream = np.empty(n * (tokenizer.grid_tokens + 1), dtype=dtype)
        with tqdm(total=n, desc=f"encoding {split} images to codes", disable=not progress, unit="img") as bar:
            for lo in range(0, n, 256):
                batch = data.get(slice(lo, min(lo + 256, n)))["x"]
                codes = family.encode_codes(batch).reshape(len(batch), -1).numpy() + 1
                rows = np.concatenate([np.zeros((len(batch), 1), np.int64), codes], axis=1)
                stream[lo * (tokenizer.grid_tokens + 1):(lo + len(batch)) * (tokenizer.grid_tokens + 1)] = rows.reshape(-1)
                bar.update(len(batch))
        stream.tofile(tmp / f"{split}.bin")
        sizes[split] = int(stream.size)
    return {
        **_common(source, params, "text"),
        "tokenizer": tokenizer.type,
        "vocab_size": tokenizer.vocab_size,
        "special_ids": tokenizer.special_ids,
        "sizes": sizes,
        "tokens": sizes,
        "token_dtype": np.dtype(dtype).name,
        "grid": list(tokenizer.grid),
        "images": {"train": len(images.train), "val": len(images.val)},
    }


class CodesCodec:
    """Token ids of a prior over code grids -> images, decoded through the VQ-VAE run (PNG files)."""

    suffix = ".png"

    def __init__(self, tokenizer: CodeTokenizer):
        from genforge.data.codecs import ImageCodec

        self.tokenizer = tokenizer
        self.images = ImageCodec()
        self._vq = None

    @property
    def vq(self):
        if self._vq is None:
            path = Path(self.tokenizer.run)
            if not path.is_dir():
                raise DataError(f"this prior decodes its codes through the VQ-VAE run {path}, which is missing; "
                                "restore it (or retrain the prior on codes of a run that exists)")
            self._vq = open_vq_run(path).load_family("cpu")
        return self._vq

    def decode_images(self, tokens: torch.Tensor, prompt_len: int = 1) -> torch.Tensor:
        """(n, prompt_len + grid tokens) ids -> (n, C, H, W) images in [-1, 1]. An end-of-text drawn inside a
        grid (rare once the prior is trained) stands for code 0."""
        ids = tokens[:, prompt_len:prompt_len + self.tokenizer.grid_tokens].detach().cpu().long()
        if ids.shape[1] != self.tokenizer.grid_tokens:
            raise DataError(f"a code grid needs {self.tokenizer.grid_tokens} tokens after the prompt, got {ids.shape[1]}")
        codes = (ids - 1).clamp(min=0).view(-1, *self.tokenizer.grid)
        return self.vq.decode_codes(codes).float().cpu()

    def save(self, tokens: torch.Tensor, out_dir, params: dict, prompt_len: int = 1) -> list[Path]:
        return self.images.save(self.decode_images(tokens, prompt_len), out_dir, params)

    def grid(self, tokens: torch.Tensor, path, params: dict, prompt_len: int = 1) -> Path:
        return self.images.grid(self.decode_images(tokens, prompt_len), Path(path).with_suffix(".png"), params)


register_tokenizer_type("codes", CodeTokenizer.from_dict)
register_token_codec("codes", CodesCodec)
