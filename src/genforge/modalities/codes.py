"""Code grids: a trained VQ-VAE's images as token streams, so a transformer can learn a prior over them.

``--data codes:runs/VQ`` encodes the VQ-VAE run's own training and validation images (the data it was
trained on, prepared as it was) into code grids, each written row by row after an end-of-text token:
token 0 is end-of-text and code c is token c + 1. With ``data.class_tokens`` (new runs; it needs labelled
images) each image's class comes between the two, as token num_codes + 1 + class: the prior learns which
digit it draws before the first code, and every code sees it (the class-conditional priors of VQ-VAE-2),
while sampling still starts from end-of-text alone, the class drawn first from what the prior learned.
The transformer family trains on these streams as on any token stream; no second transformer exists.
Sampling the prior starts from end-of-text, draws one row's worth of tokens (the class, then the grid),
and ``CodesCodec`` decodes them through the VQ-VAE into images: ``genforge sample`` on the prior run
writes PNGs, and ``genforge eval`` scores those images against the VQ-VAE's training images, exactly as
an image run on that data is scored (``evaluate/scorers/codes.py``).

The cache key includes the VQ-VAE's weights file (size and mtime): retrain it, and the codes are
rebuilt on the next run. Priors made before codes were a modality of their own recorded "text" data;
``adopts`` recognises them by their code tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch

from genforge.config import DataConfig
from genforge.data.cache import Entry
from genforge.data.sources import Source
from genforge.data.tokenizers import load_tokenizer
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError, DataError
from genforge.io import atomic_write_json
from genforge.modalities.base import Prepared
from genforge.modalities.image import ImageModality
from genforge.modalities.text import TokenStreams, tokenizer_type
from genforge.runs import Run

END_OF_TEXT = 0


class CodeTokenizer:
    """Ids of a VQ-VAE's codes: 0 is end-of-text, code c is c + 1, and with ``class_names`` class k is
    num_codes + 1 + k. Saved as the prior run's tokenizer.json, it also remembers which VQ-VAE run decodes
    the codes and the grid they fill."""

    type: ClassVar[str] = "codes"

    def __init__(self, num_codes: int, grid: Sequence[int], run: str, class_names: Sequence[str] = ()):
        if num_codes < 1 or len(grid) != 2 or min(grid) < 1:
            raise DataError(f"a code tokenizer needs num_codes >= 1 and a (height, width) grid, got {num_codes}, {grid}")
        self.num_codes, self.grid, self.run = int(num_codes), (int(grid[0]), int(grid[1])), str(run)
        self.class_names = tuple(str(name) for name in class_names)

    @property
    def vocab_size(self) -> int:
        return self.num_codes + 1 + len(self.class_names)

    @property
    def class_tokens(self) -> int:
        """Class tokens per row: 1 when each grid follows its class, else 0."""
        return 1 if self.class_names else 0

    @property
    def row_tokens(self) -> int:
        """Tokens of one image after its end-of-text: its class (when there are class tokens), then its grid."""
        return self.class_tokens + self.grid_tokens

    def class_id(self, k: int) -> int:
        return self.num_codes + 1 + int(k)

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
        """Codes written as text ("12 5 7", a class first as "<7>"): the inverse of ``decode``, for prompts."""
        ids = []
        for part in text.split():
            if part.startswith("<") and part.endswith(">") and part[1:-1] in self.class_names:
                ids.append(self.class_id(self.class_names.index(part[1:-1])))
                continue
            try:
                code = int(part)
            except ValueError:
                raise DataError(f"a code prompt is whitespace-separated code numbers, got {text[:40]!r}") from None
            if not 0 <= code < self.num_codes:
                raise DataError(f"codes must be in 0..{self.num_codes - 1}")
            ids.append(code + 1)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array(self.encode(t), dtype=np.int64) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """The codes as text, for display: space-separated numbers, a class as "<name>"; end-of-text is dropped."""
        return " ".join(self.token_text(i) for i in (int(i) for i in ids) if i != END_OF_TEXT)

    def token_text(self, token_id: int) -> str:
        if token_id > self.num_codes:
            return f"<{self.class_names[token_id - self.num_codes - 1]}>"
        return str(token_id - 1)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode()

    def token_bytes(self, token_id: int) -> bytes:
        return b"" if token_id == END_OF_TEXT else self.token_text(token_id).encode()

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.type, "num_codes": self.num_codes, "grid": list(self.grid), "run": self.run}
        return {**d, "class_names": list(self.class_names)} if self.class_names else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CodeTokenizer":
        return cls(int(d["num_codes"]), d["grid"], str(d["run"]), d.get("class_names", ()))

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CodeTokenizer":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodeTokenizer) and self.to_dict() == other.to_dict()


def open_vq_run(path: Path) -> Run:
    """The VQ-VAE run a codes source or a prior decodes through, with a one-line error when it is not one."""
    run = Run.open(path)
    if run.config.family != "vqvae":
        raise DataError(f"codes:{path} must be a vqvae run (genforge train --family vqvae ...); it is a "
                        f"'{run.config.family}' run")
    return run


def vq_images(path: Path, progress: bool = True) -> tuple[str, Prepared]:
    """The images the VQ-VAE run at ``path`` was trained on, prepared as it was, and their source's name."""
    from genforge.modalities.prepare import prepare

    data = open_vq_run(path).config.data
    return data.source, prepare(data.source, data, progress=progress)


class CodesModality(TokenStreams):
    name = "codes"
    path_forms = {"codes": "codes:RUN (a trained vqvae run's images as code grids, for a transformer prior)"}
    scorer = "genforge.evaluate.scorers.codes:CodesScorer"
    model_kind = "codes"  # runs load as models.CodesModel: samples are the VQ-VAE's data; an input is continued
    scores_as = "image"  # decoded samples are scored like an image run on the VQ-VAE's data
    # new priors learn each grid after its class token (where the VQ-VAE's images have labels). On mnist
    # (the README's recipe, one VQ-VAE, the prior trained 1.3 CPU minutes, images shown at T = 0.7, n =
    # 1,000) FD in the classifier's / a random network's features went from 7.95 / 38.8 to 6.44 / 37.9
    data_defaults = {"class_tokens": True}
    default_eval_n = 1000
    training_eval_n = 200
    report = ImageModality.report

    def check_path(self, source: Source) -> None:
        if not (source.path / "model.safetensors").is_file():
            raise DataError(f"data source '{source.canonical}': {source.path} is not a trained run (no model.safetensors); "
                            "expected a vqvae run made by `genforge train --family vqvae`")

    def source_files(self, source: Source) -> list[Path]:
        # the VQ-VAE's weights and config: retrain it and the codes are rebuilt
        return [source.path / "model.safetensors", source.path / "config.yaml"]

    def check_config(self, source: Source, cfg: DataConfig) -> None:
        if cfg.fim_rate or cfg.tokenizer != "char":
            raise ConfigError(f"'{source.canonical}' is a VQ-VAE's code grids: its tokens are the codes, so --tokenizer and "
                              "--fim-rate do not apply")

    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        # the VQ-VAE's own split and code book decide the rest; grids without class tokens keep the key
        # they had before the option, so a prior made then finds its codes unchanged
        return {"codes": True, **({"class_tokens": True} if cfg.class_tokens else {})}

    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        return write_codes(tmp, source, progress, class_tokens=bool(params.get("class_tokens")))

    def load_tokenizer(self, path: Path) -> "CodeTokenizer":
        return load_tokenizer(path, {CodeTokenizer.type: CodeTokenizer.from_dict})

    def assemble(self, entry: Entry, source: Source, cfg: DataConfig) -> Prepared:
        tokenizer = entry.tokenizer
        grid, row = tokenizer.grid, tokenizer.row_tokens + 1
        if cfg.block_size < row:
            plus = " and its class token" if tokenizer.class_tokens else ""
            raise ConfigError(f"data.block_size must be at least {row} for codes:{source.path} (one {grid[0]}x{grid[1]} "
                              f"code grid plus the end-of-text token{plus}), got {cfg.block_size}")
        train, val = self.windows(entry, source, cfg)
        spec = DataSpec(self.name, (cfg.block_size,), vocab_size=entry.tokenizer.vocab_size)
        return Prepared(spec, train, val, entry.tokenizer, entry.manifest, entry.path)

    def adopts(self, spec: DataSpec, run_path: Path) -> bool:
        return spec.modality == "text" and tokenizer_type(run_path / "tokenizer.json") == CodeTokenizer.type

    def sample_options(self, spec: DataSpec, tokenizer: "CodeTokenizer") -> dict:
        return {"prompt": [tokenizer.eot_id], "max_new_tokens": tokenizer.row_tokens}

    def codec(self, spec: DataSpec, tokenizer: "CodeTokenizer") -> "CodesCodec":
        if tokenizer is None:
            raise DataError("a prior over VQ-VAE codes needs its tokenizer.json (it names the VQ-VAE run); it is missing")
        return CodesCodec(tokenizer)


@torch.no_grad()
def write_codes(tmp: Path, source: Source, progress: bool = True, class_tokens: bool = False) -> dict:
    """Encode the VQ-VAE run's training and validation images into token streams in ``tmp``: per image its
    end-of-text, its class token (``class_tokens``, when the images have labels), then its grid row by row."""
    from tqdm.auto import tqdm

    family = open_vq_run(source.path).load_family("cpu")
    _, images = vq_images(source.path, progress)
    names = images.spec.class_names if class_tokens and images.spec.num_classes else ()
    tokenizer = CodeTokenizer(family.num_codes, family.code_grid, str(source.path), names)
    tokenizer.save(tmp / "tokenizer.json")
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    sizes, width = {}, tokenizer.row_tokens + 1
    for split, data in (("train", images.train), ("val", images.val)):
        n = len(data)
        stream = np.empty(n * width, dtype=dtype)
        with tqdm(total=n, desc=f"encoding {split} images to codes", disable=not progress, unit="img") as bar:
            for lo in range(0, n, 256):
                batch = data.get(slice(lo, min(lo + 256, n)))
                codes = family.encode_codes(batch["x"]).reshape(len(batch["x"]), -1).numpy() + 1
                head = [np.zeros((len(codes), 1), np.int64)]
                if tokenizer.class_tokens:
                    head.append(tokenizer.class_id(0) + batch["y"].numpy().reshape(-1, 1).astype(np.int64))
                stream[lo * width:(lo + len(codes)) * width] = np.concatenate([*head, codes], axis=1).reshape(-1)
                bar.update(len(codes))
        stream.tofile(tmp / f"{split}.bin")
        sizes[split] = int(stream.size)
    return {
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
    """Token ids of a prior over code grids -> the VQ-VAE's data (images; log-mel clips), decoded through the
    VQ-VAE run and written by that data's own codec (PNG files; WAV files with spectrograms)."""

    def __init__(self, tokenizer: CodeTokenizer):
        self.tokenizer = tokenizer
        self._vq = None
        self._data_codec = None

    @property
    def vq(self):
        if self._vq is None:
            path = Path(self.tokenizer.run)
            if not path.is_dir():
                raise DataError(f"this prior decodes its codes through the VQ-VAE run {path}, which is missing; "
                                "restore it (or retrain the prior on codes of a run that exists)")
            self._vq = open_vq_run(path).load_family("cpu")
        return self._vq

    @property
    def data_codec(self):
        """The codec of the VQ-VAE's data (an image run's ``ImageCodec``, an audio run's ``AudioCodec``)."""
        if self._data_codec is None:
            from genforge.modalities.registry import run_modality

            modality, data_tokenizer = run_modality(open_vq_run(Path(self.tokenizer.run)))
            self._data_codec = modality.codec(self.vq.spec, data_tokenizer)
        return self._data_codec

    @property
    def suffix(self) -> str:
        return self.data_codec.suffix

    def decode_images(self, tokens: torch.Tensor, prompt_len: int = 1) -> torch.Tensor:
        """(n, prompt_len + row tokens) ids -> (n, C, H, W) images in [-1, 1]: the grid after the prompt and
        the class token drawn first (a prior with class tokens). An end-of-text or class token drawn inside
        a grid (rare once the prior is trained) stands for code 0."""
        start = prompt_len + self.tokenizer.class_tokens
        grid_tokens = self.tokenizer.grid_tokens
        ids = tokens[:, start:start + grid_tokens].detach().cpu().long()
        if ids.shape[1] != grid_tokens:
            raise DataError(f"a code grid needs {grid_tokens} tokens after the prompt, got {ids.shape[1]}")
        codes = (ids - 1).clamp(min=0)
        codes = torch.where(codes < self.tokenizer.num_codes, codes, 0).view(-1, *self.tokenizer.grid)
        return self.vq.decode_codes(codes).float().cpu()

    def decode(self, tokens: torch.Tensor) -> Any:
        """Sampled ids (end-of-text, then one grid) -> the items users get (images; clips)."""
        return self.data_codec.decode(self.decode_images(tokens, prompt_len=1))

    def item_shape(self, spec: DataSpec) -> tuple[int, ...]:
        return self.data_codec.item_shape(self.vq.spec)  # the VQ-VAE's data, not the prior's token windows

    def save(self, tokens: torch.Tensor, out_dir, params: dict, prompt_len: int = 1) -> list[Path]:
        return self.data_codec.save(self.decode_images(tokens, prompt_len), out_dir, params)

    def write_items(self, items: Any, out_dir, params: dict, start: int = 0) -> list[Path]:
        return self.data_codec.write_items(items, out_dir, params, start)

    def finish(self, items: Any, out_dir, params: dict) -> None:
        self.data_codec.finish(items, out_dir, params)

    def grid(self, tokens: torch.Tensor, path, params: dict, prompt_len: int = 1) -> Path:
        return self.data_codec.grid(self.decode_images(tokens, prompt_len), Path(path).with_suffix(self.suffix), params)
