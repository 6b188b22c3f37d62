"""Audio: short clips (sound effects, speech, notes) from a folder of audio files (``wav:PATH``) or the built-in
``spoken-digits`` set, the words "zero" to "nine" spoken by espeak-ng (made offline, the same on every machine:
``data/spoken_digits.py``), in the spirit of SC09, the one-second spoken digits of WaveGAN and DiffWave.

Every clip is read once (``data/audio_io.py``: soundfile for WAV, FLAC, OGG; mixed to mono, resampled to
``data.sample_rate``, cut or padded to ``data.clip_seconds``), labelled by its sub-folder (or its digit), split
by a fixed-seed shuffle, and stored in one of two representations (``data.representation``):

- ``mel`` (every family; new runs' default): a log-mel spectrogram, 64 frames a second by 64 mel bands, as a
  1 x frames x 64 uint8 image with time running down the rows (``data/audio_dsp.py``), so the image families
  (the UNet's diffusion, the GAN as SpecGAN, the VAE, the VQ-VAE and its transformer prior) train on it as on
  pictures. Samples become sound through Griffin-Lim phase reconstruction.
- ``waveform`` (diffusion, with DiffWave's 1-D denoiser): the clip's 16-bit samples, (1, samples).

Samples are written as ``000000.wav`` with a spectrogram ``000000.png`` beside it (``data/audio_codec.py``);
training grids as ``samples/step_*.png`` and a ``.wav`` of their first clips, which the report plays.
Scored by ``evaluate/scorers/audio.py``: a spoken-digit-style classifier trained on the data's own mels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from genforge.config import DataConfig
from genforge.data.cache import CorruptEntry, Entry, load_npy
from genforge.data.sources import Source
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError, DataError
from genforge.modalities.base import Modality, Prepared, ReportStyle

REPRESENTATIONS = ("mel", "waveform")
SAMPLE_RATES = (4_000, 48_000)  # Hz a run may learn at
MAX_CLIP_SECONDS = 30.0
MIN_CLIP_SECONDS = 0.125  # eight mel frames
MAX_CLIPS = 1_000_000
ENCODE_BATCH = 256  # clips turned into mels at once while preparing


class AudioModality(Modality):
    name = "audio"
    unit = "clip"
    builtin_sources = {"spoken-digits": "the words zero..nine spoken by espeak-ng's voices, 3,000 one-second "
                                        "16 kHz clips, 10 classes (made offline)"}
    path_forms = {"wav": "wav:PATH (a folder of WAV/FLAC/OGG files, one sub-folder per class for labels, or one file)"}
    model_kind = "audio"
    # a log-mel image is continuous: the VAE's default binarisation (and its sharpened view of binary pixels)
    # would turn speech into on/off blocks
    family_defaults = {"vae": {"binarize": False, "decoder_temperature": 1.0}}
    scorer = "genforge.evaluate.scorers.audio:AudioScorer"
    default_eval_n = 250  # spoken-digits holds out 300 clips: the real-data row exists at the default
    training_eval_n = 100
    report = ReportStyle(
        title="Audio",
        columns=("fd", "classifier_score", "fd_random", "kid", "precision", "recall", "mel_distance", "mel_std_ratio",
                 "silent"),
        lower_is_better=frozenset({"fd", "fd_random", "kid", "mel_distance", "silent"}),
        notes=(
            "Samples and real clips are compared as log-mel spectrograms (waveform runs' samples are analysed the "
            "same way), in the features of a small classifier trained on the data's own labelled mels (the SC09 "
            "protocol, offline; an autoencoder's code when the data has no labels).",
            "fd: Fréchet distance in those features; classifier_score: exp(E KL(p(y|x) || p(y))), the Inception "
            "Score of SC09 papers (up to the number of classes; higher is better); fd_random: Fréchet distance in a "
            "randomly initialised network's features, a second, training-free view; kid, precision, recall as for "
            "images.",
            "mel_distance: mean absolute difference (dB) of the per-band mean log-mel level; mel_std_ratio: the "
            "samples' per-band spread over the real clips' (1 best); silent: share of samples with no sound.",
            "The reference row scores real held-out clips exactly like samples: the best a model can expect.",
        ),
        shows="grid",
    )

    def defaults_for(self, accepts: tuple[str, ...]) -> dict:
        """Mel spectrograms, which every family reads as images; a waveform run is asked for by name."""
        return {**self.data_defaults, "representation": "mel"}

    def kind_of(self, cfg: DataConfig | None) -> str | None:
        return "waveform" if cfg is not None and cfg.representation == "waveform" else "image"

    # ---- sources ----------------------------------------------------------------------------------
    def check_path(self, source: Source) -> None:
        from genforge.data.audio_io import AUDIO_SUFFIXES, audio_files

        if not audio_files(source.path):
            raise DataError(f"data source '{source.canonical}': no audio files in {source.path}; expected "
                            f"{', '.join(AUDIO_SUFFIXES)} files")

    def source_files(self, source: Source) -> list[Path] | None:
        from genforge.data.audio_io import audio_files

        return None if source.path is None else audio_files(source.path)

    # ---- preparation ------------------------------------------------------------------------------
    def check_config(self, source: Source, cfg: DataConfig) -> None:
        if cfg.tokenizer != "char" or cfg.fim_rate:
            raise ConfigError(f"'{source.canonical}' is audio: --tokenizer and --fim-rate apply to text sources")
        representation(cfg)
        clip_samples(cfg)
        if isinstance(cfg.clips, bool) or not isinstance(cfg.clips, int) or not 0 <= cfg.clips <= MAX_CLIPS:
            raise ConfigError(f"data.clips must be a whole number from 0 (all clips) to {MAX_CLIPS:,}, got {cfg.clips!r}")

    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        return {"representation": representation(cfg), "sample_rate": int(cfg.sample_rate),
                "clip_samples": clip_samples(cfg), "val_fraction": float(cfg.val_fraction),
                **({"clips": int(cfg.clips)} if cfg.clips else {})}

    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        from genforge.data.audio_dsp import MelFormat
        from genforge.data.images import split_indices
        from genforge.io import atomic_write_json

        data = read_clips(source, params, progress)
        mel = MelFormat(params["sample_rate"], params["clip_samples"])
        atomic_write_json(tmp / "tokenizer.json", mel.to_dict())
        train_idx, val_idx = split_indices(len(data.waves), params["val_fraction"])
        sizes = {}
        for split, idx in (("train", train_idx), ("val", val_idx)):
            waves = data.waves[idx]
            if params["representation"] == "mel":
                np.save(tmp / f"{split}_images.npy", mel_images(mel, waves, progress))
            else:
                np.save(tmp / f"{split}_waves.npy", pcm16(waves)[:, None, :])
            if data.labels is not None:
                np.save(tmp / f"{split}_labels.npy", data.labels[idx].astype(np.int64))
            sizes[split] = int(len(idx))
        shape = list(mel.shape) if params["representation"] == "mel" else [1, params["clip_samples"]]
        labelled = data.labels is not None
        return {"representation": params["representation"], "shape": shape, "sizes": sizes,
                "sample_rate": params["sample_rate"], "clip_samples": params["clip_samples"],
                "num_classes": len(data.class_names) if labelled else None,
                "class_names": list(data.class_names) if labelled else [],
                "skipped": list(data.skipped), "notes": list(data.notes)}

    def read(self, path: Path, manifest: dict) -> Entry:
        mel = manifest.get("representation") == "mel"
        name, dtype = ("images", np.uint8) if mel else ("waves", np.int16)
        shape = tuple(manifest["shape"])
        arrays = {}
        for split in ("train", "val"):
            n = manifest["sizes"][split]
            items = load_npy(path / f"{split}_{name}.npy")
            if items.dtype != dtype or items.shape != (n, *shape):
                raise CorruptEntry(f"{split}_{name}.npy holds {items.dtype} {items.shape}, expected "
                                   f"{np.dtype(dtype).name} {(n, *shape)}")
            arrays[split] = items
            if manifest["num_classes"] is not None:
                labels = load_npy(path / f"{split}_labels.npy")
                if labels.dtype != np.int64 or labels.shape != (n,) or (n and not (
                        0 <= labels.min() and labels.max() < manifest["num_classes"])):
                    raise CorruptEntry(f"{split}_labels.npy does not hold a label per clip")
                arrays[f"{split}_labels"] = labels
        try:
            mel_format = self.load_tokenizer(path / "tokenizer.json")
        except (DataError, OSError) as e:
            raise CorruptEntry(f"tokenizer.json unreadable ({e})") from None
        return Entry(path, manifest, arrays, mel_format)

    def load_tokenizer(self, path: Path):
        """The run's ``MelFormat`` (how its clips become spectrograms and back), kept as its tokenizer.json."""
        from genforge.data.audio_dsp import MelFormat
        from genforge.data.tokenizers import load_tokenizer

        return load_tokenizer(path, {"melformat": MelFormat.from_dict})

    def assemble(self, entry: Entry, source: Source, cfg: DataConfig) -> Prepared:
        from genforge.data.datasets import ImageDataset, WaveDataset

        m, names = entry.manifest, list(entry.manifest["class_names"])
        kind = ImageDataset if m["representation"] == "mel" else WaveDataset
        train, val = (kind(entry.arrays[split], entry.arrays.get(f"{split}_labels"), names,
                           name=f"the {split} split of {source.canonical}") for split in ("train", "val"))
        spec = DataSpec(self.name, tuple(m["shape"]), num_classes=m["num_classes"], class_names=names)
        return Prepared(spec, train, val, entry.tokenizer, m, entry.path)

    # ---- runs -------------------------------------------------------------------------------------
    def grid_items(self, grid_size: int) -> int:
        return min(16, grid_size)

    def codec(self, spec: DataSpec, tokenizer):
        from genforge.data.audio_codec import AudioCodec

        if tokenizer is None:
            raise DataError("audio runs need their tokenizer.json (the spectrogram settings) to write samples; "
                            "it is missing")
        return AudioCodec(tokenizer, waveform=spec.kind == "waveform")


def representation(cfg: DataConfig) -> str:
    """``data.representation`` for audio; DataConfig's own default ("events", music's) means mel here."""
    value = "mel" if cfg.representation == "events" else cfg.representation
    if value not in REPRESENTATIONS:
        raise ConfigError(f"data.representation must be one of {', '.join(REPRESENTATIONS)} for audio, "
                          f"got {cfg.representation!r}")
    return value


def clip_samples(cfg: DataConfig) -> int:
    """Samples per clip: ``data.clip_seconds`` at ``data.sample_rate``, both checked."""
    rate, seconds = cfg.sample_rate, cfg.clip_seconds
    low, high = SAMPLE_RATES
    if isinstance(rate, bool) or not isinstance(rate, int) or not low <= rate <= high:
        raise ConfigError(f"data.sample_rate must be a whole number of Hz from {low:,} to {high:,}, got {rate!r}")
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds)
            or not MIN_CLIP_SECONDS <= seconds <= MAX_CLIP_SECONDS):
        raise ConfigError(f"data.clip_seconds must be a number of seconds from {MIN_CLIP_SECONDS} to "
                          f"{MAX_CLIP_SECONDS:g}, got {seconds!r}")
    return int(round(seconds * rate))


def read_clips(source: Source, params: dict, progress: bool):
    """The source's clips as ``audio_io.AudioData`` (float32 (N, samples), labels or None)."""
    limit = params.get("clips") or None
    if source.path is None:
        from genforge.data import spoken_digits

        count = min(limit or spoken_digits.DEFAULT_CLIPS, spoken_digits.DEFAULT_CLIPS)
        return spoken_digits.generate(count, params["sample_rate"], params["clip_samples"], progress)
    from genforge.data.audio_io import load_folder

    return load_folder(source.path, params["sample_rate"], params["clip_samples"], progress, limit=limit)


def mel_images(mel, waves: np.ndarray, progress: bool) -> np.ndarray:
    """uint8 (N, 1, frames, n_mels) log-mel images of float32 clips (N, samples), a batch at a time."""
    import torch
    from tqdm.auto import tqdm

    out = np.zeros((len(waves), *mel.shape), dtype=np.uint8)
    with tqdm(total=len(waves), desc="log-mel spectrograms", unit="clip", disable=not progress, leave=False) as bar:
        for lo in range(0, len(waves), ENCODE_BATCH):
            out[lo:lo + ENCODE_BATCH] = mel.to_uint8(torch.from_numpy(waves[lo:lo + ENCODE_BATCH]))
            bar.update(len(waves[lo:lo + ENCODE_BATCH]))
    return out


def pcm16(waves: np.ndarray) -> np.ndarray:
    """float clips in [-1, 1] -> int16 samples (the WAV convention: x * 32768, clipped)."""
    return np.clip(np.round(waves.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mel_view(prepared: Prepared, progress: bool = False) -> Prepared:
    """A prepared audio source as log-mel images: itself for a mel run; for a waveform run, the same clips
    prepared as mels (their own cache entry), so both kinds of run are scored against one reference with one
    feature network."""
    if prepared.manifest.get("representation") == "mel":
        return prepared
    from genforge.modalities.prepare import prepare

    params = prepared.manifest["params"]
    cfg = DataConfig(source=prepared.manifest["source"], representation="mel", sample_rate=params["sample_rate"],
                     clip_seconds=params["clip_samples"] / params["sample_rate"], val_fraction=params["val_fraction"],
                     clips=params.get("clips", 0))
    return prepare(cfg.source, cfg, progress=progress)
