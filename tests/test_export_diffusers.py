"""diffusers export and import (genforge.export.hf_diffusers): a diffusion run becomes a DDPM/DDIM pipeline folder whose
UNet2DModel computes genforge's network output and whose pipelines sample genforge's images from the same noise;
a diffusers UNet2DModel (+ scheduler) becomes a run computing diffusers' outputs; what cannot be exact is refused
in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import genforge
from genforge.data.spec import DataSpec
from genforge.errors import ExportError
from genforge.export import export_run, import_folder
from genforge.export import hf_diffusers
from genforge.families.diffusion import Diffusion, DiffusionConfig
from genforge.io import load_tensors, read_metadata, save_tensors
from genforge.runs import Run

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

# 8x8 digits, levels of 8 and 16 channels, attention at the 4x4 level (so Attn down/up blocks and plain ones
# with a downsampler and an upsampler), 100 timesteps; one GroupNorm count (norm_groups -1)
TINY = ["model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[4]",
        "model.timesteps=100", "model.sample_steps=5", "model.norm_groups=-1", "model.prediction=eps",
        "model.noise_sampling=uniform", "model.class_conditional=false", "train.sample_every=0", "train.grid_size=4"]
# runs made from the trained one by changing what leaves the weights' shapes alone (or adding the label table)
VARIANTS = {
    "eps": {},
    "v": {"prediction": "v", "sampler": "ddpm"},
    "x0": {"prediction": "x0", "schedule": "cosine"},
    "labels": {"class_conditional": True, "guidance": 2.0},
    "norm_groups_0": {"norm_groups": 0},
    "edm": {"prediction": "edm"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> a run folder: one tiny run trained a step, then each variant with every weight perturbed (so that
    zero-initialised convolutions are not zero and a wrong mapping cannot pass)."""
    root = tmp_path_factory.mktemp("diffusers-runs")
    genforge.train("diffusion", "digits", root / "trained", steps=1, overrides=TINY, progress=False)
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = _variant(root / "trained", root / name, VARIANTS[name], seed=len(made))
        return made[name]

    return get


def _variant(trained: Path, out: Path, changes: dict, seed: int) -> Path:
    shutil.copytree(trained, out)
    run = Run.open(out)
    run.config.model.update(changes)
    run.save_config()
    generator = torch.Generator().manual_seed(seed)
    tensors = {k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in load_tensors(run.model_path).items()}
    if changes.get("class_conditional"):
        width = tensors["unet.time_embed.mlp.0.weight"].shape[0]
        tensors["label_embedding.weight"] = torch.randn(run.spec.num_classes + 1, width, generator=generator)
    save_tensors(tensors, run.model_path, metadata=read_metadata(run.model_path))
    return out


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    """name -> (the loaded run, its export folder, what the exporter reported), written by the exporter itself."""
    root = tmp_path_factory.mktemp("diffusers-exports")
    made = {}

    def get(name: str):
        if name not in made:
            model = genforge.load(runs(name), device="cpu")
            out = root / name
            out.mkdir()
            made[name] = model, out, hf_diffusers.export(model, out)
        return made[name]

    return get


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- export ---------------------------------------------------------------------------------------------------
def test_export_run_writes_a_folder_both_pipelines_load(runs, tmp_path):
    out, exported = export_run(runs("eps"), "hf", tmp_path / "export")
    assert exported.files == ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                              "unet/diffusion_pytorch_model.safetensors", "README.md", "genforge.json"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(exported.files)
    assert (out / "README.md").is_file() and exported.library == "diffusers"
    assert exported.architecture == "UNet2DModel + DDIMScheduler"
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDIMPipeline"
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "DDIMScheduler" and len(scheduler["trained_betas"]) == 100
    assert (scheduler["clip_sample"], scheduler["clip_sample_range"], scheduler["timestep_spacing"],
            scheduler["prediction_type"], scheduler["set_alpha_to_one"]) == (True, 1.0, "trailing", "epsilon", True)
    unet = json.loads((out / "unet" / "config.json").read_text())
    assert unet["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]
    assert unet["up_block_types"] == ["AttnUpBlock2D", "UpBlock2D"]
    assert (unet["norm_num_groups"], unet["block_out_channels"], unet["sample_size"]) == (2, [8, 16], 8)
    assert isinstance(diffusers.DDPMPipeline.from_pretrained(out).unet, diffusers.UNet2DModel)
    assert isinstance(diffusers.DDIMPipeline.from_pretrained(out).scheduler, diffusers.DDIMScheduler)


@pytest.mark.parametrize("name", ["eps", "v", "x0", "labels"])
def test_unet_computes_the_runs_network_output(exports, name):
    model, out, exported = exports(name)
    family = model.family
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 8, 8, generator=generator)
    t = torch.tensor([0, 1, 17, 50, 98, 99])
    labels = torch.tensor([0, 3, 9, 10, 10, 5]) if family.num_classes else None  # 10: the null class
    with torch.no_grad():
        ours = family.net(x, t, labels)
        theirs = unet(x, t, class_labels=labels).sample
    assert ours.abs().max() > 0.5  # the perturbed net's output is not near zero
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    scheduler_class = diffusers.DDPMScheduler if family.config.sampler == "ddpm" else diffusers.DDIMScheduler
    scheduler = scheduler_class.from_pretrained(out / "scheduler")
    assert scheduler.config.prediction_type == hf_diffusers.PREDICTION_TYPES[family.config.prediction]
    # diffusers multiplies float32 betas; the cosine schedule's last abar (2e-7) keeps 5 digits
    torch.testing.assert_close(scheduler.alphas_cumprod, family.alphas_cumprod, atol=1e-10, rtol=1e-5)


@pytest.mark.parametrize("name", ["eps", "x0"])
def test_ddim_pipeline_gives_genforges_ddim_images(exports, name):
    # genforge draws the prior noise first from the generator, as the pipeline does; N = 5 divides T = 100
    model, out, _ = exports(name)
    pipe = _quiet(diffusers.DDIMPipeline.from_pretrained(out))
    images = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), num_inference_steps=5, eta=0.0,
                  use_clipped_model_output=True, output_type="pt").images
    ours = model.family.sample(4, generator=torch.Generator().manual_seed(0), steps=5, sampler="ddim", eta=0.0,
                               spacing="trailing")
    assert ours.std() > 0.1
    torch.testing.assert_close(images, (ours + 1) / 2, atol=1e-4, rtol=0)


@pytest.mark.parametrize("steps", [5, 3])
def test_ddpm_pipeline_gives_genforges_ddpm_images(exports, steps):
    # ancestral steps draw fresh noise from the same generator in the same order on both sides
    model, out, exported = exports("v")
    assert exported.architecture == "UNet2DModel + DDPMScheduler"
    pipe = _quiet(diffusers.DDPMPipeline.from_pretrained(out))
    images = pipe(batch_size=4, generator=torch.Generator().manual_seed(1), num_inference_steps=steps,
                  output_type="pt").images
    ours = model.family.sample(4, generator=torch.Generator().manual_seed(1), steps=steps)
    torch.testing.assert_close(images, (ours + 1) / 2, atol=1e-4, rtol=0)


def test_load_snippet_samples_the_runs_images(exports, tmp_path, monkeypatch):
    # the model card's code, as written, with the run's defaults (DDIM, eta 1, 5 steps), saving its first image
    model, out, exported = exports("eps")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(exported.load.replace("{path}", str(out)), namespace)
    theirs = np.stack([np.asarray(image) for image in namespace["images"]])
    ours = model.family.sample(16, generator=torch.Generator().manual_seed(0))
    ours = ((ours + 1) / 2 * 255).round().squeeze(1).numpy().astype(np.int16)
    assert theirs.shape == ours.shape and (tmp_path / "sample.png").is_file()
    assert np.abs(theirs.astype(np.int16) - ours).max() <= 1  # 8-bit rounding of equal images


def test_class_conditional_snippet_gives_guided_samples(exports):
    model, out, exported = exports("labels")
    assert exported.pipeline_tag is None
    assert any("cannot pass class labels" in note and "10 for the unconditional" in note for note in exported.notes)
    assert json.loads((out / "unet" / hf_diffusers.CLASS_NAMES).read_text()) == [str(i) for i in range(10)]
    code = exported.load.replace("{path}", str(out))
    assert "labels = torch.tensor([0, 1, 2, 3])" in code and "guidance = 2.0" in code
    namespace: dict = {}
    exec(code.replace("torch.tensor([0, 1, 2, 3])", "torch.tensor([3, 3, 3, 3])"), namespace)
    # genforge: the run's guidance 2.0 mixes the label-3 and null outputs, DDIM with eta 1 over 5 steps
    ours = model.family.sample(4, generator=torch.Generator().manual_seed(0), label=3)
    torch.testing.assert_close(namespace["images"], (ours + 1) / 2, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, said", [
    ("norm_groups_0", ["2, 4 and 8 groups", "--set model.norm_groups=-1", "--format onnx"]),
    ("edm", ["prediction edm", "--set model.prediction=v", "--format onnx"]),
])
def test_runs_diffusers_cannot_hold_are_refused_in_one_line(runs, tmp_path, name, said):
    with pytest.raises(ExportError) as error:
        export_run(runs(name), "hf", tmp_path / "export")
    message = str(error.value)
    assert "\n" not in message and all(part in message for part in said), message
    assert not (tmp_path / "export").exists()


def test_attention_heads_of_different_widths_are_refused(tmp_path):
    # 16 channels: one head of 16; 64 channels: two heads of 32; UNet2DModel has one attention_head_dim
    spec = DataSpec("image", (1, 8, 8))
    family = Diffusion(DiffusionConfig(base_channels=16, channel_mults=[1, 4], attention_resolutions=[8, 4],
                                       norm_groups=-1), spec)
    with pytest.raises(ExportError, match=r"1 x 16 at width 16, 2 x 32 at width 64.*--format onnx") as error:
        hf_diffusers.export(SimpleNamespace(family=family, spec=spec), tmp_path)
    assert "\n" not in str(error.value)


# ---- import ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory) -> Path:
    """A pipeline saved by diffusers itself: RGB 8x8, 32 and 64 channels, attention at the first (8x8) level with
    heads of 32 channels, two blocks per level, 8 groups, a cosine schedule of 50 steps, v-prediction."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                                 down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "AttnUpBlock2D"), layers_per_block=2,
                                 attention_head_dim=32, norm_num_groups=8)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2",
                                        prediction_type="v_prediction", timestep_spacing="trailing")
    folder = tmp_path_factory.mktemp("diffusers-made") / "pipeline"
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def _family(imported) -> Diffusion:
    family = Diffusion(DiffusionConfig(**imported.model), imported.spec).eval()
    family.load_state_dict(imported.tensors, strict=True)
    return family


def test_diffusers_unet_imports_and_computes_the_same(diffusers_folder):
    assert hf_diffusers.detect(diffusers_folder) and hf_diffusers.detect(diffusers_folder / "unet")
    imported = hf_diffusers.read(diffusers_folder)
    assert imported.family == "diffusion" and imported.data == {"image_size": 8, "channels": 3}
    assert tuple(imported.spec.shape) == (3, 8, 8) and imported.spec.num_classes is None
    values = imported.model
    assert (values["base_channels"], values["channel_mults"], values["blocks_per_level"], values["norm_groups"],
            values["attention_resolutions"]) == (32, [1, 2], 2, 8, [8])
    assert (values["timesteps"], values["schedule"], values["prediction"], values["sampler"],
            values["spacing"]) == (50, "cosine", "v", "ddpm", "trailing")
    assert "UNet2DModel" in imported.description and "DDPMScheduler" in imported.description
    family = _family(imported)
    unet = diffusers.UNet2DModel.from_pretrained(diffusers_folder / "unet").eval()
    scheduler = diffusers.DDPMScheduler.from_pretrained(diffusers_folder / "scheduler")
    x, t = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 21, 49])
    with torch.no_grad():
        torch.testing.assert_close(family.net(x, t, None), unet(x, t).sample, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(family.alphas_cumprod, scheduler.alphas_cumprod, atol=1e-10, rtol=1e-5)


def test_bare_unet_folder_takes_the_sibling_scheduler_or_ddpms_default(diffusers_folder, tmp_path):
    assert hf_diffusers.read(diffusers_folder / "unet").model["schedule"] == "cosine"
    alone = tmp_path / "unet"
    shutil.copytree(diffusers_folder / "unet", alone)
    imported = hf_diffusers.read(alone)
    assert "DDPM, linear, 1000 steps assumed" in imported.description
    values = imported.model
    assert (values["timesteps"], values["schedule"], values["prediction"]) == (1000, "linear", "eps")
    assert values["beta_start"] == pytest.approx(1e-4) and values["beta_end"] == pytest.approx(0.02)


def test_imported_run_samples_and_exports_back_exactly(diffusers_folder, tmp_path):
    run = import_folder(diffusers_folder, tmp_path / "run", progress=False)
    model = genforge.load(run.path, device="cpu")
    assert model.family.sample(2, generator=torch.Generator().manual_seed(0), steps=2).shape == (2, 3, 8, 8)
    out, _ = export_run(run.path, "hf", tmp_path / "again")
    source = load_tensors(diffusers_folder / "unet" / hf_diffusers.WEIGHTS)
    back = load_tensors(out / "unet" / hf_diffusers.WEIGHTS)
    assert source.keys() == back.keys() and all(torch.equal(source[k], back[k]) for k in source)


def test_export_then_read_gives_the_runs_tensors(exports):
    model, out, _ = exports("labels")
    imported = hf_diffusers.read(out)
    state = model.family.state_dict()
    assert imported.tensors.keys() == state.keys()
    assert all(torch.equal(imported.tensors[k], state[k]) for k in state)
    config = model.family.config
    for key in ("base_channels", "channel_mults", "blocks_per_level", "attention_resolutions", "timesteps",
                "schedule", "prediction", "class_conditional", "sampler", "spacing"):
        assert imported.model[key] == getattr(config, key), key
    assert imported.model["norm_groups"] == 2  # the run's -1 is the narrowest width's count, stated as a number
    assert imported.model["beta_start"] == pytest.approx(config.beta_start, rel=1e-6)
    assert imported.model["beta_end"] == pytest.approx(config.beta_end, rel=1e-6)
    assert imported.spec.num_classes == 10 and imported.spec.class_names == model.spec.class_names


def _edited_copy(folder: Path, tmp_path: Path, part: str, changes: dict) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    path = copy / part
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return copy


@pytest.mark.parametrize("part, changes, said", [
    ("unet/config.json", {"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift='scale_shift'"),
    ("unet/config.json", {"time_embedding_type": "fourier"}, "time_embedding_type='fourier'"),
    ("unet/config.json", {"add_attention": False}, "add_attention=False"),
    ("unet/config.json", {"center_input_sample": True}, "center_input_sample=True"),
    ("unet/config.json", {"downsample_type": "resnet"}, "downsample_type='resnet'"),
    ("unet/config.json", {"act_fn": "gelu"}, "act_fn='gelu'"),
    ("unet/config.json", {"mid_block_scale_factor": 1.414}, "mid_block_scale_factor=1.414"),
    ("unet/config.json", {"attention_head_dim": 8}, "gives 4 heads of 8 at width 32"),
    ("scheduler/scheduler_config.json", {"beta_schedule": "scaled_linear"}, "beta_schedule 'scaled_linear'"),
    ("scheduler/scheduler_config.json", {"trained_betas": [0.01 + 0.001 * (i % 7) for i in range(50)]},
     "neither a linear nor a cosine"),
    ("scheduler/scheduler_config.json", {"prediction_type": "flow"}, "prediction_type 'flow'"),
])
def test_what_genforges_unet_lacks_is_refused_in_one_line(diffusers_folder, tmp_path, part, changes, said):
    with pytest.raises(ExportError) as error:
        hf_diffusers.read(_edited_copy(diffusers_folder, tmp_path, part, changes))
    assert "\n" not in str(error.value) and said in str(error.value), str(error.value)


def test_pickle_weights_are_refused(diffusers_folder, tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(diffusers_folder / "unet" / "config.json", folder / "config.json")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not read")
    assert hf_diffusers.detect(folder)
    with pytest.raises(ExportError, match="pickle weights.*convert it to safetensors") as error:
        hf_diffusers.read(folder)
    assert "\n" not in str(error.value)
