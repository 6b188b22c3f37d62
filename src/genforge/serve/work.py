"""What the studio's jobs do: generate, refine, train, compare. Each request is checked against the run's
declared capabilities when it arrives (a bad setting is a 400 before anything waits in the queue); the
work itself runs later in a job thread and stores its outputs in the gallery (``outputs.py``).

Generation and refinement go through the same calls as the command line (``Model.save_samples``,
``genforge.refine``'s model methods), so a seed and settings from the studio give what ``genforge sample``
gives. Training runs ``genforge train`` in a child process: stopping it is the trainer's own stop signal
(a checkpoint is written), and the studio stays up whatever the training does.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from genforge.errors import ConfigError, GenforgeError
from genforge.serve.catalog import Catalog, RunNotFound
from genforge.serve.jobs import JobContext
from genforge.serve.outputs import Outputs

SEED_MAX = 2**31 - 1
SCRATCH = "scratch"  # under the studio folder: what a job writes before the gallery takes it
TRAIN_POLL_S = 0.5


def draw_seed(seed: int) -> int:
    """-1 means a random seed (shown with the results, so they can be made again)."""
    return secrets.randbelow(SEED_MAX) if seed == -1 else seed


class Studio:
    """The runs, the gallery and the queue a server works with; each public method checks a request and
    submits its job."""

    def __init__(self, catalog: Catalog, gallery, queue, studio_dir: Path, device_key: str,
                 data_dir: Path | None = None, compare_n: int = 200, compare_n_text: int = 20):
        self.catalog, self.gallery, self.queue = catalog, gallery, queue
        self.studio_dir, self.device_key, self.data_dir = studio_dir, device_key, data_dir
        self.compare_n, self.compare_n_text = compare_n, compare_n_text
        self.scratch = studio_dir / SCRATCH
        if gallery.alone:  # no other studio on this folder: a killed job's scratch files are leftovers
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True, exist_ok=True)

    # ---- generate ------------------------------------------------------------------------------
    def generate(self, run_id: str, *, seed: int, count: int, prompt: str | None, stop: list[str] | None,
                 settings: dict[str, Any], parent_id: str | None = None, mode: str = "sample"):
        model, lock = self.catalog.model(run_id)
        settings = dict(settings)
        if settings.get("stop") is not None:  # stop strings given among the declared settings
            if stop:
                raise ConfigError("give stop strings once: as 'stop' or as settings.stop, not both")
            stop = settings.pop("stop")
            stop = [stop] if isinstance(stop, str) else stop
        if prompt is not None or stop:
            if not model.offers("stream") and not model.offers("continue"):
                raise ConfigError(f"prompt and stop apply to text runs; '{run_id}' holds {model.spec.modality} data")
        model.check_sample(stop, **settings)
        if parent_id is not None:
            self._item(parent_id)
        seed = draw_seed(seed)
        streaming = count == 1 and model.offers("stream")

        def work(ctx: JobContext) -> dict:
            with lock, self._outputs(model, run_id, mode, parent_id, ctx) as out:
                on_piece = (lambda piece: ctx.emit("piece", piece)) if streaming else None
                paths = model.save_samples(count, out.folder / "files", seed=seed, prompt=prompt, stop=stop or None,
                                           on_piece=on_piece, progress=False, **settings)
                params = {**model.sample_params(count, seed, prompt, stop, settings), "run": run_id}
                items = out.store_files(paths, params)
                return {"seed": seed, "items": [i["id"] for i in items]}

        return self.queue.submit("generate", self.device_key, work, run=run_id, mode=mode, seed=seed, count=count,
                                 streaming=streaming)

    # ---- refine --------------------------------------------------------------------------------
    def refine(self, run_id: str, mode: str, *, input_id: str | None, other_id: str | None, mask: bytes | None,
               strength: float | None, count: int, seed: int, settings: dict[str, Any], source: Any = None,
               target: Any = None, prefix: str | None = None, suffix: str | None = None):
        model, lock = self.catalog.model(run_id)
        seed = draw_seed(seed)
        if mode in ("continue", "infill"):
            return self._refine_text(run_id, model, lock, mode, input_id, count, seed, settings, prefix, suffix)
        image_item = self._image_input(model, run_id, input_id)
        image_path = self.gallery.path(image_item)
        if mode == "variations" and not model.offers("variations"):  # same settings, new seeds
            params = image_item["params"]
            kept = {k: v for k, v in params.items() if k in _names(model, "sample")}
            return self.generate(run_id, seed=seed, count=count, prompt=None, stop=None,
                                 settings={**kept, **settings}, parent_id=image_item["id"], mode="variations")
        call = self._image_call(model, mode, image_path, other_id, mask, strength, count, seed, settings, source, target)

        def work(ctx: JobContext) -> dict:
            with lock, self._outputs(model, run_id, mode, image_item["id"], ctx) as out:
                images, params = call()
                items = out.store_images(images, {"family": model.run.config.family, "seed": seed, **params})
                return {"seed": seed, "items": [i["id"] for i in items]}

        return self.queue.submit("refine", self.device_key, work, run=run_id, mode=mode, seed=seed, count=count,
                                 parent=image_item["id"])

    def _image_call(self, model, mode: str, image_path: Path, other_id: str | None, mask: bytes | None,
                    strength: float | None, count: int, seed: int, settings: dict, source: Any, target: Any):
        """The refinement, checked now, as a call for later: () -> (images, parameters to record). Settings are
        those of the capability ``refine_modes`` names; strengths default as ``genforge refine``'s do."""
        from genforge.models import ImageModel
        from genforge.refine import DEFAULT_ATTRIBUTE_STRENGTH, DEFAULT_LATENT_STRENGTH

        if not isinstance(model, ImageModel):
            raise ConfigError(f"{mode} applies to image runs; this run holds {model.spec.modality} data")
        modes = refine_modes(model)
        if mode not in modes:
            raise ConfigError(f"{mode} needs a run that offers {mode}; this {model.run.config.family} run refines "
                              f"images by: {', '.join(modes)}")
        image = model.load_image(image_path)
        if mode == "inpaint":
            if mask is None:
                raise ConfigError("inpaint needs a mask: a PNG the size of the input image, white where to generate")
            model.settings(modes[mode], **settings)
            mask_t = self._mask(model, mask, image_path)
            return lambda: (model.inpaint(image, mask_t, n=count, seed=seed, **settings), settings)
        if mode == "img2img":
            strength = model.settings(modes[mode], strength=strength, **settings).strength  # default: declared
            return lambda: (model.img2img(image, strength, n=count, seed=seed, **settings),
                            {"strength": strength, **settings})
        if mode == "variations":
            strength = DEFAULT_LATENT_STRENGTH if strength is None else strength
            model.settings(modes[mode], strength=strength, **settings)
            return lambda: (model.variations(image, n=count, seed=seed, strength=strength, **settings)[1],
                            {"strength": strength, **settings})
        if mode == "interpolate":
            other = self._image_input(model, model.run.path.name, other_id, "interpolate needs a second image (other_id)")
            other_path = self.gallery.path(other)
            model.settings(modes[mode], **settings)
            return lambda: (model.interpolate_images(image_path, other_path, n=max(count, 2), seed=seed, **settings),
                            {"towards": other["id"], **settings})
        if source is None or target is None:  # attribute
            raise ConfigError("attribute needs source and target labels (class ids or names)")
        top = DEFAULT_ATTRIBUTE_STRENGTH if strength is None else strength
        strengths = [top * i / max(count - 1, 1) for i in range(count)]
        model.settings(modes[mode], **settings)
        return lambda: (model.edit_attribute(image, source, target, strengths, seed=seed, **settings),
                        {"attribute": f"{source}:{target}", "strengths": strengths, **settings})

    def _mask(self, model, mask: bytes, like: Path):
        """The uploaded mask checked against the input image's size (``ImageModel.load_mask``)."""
        with tempfile.NamedTemporaryFile(suffix=".png", dir=self.scratch) as f:
            f.write(mask)
            f.flush()
            return model.load_mask(f.name, like=like)

    def _refine_text(self, run_id: str, model, lock, mode: str, input_id: str | None, count: int, seed: int,
                     settings: dict, prefix: str | None, suffix: str | None):
        from genforge.models import TextModel

        if not isinstance(model, TextModel):
            raise ConfigError(f"{mode} applies to text runs; '{run_id}' holds {model.spec.modality} data")
        if mode == "continue":
            item = self._item(input_id, "continue needs the text to continue (input_id)")
            if item["suffix"] != ".txt":
                raise ConfigError(f"item {item['id']} is not a text; continue needs a text item")
            prompt = self.gallery.path(item).read_text(encoding="utf-8")
            return self.generate(run_id, seed=seed, count=count, prompt=prompt, stop=None, settings=settings,
                                 parent_id=item["id"], mode="continue")
        if not model.offers("infill"):
            raise ConfigError(f"'{run_id}' was not trained for fill-in-the-middle; train a run with --fim-rate 0.5")
        model.settings("infill", **settings)
        parent = self._item(input_id)["id"] if input_id else None

        def work(ctx: JobContext) -> dict:
            with lock, self._outputs(model, run_id, mode, parent, ctx) as out:
                middle = model.infill(prefix or "", suffix or "", seed=seed, **settings)
                item = out.store_text((prefix or "") + middle + (suffix or ""),
                                      {"family": model.run.config.family, "seed": seed, "middle": middle, **settings})
                return {"seed": seed, "items": [item["id"]], "middle": middle}

        return self.queue.submit("refine", self.device_key, work, run=run_id, mode=mode, seed=seed, count=1,
                                 parent=parent)

    # ---- train ---------------------------------------------------------------------------------
    def train(self, run_id: str, *, family: str, data: str, steps: int | None, max_minutes: float | None,
              batch_size: int | None, lr: float | None, seed: int | None, sets: list[str]):
        from genforge.api import make_config

        path = self.catalog.path(run_id)
        if path.exists():
            raise ConfigError(f"a run named '{run_id}' exists already; choose another name, or resume it")
        source = self.data_source(data)
        make_config(family, source, steps=steps, overrides=sets, batch_size=batch_size, lr=lr,
                    max_minutes=max_minutes, seed=seed)  # every value checked now, not in the child process
        args = ["--family", family, "--data", source, "--out", str(path)]
        for flag, value in (("--steps", steps), ("--max-minutes", max_minutes), ("--batch-size", batch_size),
                            ("--lr", lr), ("--seed", seed)):
            if value is not None:
                args += [flag, str(value)]
        for item in sets:
            args += ["--set", item]
        return self._train_job(run_id, args, steps, "train")

    def resume(self, run_id: str, steps: int | None, max_minutes: float | None):
        run = self.catalog.open(run_id)
        if steps is not None and steps <= (run.model_step() or 0):
            raise ConfigError(f"'{run_id}' is at step {run.model_step()}; resume to a larger total than that")
        args = ["--out", str(run.path), "--resume"]
        if steps is not None:
            args += ["--steps", str(steps)]
        if max_minutes is not None:
            args += ["--max-minutes", str(max_minutes)]
        return self._train_job(run_id, args, steps or run.config.train.steps, "resume")

    def data_source(self, data: str) -> str:
        """A built-in source name, or ``kind:PATH`` with PATH inside the server's ``--data-dir`` (the only
        files a client may have read)."""
        from genforge.modalities.prepare import builtin_sources

        if not isinstance(data, str) or not data:
            raise ConfigError("data must be a built-in source name or kind:PATH")
        if ":" not in data:
            names = list(builtin_sources())
            if data not in names:
                raise ConfigError(f"unknown data source '{data}'; built-in sources: {', '.join(names)}")
            return data
        kind, _, rel = data.partition(":")
        if self.data_dir is None:
            raise ConfigError(f"{kind}:PATH sources need the server started with --data-dir DIR (the folder clients "
                              f"may train on); built-in sources need nothing")
        root = self.data_dir.resolve()
        target = (root / rel).resolve()
        if not target.is_relative_to(root):
            raise ConfigError(f"{data}: the path must stay inside the server's data folder")
        return f"{kind}:{target}"

    def _train_job(self, run_id: str, args: list[str], total: int | None, mode: str):
        for job in self.queue.list():
            if job["kind"] == "train" and job.get("run") == run_id and job["status"] in ("queued", "running"):
                raise ConfigError(f"'{run_id}' is already training (job {job['id']}); stop it first")
        logs = self.studio_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        run_path = self.catalog.path(run_id)

        def work(ctx: JobContext) -> dict:
            log_path = logs / f"{ctx.job.id}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "genforge", "train", *args, "--quiet"],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                ctx.job.on_cancel = lambda: _signal(proc, signal.SIGTERM)  # the trainer checkpoints, then stops
                try:
                    while proc.poll() is None:
                        step = last_step(run_path / "metrics.jsonl")
                        if step is not None and total:
                            ctx.emit("step", {"step": step})
                            ctx.report(step, total)
                        time.sleep(TRAIN_POLL_S)
                except BaseException:
                    _signal(proc, signal.SIGTERM)
                    proc.wait()
                    raise
            self.catalog.forget(run_id)
            step = last_step(run_path / "metrics.jsonl")
            if proc.returncode == 130 or (ctx.cancelled and proc.returncode != 0):
                raise GenforgeError(f"stopped at step {step}; the checkpoint is saved: resume it to continue")
            if proc.returncode != 0:
                raise GenforgeError(_error_line(log_path) or f"training exited with code {proc.returncode}")
            return {"run": run_id, "step": step}

        return self.queue.submit("train", self.device_key, work, run=run_id, mode=mode, steps=total)

    # ---- compare -------------------------------------------------------------------------------
    def compare(self, run_ids: list[str], n: int | None, n_text: int | None):
        from genforge.api import compare

        if not 1 <= len(run_ids) <= 8 or len(set(run_ids)) != len(run_ids):
            raise ConfigError("compare takes 1 to 8 distinct run ids")
        runs = [self.catalog.open(r) for r in run_ids]
        for run in runs:
            if not run.model_path.is_file():
                raise ConfigError(f"'{run.path.name}' has no weights yet; compare runs that have trained")
        reports = self.studio_dir / "reports"
        reports.mkdir(parents=True, exist_ok=True)

        def work(ctx: JobContext) -> dict:
            out = reports / f"{ctx.job.id}.html"
            compare([r.path for r in runs], out, n=n or self.compare_n, n_text=n_text or self.compare_n_text,
                    device=str(self.catalog.device), progress=False,
                    title="genforge studio: " + ", ".join(run_ids))
            return {"report": ctx.job.id}

        return self.queue.submit("compare", self.device_key, work, runs=run_ids)

    def report_path(self, job_id: str) -> Path:
        path = self.studio_dir / "reports" / f"{job_id}.html"
        if not (len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)) or not path.is_file():
            raise RunNotFound(f"no report {job_id!r}; a compare job writes one when it finishes")
        return path

    # ---- helpers ---------------------------------------------------------------------------------
    def _item(self, item_id: str | None, missing: str = "an input item is needed") -> dict:
        from genforge.serve.gallery import ItemNotFound

        if item_id is None:
            raise ConfigError(missing)
        item = self.gallery.get(item_id)
        if item is None:
            raise ItemNotFound(f"no gallery item {item_id!r}")
        return item

    def _image_input(self, model, run_id: str, item_id: str | None, missing: str = "this refinement needs an input "
                     "image (input_id: a gallery item, or an upload)") -> dict:
        item = self._item(item_id, missing)
        if item["suffix"] != ".png":
            raise ConfigError(f"item {item['id']} is not an image; {run_id} refines images")
        return item

    def _outputs(self, model, run_id: str, mode: str, parent_id: str | None, ctx: JobContext) -> Outputs:
        return Outputs(self.gallery, self.scratch, model, run_id, mode, parent_id, ctx.job.id,
                       on_item=lambda item: ctx.emit("item", item))


def refine_modes(model) -> dict[str, str]:
    """The refine modes a loaded run offers, each with the capability whose settings it takes (what the page
    builds the refine form from): image runs inpaint, img2img, vary, interpolate and edit as their family
    declares; text runs continue, and fill in the middle when trained for it."""
    from genforge.models import ImageModel, TextModel

    modes: dict[str, str] = {}
    if isinstance(model, ImageModel):
        for mode, capability in (("inpaint", "inpaint"), ("img2img", "img2img")):
            if model.offers(capability):
                modes[mode] = capability
        modes["variations"] = "variations" if model.offers("variations") else "sample"
        if model.offers("interpolate") and model.offers("encode"):
            modes["interpolate"] = "encode"
        if model.offers("attribute"):
            modes["attribute"] = "attribute"
    if isinstance(model, TextModel):
        modes["continue"] = "sample"
        if model.offers("infill"):
            modes["infill"] = "infill"
    return modes


def _names(model, capability: str) -> set[str]:
    from dataclasses import fields

    settings = model.capabilities.get(capability)
    return {f.name for f in fields(settings)} if settings is not None else set()


def last_step(metrics: Path) -> int | None:
    """The step of the last whole record in a run's metrics.jsonl (read from its end)."""
    import json

    try:
        with open(metrics, "rb") as f:
            f.seek(0, io.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            return rec["step"]
    return None


def _error_line(log: Path) -> str | None:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else None)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except OSError:
            pass


def device_key(device: str) -> str:
    """The slot pool of a device name: "cpu", "cuda:0", "mps"."""
    from genforge.train.device import resolve_device

    d = resolve_device(device)
    return f"{d.type}:{d.index or 0}" if d.type == "cuda" else d.type


def cpu_slots() -> int:
    """Jobs at once on a CPU: one per core (so a training run leaves room to generate on a 2-core laptop)."""
    return max(1, os.cpu_count() or 1)
