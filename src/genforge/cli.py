"""The ``genforge`` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from genforge.errors import ConfigError, GenforgeError

app = typer.Typer(
    help="Train GANs, VAEs, Transformers and Diffusion models on your own data; sample, inspect and compare them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="List and prepare data sources (decoded once, cached under GENFORGE_CACHE).", no_args_is_help=True)
app.add_typer(data_app, name="data")

FAMILY_HELP = "Model family: diffusion, gan, vae, vqvae or transformer."
SOURCE_HELP = ("Built-in name (digits, mnist, pycode, breast_cancer, ...: see `genforge data list`) or folder:PATH "
               "(images), text:PATH (a text file or folder), csv:PATH or parquet:PATH (a table).")


TOKENIZER_HELP = "Text sources: char (one id per character, the default) or bpe (byte-level BPE trained on the data)."
VOCAB_SIZE_HELP = "With --tokenizer bpe: vocabulary size, 260 or more (default 4096)."
SAMPLER_HELP = "ddpm, ddim, euler, heun or dpmpp_2m (default: the run's, ddim)"
SPACING_HELP = "noise levels to visit: trailing (default), uniform or karras"
GUIDANCE_HELP = "classifier-free guidance for class-conditional runs: 0 unconditional, 1 conditional (default), >1 stronger"
CODE_STOP_HELP = ("off, trim, block or auto: block ends a sample before the first top-level statement after a "
                  "complete block (def, class, if, ...); trim and block drop the last, maybe unfinished, top-level "
                  "statement of a sample cut by --max-new-tokens; auto is block for Python data (default: the run's "
                  "model.code_stop)")


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)


PACKAGE_DIR = Path(__file__).resolve().parent
_default_format_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """genforge's own warnings (a skipped file, a column left out) as one `warning:` line: what was worked
    around, not where in genforge's code; other libraries' warnings as Python shows them."""
    if Path(filename).resolve().is_relative_to(PACKAGE_DIR):
        return f"warning: {message}\n"
    return _default_format_warning(message, category, filename, lineno, line)


def _tokenizer_overrides(tokenizer: str | None, vocab_size: int | None) -> list[str]:
    """--tokenizer / --vocab-size as data.* overrides; --vocab-size only means something for BPE."""
    from genforge.errors import ConfigError

    if vocab_size is not None and tokenizer != "bpe":
        raise ConfigError(f"--vocab-size sets the size of a BPE vocabulary; add --tokenizer bpe (got --tokenizer {tokenizer or 'char'})")
    out = [] if tokenizer is None else [f"data.tokenizer={tokenizer}"]
    return out + ([] if vocab_size is None else [f"data.vocab_size={vocab_size}"])


SAMPLE_RATE_HELP = "Audio sources: resample every clip to this rate in Hz (default 16000)."
CLIP_SECONDS_HELP = "Audio sources: cut or pad every clip to this many seconds (default 1.0)."


def _audio_overrides(sample_rate: int | None, clip_seconds: float | None) -> list[str]:
    return ([] if sample_rate is None else [f"data.sample_rate={sample_rate}"]) + (
        [] if clip_seconds is None else [f"data.clip_seconds={clip_seconds}"])


@app.command()
def train(
    family: Optional[str] = typer.Option(None, "--family", "-f", help=FAMILY_HELP),
    data: Optional[str] = typer.Option(None, "--data", "-d", help=SOURCE_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to create (or to continue with --resume)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimisation steps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Items per step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop (and checkpoint) after this many minutes."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for initialisation, batches and noise."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="folder: sources: resize and centre-crop to this size."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Score samples every K steps (eval/* in metrics.jsonl and TensorBoard)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help=VOCAB_SIZE_HELP),
    doc_starts: Optional[float] = typer.Option(None, "--doc-starts", help="Text: share of training windows that begin at a document's start (0..1), so short runs on a corpus of many files learn how a file opens (the demo's code run: 0.5)."),
    fim_rate: Optional[float] = typer.Option(None, "--fim-rate", help="Text: share of training windows rearranged for fill-in-the-middle (0..1), for `genforge refine --prefix-file/--suffix-file`."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help=SAMPLE_RATE_HELP),
    clip_seconds: Optional[float] = typer.Option(None, "--clip-seconds", help=CLIP_SECONDS_HELP),
    sets: list[str] = typer.Option([], "--set", "-s", help="Override any config value: section.key=value (sections: data, train, model)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Train in N processes on this machine (torchrun "
                                        "--standalone --nproc_per_node N), each on --batch-size items a step; "
                                        "N GPUs when there are, else CPU processes."),
    max_restarts: Optional[int] = typer.Option(None, "--max-restarts", help="With --nproc: after a process fails, "
                                               "start them all again up to this many times; each restart continues "
                                               "from the last checkpoint."),
) -> None:
    """Train a model: `genforge train --family diffusion --data mnist --out runs/diff`.

    Several processes: `genforge train --nproc 2 ...`, or torchrun itself (`torchrun --nproc_per_node 8 -m
    genforge train ...`, and `--nnodes`/`--rdzv-endpoint` for several machines)."""
    from genforge.api import train as train_run

    if nproc is not None:
        from genforge.launch import launch_torchrun

        raise typer.Exit(launch_torchrun(nproc, sys.argv[1:], max_restarts or 0))
    if max_restarts is not None:
        raise ConfigError("--max-restarts applies with --nproc (under torchrun itself, use its own --max-restarts)")

    overrides = list(sets)
    if image_size is not None:
        overrides.append(f"data.image_size={image_size}")
    overrides += _tokenizer_overrides(tokenizer, vocab_size)
    if fim_rate is not None:
        overrides.append(f"data.fim_rate={fim_rate}")
    if doc_starts is not None:
        overrides.append(f"data.doc_starts={doc_starts}")
    overrides += _audio_overrides(sample_rate, clip_seconds)
    result = train_run(
        family, data, out, steps=steps, overrides=overrides, resume=resume, progress=not quiet,
        batch_size=batch_size, lr=lr, max_minutes=max_minutes, device=device, seed=seed, eval_every=eval_every,
        log=_echo_err,
    )
    if not result.main_process:  # one of several processes: rank 0 reports
        return
    if result.stopped_by == "interrupted":
        _echo_err(f"interrupted at step {result.step}; checkpoint saved. Continue with: genforge train --out {out} --resume")
        raise typer.Exit(130)
    note = "" if result.stopped_by == "done" else f" (stopped by {result.stopped_by})"
    typer.echo(f"trained {result.run.config.family} for {result.step} steps in {result.seconds:.0f}s{note}; run: {out}")
    if result.bad_steps:
        typer.echo(f"skipped {result.bad_steps} step(s) with a non-finite loss")
    if result.warnings:
        typer.echo(f"{len(result.warnings)} training-health warning(s), also in {out / 'metrics.jsonl'}")


@app.command()
def sample(
    run: Path = typer.Argument(..., help="Run directory made by `genforge train`."),
    n: int = typer.Option(16, "-n", "--num", help="How many samples."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same settings, same machine: same output."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN/generated/seed-S)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Text runs: the text to continue."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Music runs: a MIDI or MusicXML file "
                                               "whose notes every sample continues (melody.mid)."),
    label: Optional[str] = typer.Option(None, "--label", "-l", help="Class-conditional runs: a class id or name."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Diffusion: number of sampling steps."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=f"Diffusion: {SAMPLER_HELP}."),
    spacing: Optional[str] = typer.Option(None, "--spacing", help=f"Diffusion: {SPACING_HELP}."),
    eta: Optional[float] = typer.Option(None, "--eta", help="Diffusion, ddim sampler: 0 deterministic, 1 fresh noise each step (DDPM-like)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", "-g", help=f"Diffusion: {GUIDANCE_HELP}."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help="GAN: pull latents toward the mean, psi in [0, 1] (1 = off)."),
    interpolate: Optional[str] = typer.Option(None, "--interpolate", help="GAN: SEED,SEED (a strip of -n images) or 4 seeds (an n x n grid) to walk between."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Text runs: tokens to generate."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Text runs and table transformer runs: sampling temperature."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Text runs: keep only the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Text runs and table transformer runs: keep the most likely tokens whose probabilities add up to p, in (0, 1]."),
    min_p: Optional[float] = typer.Option(None, "--min-p", help="Text runs: drop tokens less likely than min_p times the most likely one, in [0, 1]."),
    repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", help="Text runs: > 1 makes tokens already in the text less likely (1 = off)."),
    stop: list[str] = typer.Option([], "--stop", help="Text runs: end a sample before this string (repeatable)."),
    code_stop: Optional[str] = typer.Option(None, "--code-stop", help=f"Python code runs: {CODE_STOP_HELP}."),
    where: list[str] = typer.Option([], "--where", "-w", help="Table runs: only rows with these categories, "
                                    "COLUMN=VALUE (repeatable, or \"a=x,b=y\"; booleans true/false)."),
    constraint: list[str] = typer.Option([], "--constraint", help="Table runs: only rows meeting this constraint, "
                                         "on top of the run's own (repeatable): \"age >= 30\", \"low <= high\", "
                                         "\"total = a + b\"."),
    audio: bool = typer.Option(False, "--audio", help="Music runs: also render each piece to a .wav (FluidSynth with "
                               "a General MIDI SoundFont when installed, else a built-in additive synthesiser)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
) -> None:
    """Generate samples from a trained run; one file per sample (PNG, TXT, CSV, MID, WAV), plus grid.png.

    One text sample (-n 1) is printed while it is generated; more are printed once all are done."""
    from genforge.api import load

    model = load(run, device=device)
    if prompt is not None and model.prompt_is_file:
        from genforge.errors import ConfigError

        raise ConfigError(f"--prompt takes text and applies to text runs; {run} continues a file it reads "
                          "(genforge refine RUN --input FILE)")
    if prompt_file is not None:
        from genforge.errors import ConfigError

        if not model.prompt_is_file:
            raise ConfigError(f"--prompt-file applies to music runs; {run} holds {model.spec.modality} data"
                              + (" (use --prompt TEXT)" if model.offers("continue") else ""))
        if prompt is not None:
            raise ConfigError("give --prompt or --prompt-file, not both")
        prompt = str(prompt_file)
    if interpolate is not None:
        from genforge.refine import sample_interpolation

        done = sample_interpolation(model, interpolate, n=n, label=label, truncation=truncation, out=out)
        typer.echo(f"wrote {len(done.paths)} interpolated images to {done.out}")
        return
    conditions = {"label": label, "steps": steps, "sampler": sampler, "spacing": spacing, "eta": eta,
                  "guidance": guidance, "truncation": truncation, "max_new_tokens": max_new_tokens, "temperature": temperature,
                  "top_k": top_k, "top_p": top_p, "min_p": min_p, "repetition_penalty": repetition_penalty,
                  "code_stop": code_stop, "where": where or None, "constraints": constraint or None}
    conditions = {k: v for k, v in conditions.items() if v is not None}
    out = out or (run / "generated" / f"seed-{seed}")
    streaming = n == 1 and model.offers("stream")
    started = False

    def show(piece: str) -> None:
        nonlocal started
        if not started:  # after the settings were checked, so a bad one prints nothing but its error
            typer.echo("--- 000000.txt")
            started = True
        typer.echo(piece, nl=False)  # click.echo flushes: the piece shows now

    paths = model.save_samples(n, out, seed=seed, prompt=prompt, stop=stop or None,
                               on_piece=show if streaming else None, outputs={"audio": True} if audio else None,
                               **conditions)
    if streaming:
        if not started:
            typer.echo(f"--- {paths[0].name}")
        typer.echo("")
    elif model.codec.suffix == ".txt":
        for p in paths:
            typer.echo(f"--- {p.name}")
            typer.echo(p.read_text(encoding="utf-8"))
    typer.echo(f"wrote {len(paths)} samples to {out}")


@app.command()
def refine(
    run: Path = typer.Argument(..., help="Run directory made by `genforge train`."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Image runs: the image to refine (resized to the run's shape). Music runs: the piece (MIDI/MusicXML) to continue (transformer) or whose first four bars to refine (piano-roll runs). Audio runs: the clip (WAV, FLAC, OGG, ...) to refine or continue."),
    mask: Optional[Path] = typer.Option(None, "--mask", "-m", help="Image runs: inpaint where this image is white; black pixels are kept. Music diffusion runs: the bars to regenerate, e.g. 2 or 2-3. Audio runs: the span of time to regenerate in seconds, e.g. 0.25-0.5, or 0.5- to the end (a prior over VQ-VAE codes continues from its start)."),
    strength: Optional[float] = typer.Option(None, "--strength", "-s", help="Image runs: how far results move from the input, 0 (keep it) to 1 (ignore it): diffusion img2img, GAN/VAE variations (default 0.3)."),
    n: int = typer.Option(4, "-n", "--num", help="Image runs: how many variations."),
    towards: Optional[Path] = typer.Option(None, "--towards", help="GAN/VAE: a second image (or piece, for music); writes -n results walking from --input to it in latent space."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="GAN/VAE: SOURCE:TARGET labels; moves --input along the mean-latent difference, -n steps up to --strength (default 1.5)."),
    prefix_file: Optional[Path] = typer.Option(None, "--prefix-file", help="Text runs: the text before the gap."),
    suffix_file: Optional[Path] = typer.Option(None, "--suffix-file", help="Text runs: the text after the gap."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write (default RUN/refined/...)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same settings, same machine: same output."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Diffusion: sampling steps of the whole noise ladder; GAN: inversion steps (default 300; a VAE encodes in one pass)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=f"Image runs: {SAMPLER_HELP}."),
    label: Optional[str] = typer.Option(None, "--label", "-l", help="Class-conditional runs: a class id or name."),
    guidance: Optional[float] = typer.Option(None, "--guidance", "-g", help=f"Image runs: {GUIDANCE_HELP}."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Text runs: longest middle, in tokens."),
    temperature: float = typer.Option(0.8, "--temperature", help="Text runs: sampling temperature (0: greedy)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Text runs: keep only the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Text runs: nucleus sampling: keep the smallest set of tokens with this much probability."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
) -> None:
    """Refine content. Diffusion: inpaint with --input and --mask, or img2img with --input and --strength.
    GAN/VAE: encode --input into the latent space and draw variations around it (--strength), walk to
    another image (--towards) or along an attribute (--attribute).
    Code: fill in the middle between --prefix-file and --suffix-file (a run trained with --fim-rate).
    Music: the transformer continues the piece in --input (a MIDI or MusicXML file) -n times; piano-roll runs
    refine its first four bars as image runs refine a picture (--mask BARS for diffusion)."""
    from genforge.api import load
    from genforge.refine import refine as refine_run

    text_mode = prefix_file is not None or suffix_file is not None
    prefix = _read_text_option(prefix_file, "--prefix-file") if text_mode else None
    suffix = _read_text_option(suffix_file, "--suffix-file") if text_mode else None
    settings = ({"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p}
                if text_mode else {"steps": steps, "sampler": sampler, "label": label, "guidance": guidance})
    done = refine_run(load(run, device=device), input=input, mask=mask, strength=strength, n=n, towards=towards,
                      attribute=attribute, prefix=prefix, suffix=suffix, out=out, seed=seed, **settings)
    if done.mode == "infill":
        typer.echo(done.text)
        typer.echo(f"wrote the middle ({len(done.text)} characters) to {done.out}", err=True)
    elif done.mode == "variations":
        typer.echo(f"inverted {input} (pixel MSE {done.details['inversion_mse']:.4f} in [-1, 1] units); wrote "
                   f"{len(done.paths)} variations to {done.out} (comparison.png: input, reconstruction, variations)")
    elif done.mode == "continue":
        typer.echo(f"wrote {len(done.paths)} continuations of {input} to {done.out} (each begins with it)")
    elif done.mode in ("interpolate", "attribute"):
        typer.echo(f"wrote {len(done.paths)} {done.mode} results to {done.out} (comparison.png: input, then the results)")
    else:
        typer.echo(f"wrote {len(done.paths)} {done.mode} results to {done.out} (comparison.png: input first)")


def _read_text_option(path: Path | None, option: str) -> str:
    from genforge.errors import DataError

    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{option} {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{option} {path} is a directory; expected a text file") from None
    except UnicodeDecodeError:
        raise DataError(f"{option} {path} is not UTF-8 text") from None


@app.command()
def info(
    run: Path = typer.Argument(..., help="Run directory made by `genforge train`."),
    as_json: bool = typer.Option(False, "--json", help="Everything as JSON, with each capability's options, "
                                 "defaults and ranges."),
    card: bool = typer.Option(False, "--card", help="Write the run's model card, RUN/README.md: family, "
                              "architecture, data, training, latest evaluation beside the real data's, how to load "
                              "it, intended use and limits - generated from the run."),
) -> None:
    """Show a run's family, data, size, progress, latest metrics and what it can do (its capabilities)."""
    from genforge.api import load

    if card:
        from genforge.export.run_export import write_card

        typer.echo(f"wrote {write_card(run)}")
        return
    about = load(run, device="cpu").describe()
    if as_json:
        typer.echo(json.dumps(about, indent=2, default=str))
        return
    spec = about["data"]
    rows = [
        ("family", about["family"]),
        ("data", f"{spec['source']} ({spec['modality']} data; samples are {spec['writes']} files)"),
        ("data shape", " x ".join(map(str, spec["shape"])) + (f" (vocab {spec['vocab_size']})" if spec["vocab_size"] else "")),
        ("classes", str(spec["num_classes"] or "none")),
        *([("constraints", "; ".join(c["text"] for c in spec["constraints"]))] if spec.get("constraints") else []),
        ("parameters", f"{about['parameters']:,}"),
        ("steps trained", f"{'?' if about['step'] is None else about['step']} of {about['config']['train']['steps']}"),
    ]
    last = about["last_training_record"]
    if last:
        rows.append(("speed (last)", f"{last['items_per_s']:,.1f} {spec['unit']}/s"))
        rows += [(k, f"{v:.4f}") for k, v in last.items() if k.endswith("/loss")]
    latest = about["latest_eval"]
    if latest:
        rows.append(("eval (latest)", f"step {latest['step']}, n={latest['n']}, "
                     f"{(latest.get('extractor') or {}).get('name', 'text')}"))
        rows += [(f"  {k}", f"{v:.5g}") for k, v in latest["metrics"].items()]
    rows.append(("exports to", ", ".join(about["exports"]) or "-"))
    for name, capability in about["capabilities"].items():
        options = ", ".join(o["name"] for o in capability["settings"])
        rows.append((f"can {name}", f"{capability['summary']}" + (f" [{options}]" if options else "")))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k:<{width}}  {v}")
    typer.echo(f"{'model':<{width}}  " + ", ".join(f"{k}={v}" for k, v in about["config"]["model"].items()))


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run directory made by `genforge train` (or `genforge import`)."),
    format: str = typer.Option(..., "--format", "-f", help="hf: a Hugging Face folder (transformers for transformer "
                               "runs, a diffusers pipeline for diffusion runs); onnx: the networks the family samples "
                               "with, for ONNX Runtime. `genforge info RUN` lists a run's formats."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (with a README.md model card)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
) -> None:
    """Export a run to another tool's format: `genforge export runs/gpt --format hf --out exports/gpt`.

    Needs the export extra: pip install 'genforge\\[export]' (transformers, diffusers, onnx, onnxruntime)."""
    from genforge.export.run_export import export_run

    folder, exported = export_run(run, format, out, overwrite=overwrite)
    typer.echo(f"exported {run} as {exported.architecture} to {folder} ({len(exported.files)} files, model card "
               f"{folder / 'README.md'})")
    for note in exported.notes:
        typer.echo(f"note: {note}")


@app.command("import")
def import_cmd(
    folder: Path = typer.Argument(..., help="A transformers GPT-2 or Llama folder, or a diffusers UNet2DModel "
                                  "folder (safetensors weights)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to create."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="The data to fine-tune and evaluate it on (it must "
                                       "fit the model: image size and channels, or the model's tokenizer). "
                                       "Can also be given later: genforge train --out RUN --resume --data SOURCE."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Import a model made elsewhere as a genforge run, to sample it with genforge's samplers and fine-tune it
    with genforge's trainer: `genforge import my-gpt2 --out runs/gpt2`."""
    from genforge.export.run_import import import_folder

    imported = import_folder(folder, out, data=data, progress=not quiet)
    typer.echo(f"imported {folder} as a {imported.config.family} run in {out} "
               f"({imported.num_parameters():,} parameters)")
    typer.echo(f"sample it: genforge sample {out} -n 4; fine-tune it: genforge train --out {out} --resume "
               + ("" if data else "--data SOURCE ") + "--steps N")


@data_app.command("list")
def data_list() -> None:
    """Built-in sources, and whether each is cached."""
    from genforge.data import cache_dir
    from genforge.modalities import all_modalities, list_sources

    sources = list_sources()
    width = max([len(s["name"]) for s in sources] + [8])
    for s in sources:
        mark = "cached" if s.get("cached") else "-"
        typer.echo(f"{s['name']:<{width}} {mark:<7} {s['description']}")
    for form in (form for m in all_modalities() for form in m.path_forms.values()):
        typer.echo(f"{'path:':<{width}} {form}")
    typer.echo(f"{'cache:':<{width}} {cache_dir()}")


@data_app.command("prepare")
def data_prepare(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="folder: sources: resize and centre-crop to this size."),
    channels: Optional[int] = typer.Option(None, "--channels", help="folder: sources: 1 (grayscale) or 3 (RGB)."),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="text sources: context length in tokens."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help=TOKENIZER_HELP),
    vocab_size: Optional[int] = typer.Option(None, "--vocab-size", help=VOCAB_SIZE_HELP),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help=SAMPLE_RATE_HELP),
    clip_seconds: Optional[float] = typer.Option(None, "--clip-seconds", help=CLIP_SECONDS_HELP),
    sets: list[str] = typer.Option([], "--set", "-s", help="Override a data.* value: data.key=value (tables: "
                                   "data.columns.NAME=TYPE, data.numeric=quantile, ...)."),
) -> None:
    """Decode and cache a source; print its manifest."""
    from genforge.config import data_config
    from genforge.modalities import prepare

    cfg = data_config(source, [*sets, *_audio_overrides(sample_rate, clip_seconds)])
    if image_size is not None:
        cfg.image_size = image_size
    if channels is not None:
        cfg.channels = channels
    if block_size is not None:
        cfg.block_size = block_size
    _tokenizer_overrides(tokenizer, vocab_size)  # the same checks as train's
    if tokenizer is not None:
        cfg.tokenizer = tokenizer
    if vocab_size is not None:
        cfg.vocab_size = vocab_size
    prepared = prepare(source, cfg)
    typer.echo(json.dumps(prepared.manifest, indent=2, sort_keys=True))
    typer.echo(f"cached in {prepared.path}")


FEATURES_HELP = ("Image runs: feature extractor - auto (classifier when the data has labels, else autoencoder), "
                 "classifier, autoencoder, random, or dinov2 (needs --weights or a cached copy).")


@app.command("eval")
def eval_run(
    run: Path = typer.Argument(..., help="Run directory made by `genforge train`."),
    n: Optional[int] = typer.Option(None, "--n", "-n", help="Samples to score (default 5000 for images, 100 for text)."),
    features: str = typer.Option("auto", "--features", help=FEATURES_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help="--features dinov2: a folder or .safetensors file of DINOv2 weights."),
    seed: int = typer.Option(0, "--seed", help="Seed for the samples and the metric subsets."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Also score real held-out data the same way (the floor)."),
    likelihood_samples: Optional[int] = typer.Option(None, "--likelihood-samples", help="Samples per image for the likelihood bound: VAE importance samples (default 1000), diffusion timesteps (default 32)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Score a run's samples against real data; prints a table and writes RUN/eval.json (table runs: figures too)."""
    from genforge.api import evaluate
    from genforge.evaluate.results import describe

    result = evaluate(run, n=n, features=features, weights=weights, seed=seed, device=device, progress=not quiet,
                      reference=reference, likelihood_samples=likelihood_samples)
    floor = result.get("reference_result")
    typer.echo(describe(result))
    width = max(len(k) for k in result["metrics"])
    typer.echo(f"{'metric':<{width}}  {'this run':>12}" + (f"  {'real data':>12}" if floor else ""))
    for key, value in result["metrics"].items():
        line = f"{key:<{width}}  {value:>12.5g}"
        if floor and key in floor["metrics"]:
            line += f"  {floor['metrics'][key]:>12.5g}"
        typer.echo(line)
    sampling = result.get("sampling") or {}
    if sampling:
        typer.echo(f"sampling speed: {sampling['items_per_s']:,.1f} {sampling['unit']}/s")
    if reference and floor is None:
        typer.echo(f"(no real-data row: the held-out split is too small to give {result['n']} real items; use a smaller --n)")
    typer.echo(f"wrote {run / 'eval.json'}")
    for figure in result.get("figures", []):  # table runs: column histograms, pair-trend heat map
        typer.echo(f"wrote {run / figure['file']}")


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories to put side by side."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML report to write (self-contained)."),
    n: Optional[int] = typer.Option(None, "--n", "-n", help="Samples per image run (default 5000) or table run (default 1000)."),
    n_text: Optional[int] = typer.Option(None, "--n-text", help="Samples per text run (default 100) or music run (default 50)."),
    features: str = typer.Option("auto", "--features", help=FEATURES_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", help="--features dinov2: DINOv2 weights."),
    seed: int = typer.Option(0, "--seed", help="Seed for the samples and the metric subsets."),
    likelihood_samples: Optional[int] = typer.Option(None, "--likelihood-samples", help="Samples per image for the likelihood bound: VAE importance samples (default 1000), diffusion timesteps (default 32)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """One HTML page comparing runs: metrics, sample grids, training curves, speeds, sizes."""
    from genforge.api import compare as compare_runs

    path = compare_runs(runs, out, n=n, n_text=n_text, features=features, weights=weights, seed=seed, device=device,
                        progress=not quiet, log=typer.echo, likelihood_samples=likelihood_samples)
    typer.echo(f"wrote {path}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo"), "--out", "-o", help="Folder for the runs, samples and summary."),
    minutes: float = typer.Option(10.0, "--minutes", help="Total training budget for the four families and the table run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo in --out."),
    eval_n: int = typer.Option(500, "--eval-n", help="Images sampled per image family, and rows for the table run, for the report's scores."),
    eval_n_text: int = typer.Option(100, "--eval-n-text", help="Texts sampled for the transformer's scores, and pieces for the music run's."),
    samples: int = typer.Option(64, "--samples", help="Images written per image family (and shown in its grid)."),
    code_tokens: int = typer.Option(320, "--code-tokens", help="Tokens of each of the 8 code samples the summary shows."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """The main job: train all four families briefly on built-in data (and diffusion on a table, a transformer on Bach chorales), score them, write report.html."""
    from genforge.demo import run_demo

    summary = run_demo(out, minutes=minutes, overwrite=overwrite, progress=not quiet, log=typer.echo, eval_n=eval_n,
                       eval_n_text=eval_n_text, samples=samples, code_tokens=code_tokens)
    typer.echo(f"summary: {summary}")


@app.command()
def serve(
    runs_dir: Path = typer.Argument(Path("runs"), help="Folder of run directories to serve (created if missing); "
                                    "the gallery lives in RUNS_DIR/.studio."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    token: Optional[str] = typer.Option(None, "--token", envvar="GENFORGE_TOKEN",
                                        help="Secret every request must carry (open the page as /?token=TOKEN)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps: where jobs run."),
    max_queued: int = typer.Option(16, "--max-queued", help="Jobs that may wait; more are refused (HTTP 429)."),
    cpu_jobs: Optional[int] = typer.Option(None, "--cpu-jobs", help="Jobs running at once on a CPU (default: one "
                                           "per core); a GPU runs one at a time."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder whose files the page may train on "
                                            "(folder:NAME, csv:NAME.csv, ...); built-in sources need nothing."),
) -> None:
    """The web studio: pick a run, generate and refine, train and watch, browse the gallery. Works offline."""
    import uvicorn

    from genforge.serve.app import create_app
    from genforge.serve.security import check_binding

    check_binding(host, token)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if max_queued < 1 or (cpu_jobs is not None and cpu_jobs < 1):
        raise ConfigError("--max-queued and --cpu-jobs must be at least 1")
    application = create_app(runs_dir, token=token, device=device, max_queued=max_queued, cpu_jobs=cpu_jobs,
                             data_dir=data_dir)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"genforge studio: http://{shown}:{port}/" + ("?token=..." if token else "") + f" (runs: {runs_dir})")
    uvicorn.run(application, host=host, port=port, log_level="warning")


def main() -> None:
    code = _run()
    if "torch.distributed" in sys.modules:
        from genforge.train.distributed import shutdown_and_exit

        shutdown_and_exit(code)  # one of several training processes: returns only when there was none
    sys.exit(code)


def _run() -> int:
    """The command's exit code; a user's mistake is one `error:` line on stderr."""
    # the click that typer parses with (its own copy in recent typer versions)
    parser_errors = sys.modules[typer.BadParameter.__module__]
    warnings.formatwarning = _format_warning
    try:
        code = app(standalone_mode=False)
    except parser_errors.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `genforge` or `genforge data` alone: the help
            e.show()
            return e.exit_code
        # a mistyped command, option or value: one line, and where to look
        where = f"{e.ctx.command_path} --help" if e.ctx is not None else "genforge --help"
        _echo_err(f"error: {e.format_message()} (see {where})")
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        _echo_err("aborted")
        return 1
    except GenforgeError as e:
        _echo_err(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        _echo_err("interrupted")
        return 130
    except OSError as e:
        # a write the library did not wrap (a third-party writer): still one line naming the path
        from genforge.io import STORAGE_HINTS, storage_error

        if e.errno not in STORAGE_HINTS:
            raise
        _echo_err(f"error: {storage_error(e.filename or 'a file', e)}")
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
