"""ONNX export (genforge.export.onnx_export, Family.sampling_nets): every family's sampling networks as ONNX files
that ONNX Runtime runs at batch sizes other than the export's and that compute what genforge computes: generators
and decoders their images, a VAE's prior its latents, the diffusion denoiser its clean-image estimate at every
noise level (EDM and v runs, guidance, a sampler driven by it), a transformer its logits with and without a
key/value cache; onnx.json describes them, the card's snippet runs, and a family without ONNX is refused in one
line."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from tabletools import patients_csv

import genforge
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError, ExportError
from genforge.export import export_run
from genforge.export.onnx_export import export, write_nets
from genforge.io import load_tensors, read_metadata, save_tensors
from genforge.runs import Run
from genforge.sampling import diffusion as solvers

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-4  # float32 graphs whose kernels differ from PyTorch's in summation order only
BATCHES = (1, 3)  # the export's example batch is 2
# no grids but the final one of a single item (the transformer's would sample 8 texts)
COMMON = ["train.sample_every=0", "train.grid_size=1"]
TABLE = ["data.numeric=quantile"]  # quantiles, not a fitted mixture per number: prepared in a tenth of the time
PLANS = {
    "gan": ("gan", "digits", ["model.width=8", "model.latent_dim=8"]),
    "vae": ("vae", "digits", ["model.width=8", "model.latent_dim=4"]),
    "vqvae": ("vqvae", "digits", ["model.width=8", "model.num_codes=16", "model.code_dim=4", "model.res_blocks=1"]),
    # EDM's preconditioning, class-conditional (new runs' defaults on labelled data); "v" is made from it. Two
    # levels (a down- and an upsampler), attention in the middle only: tracing costs about 10 ms per module
    "edm": ("diffusion", "digits", ["model.base_channels=8", "model.channel_mults=[1,2]",
                                    "model.attention_resolutions=[]", "model.timesteps=100", "model.sample_steps=4"]),
    "transformer": ("transformer", "text", ["data.block_size=16", "model.n_layer=2", "model.n_embd=16",
                                            "model.n_head=2"]),
    "table_gan": ("gan", "csv", [*TABLE, "model.latent_dim=8", "model.generator_dim=[16]",
                                 "model.discriminator_dim=[16]", "model.pac=2"]),
    "table_vae": ("vae", "csv", [*TABLE, "model.latent_dim=8", "model.hidden=[16]"]),
    "table_diffusion": ("diffusion", "csv", [*TABLE, "model.hidden=[16]", "model.time_dim=8", "model.timesteps=20"]),
    "table_transformer": ("transformer", "csv", [*TABLE, "model.n_embd=8", "model.n_layer=1", "model.n_head=2"]),
}


# ---- runs and exports ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """name -> a tiny run trained one step; "v" is the EDM run turned into an unconditional v-prediction run."""
    root = tmp_path_factory.mktemp("onnx-runs")
    text = root / "code.txt"
    text.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(60)), encoding="utf-8")
    sources = {"digits": "digits", "text": f"text:{text}", "csv": f"csv:{patients_csv(root)}"}
    made = {}
    for name, (family, data, overrides) in PLANS.items():
        made[name] = root / name
        genforge.train(family, sources[data], made[name], steps=1, batch_size=4, progress=False,
                       overrides=[*overrides, *COMMON])
    made["v"] = unconditional_v(made["edm"], root / "v")
    return made


def unconditional_v(trained: Path, out: Path) -> Path:
    """A copy of a class-conditional diffusion run as an unconditional one predicting v (its label table dropped)."""
    shutil.copytree(trained, out)
    run = Run.open(out)
    run.config.model.update(prediction="v", class_conditional=False)
    run.save_config()
    tensors = load_tensors(run.model_path)
    del tensors["label_embedding.weight"]
    save_tensors(tensors, run.model_path, metadata=read_metadata(run.model_path))
    return out


def perturb(family: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight moved off its (often zero) initial value, so a wrong mapping cannot pass by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in family.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return family.eval()


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """name -> (the loaded run with perturbed weights, its export folder, the Exported), each made once."""
    root = tmp_path_factory.mktemp("onnx-exports")
    made = {}

    def get(name: str):
        if name not in made:
            model = genforge.load(runs[name], device="cpu")
            perturb(model.family, seed=len(made))
            out = root / name
            out.mkdir()
            made[name] = model, out, export(model, out)
        return made[name]

    return get


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess, **feeds) -> list[torch.Tensor]:
    return [torch.from_numpy(o) for o in sess.run(None, {k: v.numpy() for k, v in feeds.items()})]


def assert_close(got: torch.Tensor, want: torch.Tensor, tolerance: float = TOLERANCE) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    assert (got - want).abs().max().item() <= tolerance, (got - want).abs().max().item()


# ---- image families ------------------------------------------------------------------------------------------
def test_gan_generator_gives_the_images_decode_gives(exported):
    model, out, result = exported("gan")
    gan, generator = model.family, session(out / "generator.onnx")
    assert result.files == ["generator.onnx", "onnx.json"] and result.library == "onnx"
    for b in BATCHES:
        z, labels = torch.randn(b, 8), torch.randint(10, (b,))
        images, = run(generator, z=z, labels=labels)
        assert_close(images, gan.decode(z, labels))
        assert images.abs().max() <= 1


def test_vae_prior_and_decoder_sample_what_genforge_samples(exported):
    model, out, _ = exported("vae")
    vae, prior, decoder = model.family, session(out / "prior.onnx"), session(out / "decoder.onnx")
    for b in BATCHES:
        draws = torch.Generator().manual_seed(b)
        eps = torch.randn(b, 4, generator=draws)  # sample_latents' order: the noise, then the classes
        labels = torch.randint(10, (b,), generator=draws)
        means, log_scales, log_weights = run(prior, labels=labels)
        assert means.shape == (b, 1, 4) and log_weights.shape == (b, 1)
        images, = run(decoder, z=means[:, 0] + log_scales[:, 0].exp() * eps)
        assert_close(images, vae.sample(b, generator=torch.Generator().manual_seed(b)))


def test_vae_mixture_prior_picks_components_as_genforge_does(tmp_path):
    from genforge.families.vae import VAE, VAEConfig

    vae = perturb(VAE(VAEConfig(width=8, latent_dim=4, prior_components=3, likelihood="gaussian"),
                      DataSpec("image", (1, 8, 8))), seed=5)
    write_nets(vae.sampling_nets(), tmp_path)
    prior, decoder = session(tmp_path / "prior.onnx"), session(tmp_path / "decoder.onnx")
    for b in BATCHES:
        draws = torch.Generator().manual_seed(b)
        eps = torch.randn(b, 4, generator=draws)
        means, log_scales, log_weights = run(prior, labels=torch.zeros(b, dtype=torch.long))  # one prior: id 0
        k = torch.multinomial(log_weights.exp(), 1, generator=draws)[:, 0]
        rows = torch.arange(b)
        images, = run(decoder, z=means[rows, k] + log_scales[rows, k].exp() * eps)
        assert_close(images, vae.sample(b, generator=torch.Generator().manual_seed(b)))


def test_resnet_gan_generator_with_class_conditional_batchnorm(tmp_path):
    from genforge.families.gan import GAN, GANConfig

    gan = perturb(GAN(GANConfig(width=8, latent_dim=8, backbone="resnet"), DataSpec("image", (3, 8, 8), num_classes=4)),
                  seed=2)
    write_nets(gan.sampling_nets(), tmp_path)
    generator = session(tmp_path / "generator.onnx")
    for b in BATCHES:
        z, labels = torch.randn(b, 8), torch.randint(4, (b,))
        images, = run(generator, z=z, labels=labels)
        assert_close(images, gan.decode(z, labels))


def test_vqvae_decoder_decodes_code_grids(exported):
    model, out, _ = exported("vqvae")
    decoder = session(out / "decoder.onnx")
    for b in BATCHES:
        codes = torch.randint(16, (b, *model.family.code_grid))
        images, = run(decoder, codes=codes)
        assert_close(images, model.family.decode_codes(codes))


# ---- diffusion -------------------------------------------------------------------------------------------------
def noise_levels(model, b: int) -> torch.Tensor:
    """b noise levels covering the schedule: 0, below its least, on its grid, between steps, its most, beyond."""
    train = ((1 - model.family.alphas_cumprod) / model.family.alphas_cumprod).sqrt()
    levels = torch.tensor([0.0, 1e-3, float(train[37]), 0.7, 3.0, float(train[-1]), 500.0])
    return levels.repeat(b)[:b]


@pytest.mark.parametrize("name", ["edm", "v"])
def test_denoiser_is_genforges_denoiser_at_every_noise_level(exported, name):
    model, out, _ = exported(name)
    diffusion, denoiser = model.family, session(out / "denoiser.onnx")
    labelled = diffusion.num_classes is not None
    for b in (*BATCHES, 7):
        x, sigma = 2 * torch.randn(b, 1, 8, 8), noise_levels(model, b)
        labels = torch.randint(10, (b,))
        feeds = {"x": x, "sigma": sigma, **({"labels": labels} if labelled else {})}
        denoised, unclipped = run(denoiser, **feeds)
        with torch.no_grad():
            assert_close(denoised, diffusion.denoiser(labels if labelled else None)(x, sigma))
        assert torch.equal(denoised, unclipped.clamp(-1, 1))
        if labelled:  # the null label is the unconditional model, and guidance mixes the two calls' estimates
            _, unconditional = run(denoiser, x=x, sigma=sigma, labels=torch.full((b,), diffusion.null_label))
            with torch.no_grad():
                assert_close(unconditional.clamp(-1, 1), diffusion.denoiser(None)(x, sigma))
                guided = diffusion.denoiser(labels, guidance=2.5)(x, sigma)
            assert_close((unconditional + 2.5 * (unclipped - unconditional)).clamp(-1, 1), guided)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_a_solver_driven_by_the_onnx_denoiser_draws_genforges_samples(exported, sampler):
    model, out, _ = exported("v")
    denoiser = session(out / "denoiser.onnx")
    facts = json.loads((out / "onnx.json").read_text())["nets"][0]["facts"]
    sigmas = torch.tensor(facts["sampling_sigmas"], dtype=torch.float64)
    start = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * (1 + sigmas[0] ** 2).sqrt().item()

    def onnx_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return run(denoiser, x=x, sigma=sigma.float().expand(x.shape[0]))[0]

    images = solvers.sample(sampler, onnx_denoiser, start, sigmas).clamp(-1, 1)
    want = model.family.sample(3, generator=torch.Generator().manual_seed(0), sampler=sampler)
    assert_close(images, want)


def test_wave_diffusion_exports_its_1d_denoiser(tmp_path):
    from genforge.families.wave_diffusion import WaveDiffusion, WaveDiffusionConfig

    config = WaveDiffusionConfig(residual_channels=8, residual_layers=3, dilation_cycle=2, timesteps=50)
    wave = perturb(WaveDiffusion(config, DataSpec("audio", (1, 64))), seed=3)
    write_nets(wave.sampling_nets(), tmp_path)
    denoiser = session(tmp_path / "denoiser.onnx")
    for b in BATCHES:
        x, sigma = torch.randn(b, 1, 64), torch.rand(b) * 5
        denoised, _ = run(denoiser, x=x, sigma=sigma)
        with torch.no_grad():
            assert_close(denoised, wave.denoiser()(x, sigma))


# ---- transformer -----------------------------------------------------------------------------------------------
def check_cached_decoding(net, forward, step) -> None:
    """forward's logits are the net's; a prompt prefilled by forward, then 3 steps of one token each, give the
    net's logits of the whole sequence at those positions, at two batch sizes."""
    for b in BATCHES:
        ids = torch.randint(net.vocab_size, (b, 9))
        with torch.no_grad():
            full = net(ids)
        logits, present = run(forward, input_ids=ids[:, :6])
        assert_close(logits, full[:, :6])
        assert present.shape == (b, net.n_layer, 2, net.n_head, 6, net.head_dim)
        prefill = present
        for t in range(6, 9):
            logits, present = run(step, input_ids=ids[:, t:t + 1], past=present)
            assert_close(logits[:, 0], full[:, t])
        assert present.shape[4] == 9
        logits, at_once = run(step, input_ids=ids[:, 6:], past=prefill)  # several new tokens in one call
        assert_close(logits, full[:, 6:])
        assert_close(at_once, present)


def test_transformer_forward_and_cached_steps_give_the_full_forwards_logits(exported):
    model, out, result = exported("transformer")
    assert result.files == ["forward.onnx", "step.onnx", "onnx.json", "tokenizer.json"]
    assert (model.run.config.model["pos"], model.run.config.model["norm"]) == ("rope", "rmsnorm")
    check_cached_decoding(model.family.net, session(out / "forward.onnx"), session(out / "step.onnx"))


@pytest.mark.parametrize("mlp", ["gelu", "gelu_tanh"])
def test_transformer_exports_with_a_position_table_layernorm_gelu_and_biases(tmp_path, mlp):
    from genforge.families.transformer import Transformer, TransformerConfig

    config = TransformerConfig(n_layer=1, n_head=2, n_embd=16, pos="learned", norm="layernorm", mlp=mlp, bias=True)
    transformer = perturb(Transformer(config, DataSpec("text", (16,), vocab_size=30)), seed=4)
    write_nets(transformer.sampling_nets(), tmp_path)
    check_cached_decoding(transformer.net, session(tmp_path / "forward.onnx"), session(tmp_path / "step.onnx"))


# ---- tables ------------------------------------------------------------------------------------------------------
def span_view(out: torch.Tensor, spans) -> torch.Tensor:
    """tanh on continuous spans, a softmax per one-hot group: what genforge's row sampler draws from."""
    return torch.cat([torch.tanh(out[:, s.start:s.stop]) if s.activation == "tanh" else
                      torch.softmax(out[:, s.start:s.stop], dim=1) for s in spans], dim=1)


def test_table_gan_generator_gives_each_spans_values_and_probabilities(exported):
    model, out, _ = exported("table_gan")
    gan, generator = model.family, session(out / "generator.onnx")
    for b in BATCHES:
        z = torch.randn(b, 8)
        cond = gan.sampling_conditions(b, torch.Generator().manual_seed(b))
        rows, = run(generator, z=z, cond=cond)
        with torch.no_grad():
            assert_close(rows, span_view(gan.generator(torch.cat([z, cond], dim=1)), gan.spans))


def test_table_vae_decoder_and_table_diffusion_denoiser(exported):
    model, out, _ = exported("table_vae")
    decoder = session(out / "decoder.onnx")
    for b in BATCHES:
        z = torch.randn(b, 8)
        rows, = run(decoder, z=z)
        with torch.no_grad():
            assert_close(rows, span_view(model.family.decoder(z), model.family.spans))
    model, out, _ = exported("table_diffusion")
    denoiser = session(out / "denoiser.onnx")
    width = model.spec.shape[0]
    for b in BATCHES:
        rows, t = torch.randn(b, width), torch.randint(20, (b,))
        prediction, = run(denoiser, rows=rows, t=t)
        with torch.no_grad():
            assert_close(prediction, model.family.net(rows, t))


def test_table_gan_without_categorical_columns_takes_latents_only(tmp_path):
    from genforge.families.table_gan import TableGAN, TableGANConfig

    layout = {"spans": [{"column": "a", "kind": "value", "start": 0, "width": 1},
                        {"column": "a", "kind": "mode", "start": 1, "width": 2}], "columns": []}
    gan = perturb(TableGAN(TableGANConfig(latent_dim=4, generator_dim=[8], discriminator_dim=[8]),
                           DataSpec("table", (3,), table=layout)), seed=6)
    nets = gan.sampling_nets()
    assert list(nets[0].inputs) == ["z"]
    write_nets(nets, tmp_path)
    z = torch.randn(3, 4)
    rows, = run(session(tmp_path / "generator.onnx"), z=z)
    with torch.no_grad():
        assert_close(rows, span_view(gan.generator(z), gan.spans))


# ---- the folder, the description, refusals -----------------------------------------------------------------------
def test_export_run_writes_the_nets_onnx_json_and_a_card_whose_snippet_runs(runs, tmp_path):
    out, result = export_run(runs["gan"], "onnx", tmp_path / "export")
    assert {"generator.onnx", "onnx.json", "README.md"} <= set(result.files) <= {p.name for p in out.iterdir()}
    assert "onnxruntime" in (out / "README.md").read_text() and result.pipeline_tag == "unconditional-image-generation"
    info = json.loads((out / "onnx.json").read_text())
    assert (info["format"], info["family"], info["opset"], info["model"]["latent_dim"]) == ("onnx", "gan", 17, 8)
    assert info["data"] == {"modality": "image", "kind": "image", "shape": [1, 8, 8], "value_range": [-1.0, 1.0],
                            "num_classes": 10, "class_names": [str(i) for i in range(10)]}
    net, = info["nets"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in net["inputs"]] == [("z", "float32", ["batch", 8]),
                                                                          ("labels", "int64", ["batch"])]
    assert net["outputs"] == [{"name": "images", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    assert "truncation" in net["summary"]
    namespace: dict = {}
    exec(result.load.replace("{path}", str(out)), namespace)  # the card's snippet, as a user would run it
    assert namespace["images"].shape == (4, 1, 8, 8)


def test_diffusion_description_gives_the_noise_levels_and_sampler_defaults(exported):
    _, out, result = exported("edm")
    net, = json.loads((out / "onnx.json").read_text())["nets"]
    assert [(i["name"], i["shape"]) for i in net["inputs"]] == [("x", ["batch", 1, 8, 8]), ("sigma", ["batch"]),
                                                                ("labels", ["batch"])]
    assert [o["name"] for o in net["outputs"]] == ["denoised", "unclipped"]
    facts = net["facts"]
    assert (facts["timesteps"], facts["null_label"], facts["steps"], facts["prediction"]) == (100, 10, 4, "edm")
    assert len(facts["training_sigmas"]) == 100 and len(facts["sampling_sigmas"]) == 5
    assert facts["sampling_sigmas"][0] == facts["training_sigmas"][-1] and facts["sampling_sigmas"][-1] == 0
    namespace: dict = {}
    exec(result.load.replace("{path}", str(out)), namespace)
    assert namespace["denoised"].shape == (4, 1, 8, 8)


def test_transformer_description_names_its_cache_axes(exported):
    model, out, result = exported("transformer")
    info = json.loads((out / "onnx.json").read_text())
    forward, step = info["nets"]
    assert step["dynamic_axes"] == {"input_ids": {"0": "batch", "1": "sequence"}, "past": {"0": "batch", "4": "past"},
                                    "logits": {"0": "batch", "1": "sequence"}, "present": {"0": "batch", "4": "total"}}
    assert [i["shape"] for i in step["inputs"]] == [["batch", "sequence"], ["batch", 2, 2, 2, "past", 8]]
    assert forward["facts"]["vocab_size"] == model.spec.vocab_size and forward["facts"]["end_of_text"] == 0
    assert info["data"]["vocab_size"] == model.spec.vocab_size and result.pipeline_tag == "text-generation"
    namespace: dict = {}
    exec(result.load.replace("{path}", str(out)), namespace)
    assert namespace["logits"].shape[0] == 4 and namespace["present"].shape[:2] == (4, 2)


def test_export_is_quiet_and_leaves_the_family_as_it_was(exported, tmp_path, capfd):
    model, _, _ = exported("gan")
    model.family.train()
    before = {k: v.clone() for k, v in model.family.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(model, tmp_path)
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr() == ("", "")
    assert all(m.training for m in model.family.modules())  # and BatchNorm's statistics untouched:
    assert all(torch.equal(v, before[k]) for k, v in model.family.state_dict().items())
    model.family.eval()


def test_a_family_without_onnx_is_refused_in_one_line(runs, tmp_path):
    model = genforge.load(runs["table_transformer"], device="cpu")
    with pytest.raises(ExportError) as refused:
        export(model, tmp_path)
    assert "\n" not in str(refused.value) and "has no ONNX export" in str(refused.value)
    with pytest.raises(ConfigError, match=r"^the transformer family on .* declares no ONNX export; formats it exports: "
                                          r"none$"):
        model.family.sampling_nets()
    with pytest.raises(ExportError) as refused:  # the same refusal through `genforge export`'s dispatch
        export_run(runs["table_transformer"], "onnx", tmp_path / "out")
    assert "\n" not in str(refused.value) and "onnx" in str(refused.value)
