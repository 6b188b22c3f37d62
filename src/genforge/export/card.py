"""Model cards: a README.md that says what a run's model is, written from the run itself, nothing typed by hand.

Every export carries one, and `genforge info RUN --card` writes one into the run. It holds a YAML header that
model hubs read (library, tags, task), then the family, architecture and size, the data and its split, the
training (steps, time, batch, final losses), the latest evaluation beside its real-data row, how to load it,
and what it is for and not for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from genforge import __version__
from genforge.export.registry import Exported

CARD = "README.md"

# what each family is, for the card's first line
FAMILY_WHAT = {
    "transformer": "an autoregressive transformer (GPT) that generates one token after another",
    "diffusion": "a denoising diffusion model that generates by removing noise step by step",
    "gan": "a generative adversarial network whose generator maps random latents to samples",
    "vae": "a variational autoencoder that decodes latents drawn from its prior",
    "vqvae": "a vector-quantised autoencoder: items to grids of discrete codes and back",
}

LIMITS = [
    "It imitates its training data, including that data's gaps and biases, and knows nothing beyond it.",
    "Small models trained for minutes produce recognisable but imperfect samples: check the evaluation below "
    "before relying on it, and compare it with other runs on the same data (`genforge compare`).",
    "Generated items are synthetic: they are not records of real people, events or measurements, and must not be "
    "presented as such.",
]


def model_card(model, exported: Exported | None = None) -> str:
    """The card of a loaded run (``genforge.load``), for an export (``exported``) or for the run itself."""
    about = model.describe()
    config = about["config"]
    return "\n".join([
        "---", yaml.safe_dump(_header(about, exported), sort_keys=False).rstrip(), "---", "",
        *_title(about, exported), *_model(about, model), *_data(about, config), *_training(about, config, model.run.read_metrics()),
        *_evaluation(about), *_loading(about, exported), *_use(about, exported),
    ]) + "\n"


def _header(about: dict, exported: Exported | None) -> dict[str, Any]:
    tags = ["genforge", about["family"], about["data"]["modality"]]
    header: dict[str, Any] = {"library_name": (exported.library if exported and exported.library else "genforge"),
                              "tags": tags}
    if exported and exported.pipeline_tag:
        header["pipeline_tag"] = exported.pipeline_tag
    return header


def _title(about: dict, exported: Exported | None) -> list[str]:
    name = _run_name(about)
    family = about["family"]
    what = FAMILY_WHAT.get(family, f"a {family} model")
    lines = [f"# {name}", "", f"A genforge {family} run on `{about['data']['source']}` "
             f"({about['data']['modality']} data): {what}. Trained with genforge {__version__}; this card is generated "
             f"from the run's own files."]
    if exported is not None:
        lines += ["", f"This folder is its **{exported.format}** export: {exported.architecture}."]
    return lines + [""]


def _run_name(about: dict) -> str:
    return Path(about["run"]).name or "genforge run"


def _model(about: dict, model) -> list[str]:
    rows = [("family", about["family"]), ("network", type(model.family).__name__),
            ("parameters", f"{about['parameters']:,}")]
    rows += [(key, _value(value)) for key, value in about["config"]["model"].items()]
    return ["## Model", "", *_table(("setting", "value"), rows), ""]


def _data(about: dict, config: dict) -> list[str]:
    spec, data = about["data"], config["data"]
    rows = [("source", f"`{spec['source']}`"), ("modality", spec["modality"]),
            ("item shape", " x ".join(map(str, spec["shape"]))),
            ("held-out share", f"{data['val_fraction']:.0%} (validation and evaluation; never trained on)")]
    if spec["vocab_size"]:
        rows.append(("vocabulary", f"{spec['vocab_size']:,} tokens"))
    if spec["num_classes"]:
        names = ", ".join(spec["class_names"][:20]) + (", ..." if len(spec["class_names"]) > 20 else "")
        rows.append(("classes", f"{spec['num_classes']}" + (f" ({names})" if names else "")))
    return ["## Data", "", *_table(("", ""), rows), ""]


def _training(about: dict, config: dict, records: list[dict]) -> list[str]:
    train = config["train"]
    last = about["last_training_record"]
    step = about["step"]
    rows = [("steps", f"{'?' if step is None else f'{step:,}'} of {train['steps']:,}"),
            ("batch size", str(train["batch_size"])), ("learning rate", f"{train['lr']:g}"),
            ("precision", str(train["precision"])), ("seed", str(train["seed"]))]
    if last:
        rows.append(("training time", _duration(training_seconds(records))))
        rows.append(("speed (last)", f"{last['items_per_s']:,.1f} {about['data']['unit']}/s"))
        rows += [(key, f"{value:.4f}") for key, value in last.items() if key.endswith("/loss")]
    return ["## Training", "", *_table(("", ""), rows), ""]


def _evaluation(about: dict) -> list[str]:
    latest = about["latest_eval"]
    lines = ["## Evaluation", ""]
    if not latest:
        return lines + ["Not evaluated yet: `genforge eval RUN` scores samples against held-out data and adds the "
                        "real data's own scores as the floor.", ""]
    ref = latest.get("reference") or {}
    extractor = (latest.get("extractor") or {}).get("name")
    size = f"{ref['n']:,} items" if "n" in ref else f"{ref.get('tokens', 0):,} tokens"
    lines += [f"Step {latest['step']:,}: {latest['n']:,} samples (seed {latest.get('seed', 0)}) against the "
              f"{ref.get('split', '?')} split of `{ref.get('data', '?')}` ({size})"
              + (f", compared in {extractor} features" if extractor else "") + ".", ""]
    floor = latest.get("reference_metrics") or {}
    header = ("metric", "this model", "real data (held-out)") if floor else ("metric", "this model")
    rows = []
    for key, value in latest["metrics"].items():
        row = (key, f"{value:.5g}")
        rows.append(row + ((f"{floor[key]:.5g}" if key in floor else "-"),) if floor else row)
    lines += _table(header, rows)
    if not floor:
        lines += ["", "No real-data row was measured with this result (`genforge eval RUN` measures it)."]
    return lines + [""]


def _loading(about: dict, exported: Exported | None) -> list[str]:
    run = about["run"]
    lines = ["## How to use it", ""]
    if exported is not None:
        lines += [f"With {exported.library or exported.format}:", "", "```python",
                  exported.load.replace("{path}", "path/to/this/folder").strip(), "```", ""]
        lines += ["Files: " + ", ".join(f"`{f}`" for f in exported.files), ""]
    lines += ["With genforge (from the run folder):", "", "```bash", f"genforge sample {run} -n 16 --seed 0 --out samples",
              f"genforge info {run}", "```", "", "```python", "import genforge", "",
              f"model = genforge.load({json.dumps(run)})", "model.save_samples(16, \"samples\", seed=0)", "```", ""]
    return lines


def _use(about: dict, exported: Exported | None) -> list[str]:
    lines = ["## Intended use and limits", "",
             f"Made for generating {about['data']['modality']} data like `{about['data']['source']}`: prototyping, "
             "research, data augmentation and comparing generative families on the same data.", ""]
    lines += [f"- {limit}" for limit in LIMITS]
    if exported is not None:
        lines += [f"- {note}" for note in exported.notes]
    return lines


def training_seconds(records: list[dict]) -> float | None:
    """Seconds spent training, over every session of a run: each resumed session's clock starts again at 0, so the
    last time of each session is added up."""
    total, last = 0.0, None
    for rec in records:
        elapsed = rec.get("elapsed_s")
        if not isinstance(elapsed, (int, float)):
            continue
        if last is not None and elapsed < last:  # a new session began
            total += last
        last = elapsed
    return None if last is None else total + last


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)]


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else (f"{minutes} min {secs} s" if minutes else f"{secs} s")
