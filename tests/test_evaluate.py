"""The evaluation suite end to end: extractors and their cache, image and text scores, results files,
`--eval-every`, and the `eval` / `compare` commands.

Image scores here go through the Evaluator's feature path (extractor features times the one scalar that
gives the training split's features unit mean variance), i.e. exactly what `genforge eval` reports.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from clitools import one_error_line, run_main
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from genforge.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_TRANSFORMER = ("data.block_size=32", "model.n_layer=1", "model.n_embd=32", "model.n_head=2")
ALL_IMAGE_METRICS = {"fd", "kid", "kid_se", "precision", "recall", "density", "coverage", "memorisation",
                     "nll_bound_nats", "bits_per_dim"}
runner = CliRunner()


# ---- shared runs and data --------------------------------------------------------------------------------
def train(**kwargs):
    from genforge.api import train as api_train

    return api_train(progress=False, **kwargs)


@pytest.fixture(scope="module")
def digits(genforge_cache):
    from genforge.modalities import prepare

    return prepare("digits", progress=False)


@pytest.fixture(scope="module")
def vae_run(genforge_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "vae"
    train(family="vae", data="digits", out=out, steps=20)
    return out


def corpus(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


ASCII_TEXT = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n" * 120
CODE_TEXT = "def add(a, b):\n    return a + b\n\n\nclass Box:\n    size = 3\n\n" * 100
UNICODE_TEXT = "Grüße aus Köln — 3 € für Crème brûlée, naïve café!\n" * 150


@pytest.fixture(scope="module")
def text_runs(genforge_cache, tmp_path_factory) -> dict[str, Path]:
    """Tiny transformers, a few steps each, on an ASCII .txt, a .py and a non-ASCII .txt file."""
    root = tmp_path_factory.mktemp("text-runs")
    runs = {}
    for key, name, text in [("txt", "corpus.txt", ASCII_TEXT), ("py", "corpus.py", CODE_TEXT),
                            ("unicode", "unicode.txt", UNICODE_TEXT)]:
        source = corpus(root, name, text)
        runs[key] = root / f"tf-{key}"
        train(family="transformer", data=f"text:{source}", out=runs[key], steps=5, overrides=TINY_TRANSFORMER)
    return runs


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    (dest / "eval.json").unlink(missing_ok=True)
    return dest


def evaluator_for(run: Path, prepared, features: str, n: int = 30):
    """The image scorer an Evaluator builds for ``prepared`` (its reference features and extractor)."""
    from genforge.evaluate.evaluator import Evaluator
    from genforge.runs import Run

    return Evaluator(prepared, data=Run.open(run).config.data.source, features=features, n=n, progress=False).scorer


# ---- 1, 2: the scores respond to corruption, and are 0 on the real data itself ---------------------------
def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    t = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), (k[:, None] * k[None, :])[None, None])


def corrupted(x: torch.Tensor, kind: str) -> list[torch.Tensor]:
    """Clean images, then four increasingly corrupted copies (one fixed noise draw, scaled up; or wider blurs)."""
    if kind == "noise":
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        return [x] + [(x + s * noise).clamp(-1, 1) for s in (0.3, 0.6, 1.0, 2.0)]
    return [x] + [gaussian_blur(x, s) for s in (0.5, 0.8, 1.2, 2.0)]


@pytest.mark.parametrize("kind", ["noise", "blur"])
@pytest.mark.parametrize("features", [pytest.param("classifier", marks=pytest.mark.slow), "random"])
def test_fd_and_kid_grow_as_real_digits_are_corrupted(vae_run, digits, features, kind):
    from genforge.evaluate.image_metrics import frechet_distance, kid

    ev = evaluator_for(vae_run, digits, features)
    reference = ev.reference_features()  # the training split
    held_out = digits.val.get(slice(None))["x"]  # 180 images the extractor was not trained on
    fds, kids = [], []
    for images in corrupted(held_out, kind):
        f = ev.features(images)
        fds.append(frechet_distance(reference, f))
        kids.append(kid(reference, f, subsets=20, seed=0)[0])
    assert all(a < b for a, b in zip(fds, fds[1:])), f"FD not strictly increasing: {fds}"
    assert all(a < b for a, b in zip(kids, kids[1:])), f"KID not strictly increasing: {kids}"
    assert fds[-1] > 5 * max(fds[0], 1e-3)  # the worst corruption is far from the clean held-out set


def test_fd_of_held_out_set_against_itself_is_zero(vae_run, digits):
    from genforge.evaluate.image_metrics import frechet_distance, image_scores

    ev = evaluator_for(vae_run, digits, "classifier")
    held_out = digits.val.get(slice(None))["x"]
    a, b = ev.features(held_out), ev.features(held_out.clone())
    assert torch.equal(a, b)  # the extractor is deterministic
    scale = float(a.double().var(dim=0).sum())  # tr(cov): the FD of unrelated sets is of this order
    assert scale > 1.0
    assert frechet_distance(a, b) < 1e-6 * scale
    scores = image_scores(a.numpy(), b.numpy(), seed=0)
    assert scores["fd"] < 1e-6 * scale  # (KID's unbiased estimator is not 0 on one set paired with itself)
    assert scores["precision"] == scores["recall"] == scores["coverage"] == 1.0
    # features do not depend on how the images are batched
    ev.extractor.batch_size = 7
    torch.testing.assert_close(ev.features(held_out), a, rtol=1e-5, atol=1e-5)


# ---- 3: extractors and their cache -------------------------------------------------------------------------
@pytest.fixture
def quick_extractors(monkeypatch, tmp_path, digits):
    """A private extractor cache and 25 training steps instead of 600, counting trainings."""
    from genforge.evaluate import extractors

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))  # digits was prepared in the session cache
    monkeypatch.setattr(extractors, "TRAIN_STEPS", 25)
    calls = []
    real_train = extractors._train

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(extractors, "_train", counting)
    return calls


def cached_file(tmp_path: Path, name: str, prepared) -> Path:
    from genforge.evaluate.extractors import RECIPE_VERSION

    return tmp_path / "cache" / "extractors" / f"{name}-{prepared.path.name}-seed0-v{RECIPE_VERSION}.safetensors"


@pytest.mark.parametrize("name", ["classifier", "autoencoder"])
def test_extractor_is_trained_once_then_read_from_the_cache(quick_extractors, monkeypatch, tmp_path, digits, name):
    from genforge.evaluate import extractors

    first = extractors.get_extractor(name, digits, progress=False)
    assert quick_extractors == [name] and cached_file(tmp_path, name, digits).is_file()
    assert len(first.fingerprint) == 12 and first.dim == (128 if name == "classifier" else extractors.CODE_DIM)

    def no_training(*args, **kwargs):
        raise AssertionError("the extractor was trained again instead of read from the cache")

    monkeypatch.setattr(extractors, "_train", no_training)
    second = extractors.get_extractor(name, digits, progress=False)
    assert second.fingerprint == first.fingerprint and second.detail == first.detail
    x = digits.val.get(slice(0, 16))["x"]
    assert torch.equal(second(x), first(x))
    if name == "classifier":
        assert extractors.get_extractor("auto", digits, progress=False).fingerprint == first.fingerprint


def test_damaged_extractor_cache_is_rebuilt(quick_extractors, tmp_path, digits):
    from genforge.evaluate import extractors
    from genforge.io import load_tensors

    original = extractors.get_extractor("classifier", digits, progress=False)
    path = cached_file(tmp_path, "classifier", digits)
    good = path.read_bytes()
    other = {k: v.contiguous() for k, v in extractors.RandomFeatures(1).state_dict().items()}
    damages = {
        "garbage": lambda: path.write_bytes(b"this is not a safetensors file"),
        "truncated": lambda: path.write_bytes(good[: len(good) // 2]),
        "header only": lambda: path.write_bytes(good[:6]),
        "wrong tensors": lambda: save_file(other, str(path), metadata={"val_accuracy": "0.5"}),
    }
    for what, damage in damages.items():
        damage()
        before = len(quick_extractors)
        rebuilt = extractors.get_extractor("classifier", digits, progress=False)
        assert len(quick_extractors) == before + 1, f"{what}: not retrained"
        assert set(load_tensors(path)) == set(original.net.state_dict()), what  # a good file again
        assert extractors.get_extractor("classifier", digits, progress=False).fingerprint == rebuilt.fingerprint
        assert len(quick_extractors) == before + 1, f"{what}: the rebuilt file was not used"


def test_extractor_weights_do_not_depend_on_the_global_rng(quick_extractors, monkeypatch, tmp_path, digits):
    from genforge.evaluate import extractors

    torch.manual_seed(1)
    first = extractors.get_extractor("classifier", digits, progress=False)
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "another-cache"))  # as on another machine
    torch.manual_seed(2)
    second = extractors.get_extractor("classifier", digits, progress=False)
    assert len(quick_extractors) == 2
    assert second.fingerprint == first.fingerprint


def test_extractor_choice_errors(digits, tmp_path, genforge_cache):
    from genforge.modalities import prepare
    from genforge.evaluate.extractors import get_extractor, resolve_name

    with pytest.raises(ConfigError, match="unknown feature extractor 'inception'.*classifier, autoencoder, random"):
        get_extractor("inception", digits, progress=False)
    for name in ("classifier", "random", "auto", "autoencoder"):
        with pytest.raises(ConfigError, match="--weights applies to --features dinov2 only"):
            get_extractor(name, digits, weights=tmp_path, progress=False)

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    unlabelled = prepare(f"folder:{folder}", progress=False)
    assert unlabelled.spec.num_classes is None
    with pytest.raises(ConfigError, match="needs labelled data.*autoencoder or random"):
        get_extractor("classifier", unlabelled, progress=False)
    assert resolve_name("auto", has_labels=False) == "autoencoder"
    assert resolve_name("auto", has_labels=True) == "classifier"


def tiny_dinov2_weights(folder: Path) -> Path:
    """A 2-layer, 32-d DINOv2 with random weights in the Hugging Face layout (as tests/test_dinov2.py)."""
    from genforge.evaluate.dinov2 import DinoV2

    config = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 4,
              "image_size": 16, "mlp_ratio": 4, "layer_norm_eps": 1e-6, "layerscale_value": 1.0,
              "use_swiglu_ffn": False, "num_channels": 3, "hidden_act": "gelu"}
    torch.manual_seed(0)
    model = DinoV2(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_dinov2_extractor_from_user_weights(digits, tmp_path):
    from genforge.evaluate.dinov2 import load_dinov2
    from genforge.evaluate.extractors import get_extractor

    weights = tiny_dinov2_weights(tmp_path / "dino")
    extractor = get_extractor("dinov2", digits, weights=weights, progress=False)
    assert extractor.name == "dinov2" and extractor.dim == 32
    assert extractor.fingerprint == load_dinov2(weights).fingerprint
    assert extractor.info()["fingerprint"] == extractor.fingerprint and extractor.info()["dim"] == 32
    x = digits.val.get(slice(0, 3))["x"]  # 8x8 grey digits, resized to 224 and made RGB by the loader
    features = extractor(x)
    assert features.shape == (3, 32) and features.dtype == torch.float32 and torch.isfinite(features).all()
    assert torch.equal(features, extractor(x))
    assert not torch.equal(features[0], features[1])


# ---- 4: results ----------------------------------------------------------------------------------------------
def result(name="a", n=100, fingerprint="abc123abc123", entry="digits-1", ref_n=1617, split="train", **metrics):
    return {"format": "genforge-eval-1", "name": name, "run": f"runs/{name}", "family": "vae", "data": "digits",
            "modality": "image", "step": 20, "n": n, "seed": 0,
            "reference": {"data": "digits", "split": split, "n": ref_n, "entry": entry},
            "extractor": {"name": "classifier", "fingerprint": fingerprint, "dim": 128, "detail": "CNN"},
            "metrics": {"fd": 1.0, **metrics}, "sampling": None, "examples": [], "seconds": 1.0,
            "created": "2026-01-01T00:00:00Z"}


def text_result(name="t", n=8, tokens=2000, entry="text-1"):
    return {"format": "genforge-eval-1", "name": name, "run": f"runs/{name}", "family": "transformer",
            "data": "text:x", "modality": "text", "step": 5, "n": n, "seed": 0,
            "reference": {"data": "text:x", "split": "val", "tokens": tokens, "entry": entry},
            "extractor": None, "metrics": {"val_loss": 1.0}, "sampling": None, "examples": [], "seconds": 1.0,
            "created": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize("change", [
    {"n": 200}, {"fingerprint": "ffffffffffff"}, {"entry": "mnist-2"}, {"ref_n": 1000}, {"split": "val"},
])
def test_check_comparable_refuses_different_measurements(change):
    from genforge.evaluate.results import check_comparable

    with pytest.raises(ConfigError) as e:
        check_comparable([result("gan"), result("vae"), result("diffusion", **change)])
    message = str(e.value)
    assert "\n" not in message and "cannot compare" in message
    assert "'gan'" in message and "'diffusion'" in message


def test_check_comparable_passes_like_with_like():
    from genforge.evaluate.results import check_comparable

    check_comparable([])
    check_comparable([result("gan", fd=3.0), result("vae", fd=9.0, kid=1.0)])  # names and scores may differ
    check_comparable([text_result("t1"), text_result("t2")])
    for other in (text_result("t2", n=9), text_result("t2", tokens=1999), text_result("t2", entry="text-2")):
        with pytest.raises(ConfigError, match="cannot compare 't1'.*'t2'"):
            check_comparable([text_result("t1"), other])


def test_save_result_keeps_other_entries_and_replaces_its_own(tmp_path):
    from genforge.evaluate.results import find_result, load_results, result_key, save_result

    first = result("vae", n=100, fd=5.0)
    save_result(tmp_path, {**first, "reference_result": result("real data (held-out)")})
    save_result(tmp_path, result("vae", n=200, fd=7.0))
    save_result(tmp_path, text_result("vae"))
    replaced = {**result("vae", n=100, fd=4.0), "created": "2026-02-01T00:00:00Z"}
    save_result(tmp_path, replaced)
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["format"] == "genforge-eval-1" and data["latest"] == "classifier/n=100"
    kept = load_results(tmp_path)
    assert sorted(kept) == ["classifier/n=100", "classifier/n=200", "text/n=8"]
    assert kept["classifier/n=100"]["metrics"]["fd"] == 4.0 and kept["classifier/n=200"]["metrics"]["fd"] == 7.0
    assert all("reference_result" not in r for r in kept.values())
    assert result_key(replaced) == "classifier/n=100"
    assert find_result(tmp_path, "classifier", 100)["metrics"]["fd"] == 4.0
    assert find_result(tmp_path, "classifier", None)["created"] == "2026-02-01T00:00:00Z"
    assert find_result(tmp_path, "text", 8)["modality"] == "text"
    assert find_result(tmp_path, "random", 100) is None and find_result(tmp_path / "nowhere", "text", 8) is None


@pytest.mark.parametrize("content", [
    b"{not json", b'{"format": "genforge-eval-1", "results": {"a": ', b"\xff\xfe\x00garbage", b"[1, 2]",
    b'{"format": "other", "results": {}}', b'{"format": "genforge-eval-1", "results": []}', b"",
])
def test_unreadable_eval_json_is_treated_as_empty(tmp_path, content):
    from genforge.evaluate.results import find_result, load_results, save_result

    (tmp_path / "eval.json").write_bytes(content)
    assert load_results(tmp_path) == {}
    assert find_result(tmp_path, "classifier", 100) is None
    save_result(tmp_path, result("vae"))
    assert list(load_results(tmp_path)) == ["classifier/n=100"]


# ---- 5: evaluate() on an image run -----------------------------------------------------------------------
LIKELIHOOD_SAMPLES = 20  # importance samples: the reporting default (1,000) costs minutes on digits


def test_evaluate_image_run(vae_run, digits, tmp_path):
    import genforge
    from genforge.api import load
    from genforge.api import evaluate
    from genforge.evaluate.evaluator import REFERENCE_NAME
    from genforge.evaluate.extractors import get_extractor
    from genforge.evaluate.results import load_results

    run = copy_run(vae_run, tmp_path / "vae")
    (run / "eval.json").write_text("{ corrupt")  # an unreadable eval.json is replaced by a good one
    res = genforge.evaluate(run, n=100, reference=True, progress=False, device="cpu",  # the notebook form
                            likelihood_samples=LIKELIHOOD_SAMPLES)
    assert res["likelihood_samples"] == LIKELIHOOD_SAMPLES
    assert res["n"] == 100 and res["seed"] == 0 and res["modality"] == "image" and res["step"] == 20
    assert res["family"] == "vae" and res["data"] == "digits" and res["name"] == "vae"
    assert res["reference"] == {"data": "digits", "split": "train", "n": len(digits.train), "entry": digits.path.name}
    classifier = get_extractor("classifier", digits, progress=False)
    assert res["extractor"] == classifier.info() and res["extractor"]["name"] == "classifier"
    assert set(res["metrics"]) == ALL_IMAGE_METRICS and all(math.isfinite(v) for v in res["metrics"].values())
    m = res["metrics"]
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and 0 <= m["coverage"] <= 1
    assert m["bits_per_dim"] == pytest.approx(m["nll_bound_nats"] / (64 * math.log(2)))

    # the likelihood bound: the mean IWAE bound over the validation split, posterior noise from Generator(seed)
    model = load(run, device="cpu")
    val = digits.val.get(slice(None))
    nelbo = model.family.log_likelihood(val, generator=torch.Generator().manual_seed(0), samples=LIKELIHOOD_SAMPLES)
    assert m["nll_bound_nats"] == pytest.approx(float(nelbo.double().mean()), rel=1e-5)

    stored = load_results(run)
    assert list(stored) == ["classifier/n=100"]
    assert stored["classifier/n=100"]["metrics"] == res["metrics"] and "reference_result" not in stored["classifier/n=100"]

    floor = res["reference_result"]
    assert floor["name"] == REFERENCE_NAME and floor["n"] == 100 and floor["sampling"] is None
    assert floor["reference"] == res["reference"] and floor["extractor"] == res["extractor"]
    assert floor["metrics"]["fd"] < 0.25 * m["fd"], (floor["metrics"]["fd"], m["fd"])  # 20 steps are far from real
    assert floor["metrics"]["precision"] > m["precision"] and floor["metrics"]["coverage"] > m["coverage"]

    again = evaluate(model, n=100, progress=False, save=False, likelihood_samples=LIKELIHOOD_SAMPLES)  # a Model works too
    assert again["metrics"] == res["metrics"]  # same seed: identical scores
    other_seed = evaluate(run, n=100, seed=1, progress=False, save=False, device="cpu", likelihood_samples=LIKELIHOOD_SAMPLES)
    assert other_seed["metrics"]["fd"] != res["metrics"]["fd"]
    assert list(load_results(run)) == ["classifier/n=100"]  # save=False wrote nothing


# ---- 6: VAE.log_likelihood -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_model(vae_run):
    from genforge.api import load

    return load(vae_run, device="cpu").family


def test_vae_log_likelihood_is_recon_plus_kl(vae_model, digits):
    vae = vae_model
    batch = digits.val.get(slice(0, 40))
    nelbo = vae.log_likelihood(batch, generator=torch.Generator().manual_seed(3), samples=1)
    assert nelbo.shape == (40,) and torch.isfinite(nelbo).all() and (nelbo >= 0).all()

    with torch.no_grad():  # by hand: eval-mode encoder, one posterior draw, Bernoulli decoder, KL to N(m_y, I)
        vae.eval()
        seen = vae.data_view(batch["x"])  # new runs binarise: the encoder and the decoder's target see {-1, 1}
        mu, logvar = vae.encoder(seen).float().chunk(2, dim=1)
        logvar = logvar.clamp(-20, 10)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        logits = vae.decoder(mu + eps * torch.exp(0.5 * logvar))
        target = (seen + 1) / 2
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((1, 2, 3))
        prior = vae.prior_means.weight[batch["y"]]
        kl = 0.5 * (logvar.exp() + (mu - prior) ** 2 - 1 - logvar).sum(1)
    torch.testing.assert_close(nelbo, recon + kl, rtol=1e-5, atol=1e-4)
    assert not torch.equal(nelbo, vae.log_likelihood(batch, generator=torch.Generator().manual_seed(4), samples=1))
    torch.testing.assert_close(nelbo, vae.log_likelihood(batch, generator=torch.Generator().manual_seed(3), samples=1))


def test_vae_log_likelihood_matches_training_nelbo_with_the_same_noise(vae_model, digits):
    vae = vae_model
    batch = digits.val.get(slice(0, 40))
    with torch.no_grad():
        vae.eval()  # BatchNorm on running statistics, as log_likelihood uses it
        torch.manual_seed(11)  # training draws its noise from the global generator
        _, loss, logs = next(vae.training_step(batch))
    bound = vae.log_likelihood(batch, generator=torch.Generator().manual_seed(11), samples=1)
    assert float(logs["nelbo"]) == pytest.approx(float(bound.mean()), rel=1e-5)
    assert float(loss) == pytest.approx(float(logs["nelbo"]), rel=1e-6)  # kl_beta = 1: the loss is the bound


def test_vae_log_likelihood_needs_labels_when_class_conditional(vae_model, digits):
    from genforge.families.vae import VAE, VAEConfig

    x = digits.val.get(slice(0, 4))["x"]
    assert vae_model.num_classes == 10
    with pytest.raises(ConfigError, match="class-conditional.*labels"):
        vae_model.log_likelihood({"x": x})
    plain = VAE(VAEConfig(class_conditional=False), digits.spec)
    assert plain.log_likelihood({"x": x}).shape == (4,)  # an unconditional VAE needs none
    with pytest.raises(ConfigError, match="expected images shaped"):
        vae_model.log_likelihood({"x": x[:, :, :4], "y": torch.zeros(4, dtype=torch.long)})


# ---- 7: text runs -----------------------------------------------------------------------------------------
def independent_val_loss(run: Path, n_bytes_of) -> tuple[float, int, int]:
    """(total nats, predicted tokens, UTF-8 bytes of those tokens) over non-overlapping windows of the
    validation stream, computed from the network's logits."""
    from genforge.api import load
    from genforge.modalities import prepare

    model = load(run, device="cpu")
    prepared = prepare(model.run.config.data.source, model.run.config.data, progress=False)
    tokens = torch.from_numpy(np.asarray(prepared.val.tokens).astype(np.int64))
    block = prepared.val.block_size
    k = (len(tokens) - 1) // block
    x = tokens[: k * block].view(k, block)
    y = tokens[1: k * block + 1].view(k, block)
    with torch.no_grad():
        model.family.eval()
        logits = model.family.net(x).float()
    nats = float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").double())
    return nats, y.numel(), n_bytes_of(prepared.tokenizer, y)


def ascii_bytes(tokenizer, y):
    return int((y != tokenizer.eot_id).sum())  # ASCII: one byte per token, none for end-of-text


def utf8_bytes(tokenizer, y):
    return sum(len(tokenizer.decode([t]).encode("utf-8")) for t in y.flatten().tolist() if t != tokenizer.eot_id)


@pytest.mark.parametrize("key", ["txt", "unicode"])
def test_text_bits_per_byte_and_perplexity(text_runs, key):
    from genforge.api import evaluate

    res = evaluate(text_runs[key], n=8, progress=False, save=False, device="cpu")
    m = res["metrics"]
    nats, count, n_bytes = independent_val_loss(text_runs[key], ascii_bytes if key == "txt" else utf8_bytes)
    if key == "unicode":
        assert n_bytes > count  # multi-byte characters: bytes and tokens differ
    assert m["val_loss"] == pytest.approx(nats / count, rel=1e-5)
    assert m["bits_per_byte"] == pytest.approx(m["val_loss"] * count / (n_bytes * math.log(2)), rel=1e-6)
    assert m["bits_per_byte"] == pytest.approx(nats / (n_bytes * math.log(2)), rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(m["val_loss"]), rel=1e-9)
    # the reference names the whole validation stream (up to MAX_VAL_TOKENS); the loss covers its full windows
    assert res["reference"]["split"] == "val" and count <= res["reference"]["tokens"] < count + 32
    assert res["extractor"] is None and res["n"] == 8


def test_text_sample_metrics_and_parse_share_only_for_code(text_runs):
    from genforge.api import evaluate

    text = evaluate(text_runs["txt"], n=8, progress=False, save=False, device="cpu", reference=True)
    code = evaluate(text_runs["py"], n=8, progress=False, save=False, device="cpu", reference=True)
    base = {"val_loss", "perplexity", "bits_per_byte", "distinct_1", "distinct_2", "distinct_3", "self_bleu"}
    assert set(text["metrics"]) == base
    assert set(code["metrics"]) == base | {"parse_share"}
    assert 0 <= code["metrics"]["parse_share"] <= 1 and 0 <= text["metrics"]["self_bleu"] <= 1
    assert all(0 <= text["metrics"][f"distinct_{k}"] <= 1 for k in (1, 2, 3))
    assert text["sampling"]["unit"] == "tok" and 0 < len(text["examples"]) <= 4
    # the real-data row: sample metrics of held-out snippets, parse_share again only for code
    assert set(text["reference_result"]["metrics"]) == base - {"val_loss", "perplexity", "bits_per_byte"}
    assert "parse_share" in code["reference_result"]["metrics"]
    again = evaluate(text_runs["txt"], n=8, progress=False, save=False, device="cpu")
    assert again["metrics"] == text["metrics"] and again["examples"] == text["examples"]


def test_text_reference_row_with_a_small_validation_split(tmp_path):
    from genforge.api import evaluate

    source = corpus(tmp_path, "small.txt", "hello world, this is a small corpus.\n" * 60)  # ~220 val tokens
    train(family="transformer", data=f"text:{source}", out=tmp_path / "small", steps=2, overrides=TINY_TRANSFORMER)
    res = evaluate(tmp_path / "small", n=8, progress=False, save=False, device="cpu", reference=True)
    assert res["reference_result"] is None or "self_bleu" in res["reference_result"]["metrics"]


# ---- 8: --eval-every ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["vae", "transformer"])
def test_eval_every_logs_scores_and_leaves_training_untouched(family, tmp_path, text_runs):
    from genforge.io import load_tensors

    if family == "vae":
        kwargs = dict(family="vae", data="digits")
        expected = {f"eval/{k}" for k in ALL_IMAGE_METRICS}
    else:
        source = corpus(tmp_path, "corpus.txt", ASCII_TEXT)
        kwargs = dict(family="transformer", data=f"text:{source}", overrides=TINY_TRANSFORMER)
        expected = {"eval/val_loss", "eval/perplexity", "eval/bits_per_byte", "eval/self_bleu", "eval/distinct_1"}
    plain = train(out=tmp_path / "plain", steps=6, **kwargs)
    scored = train(out=tmp_path / "scored", steps=6, eval_every=3, eval_n=20, **kwargs)
    assert plain.step == scored.step == 6

    records = [json.loads(line) for line in (tmp_path / "scored" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        assert expected <= set(r) and all(math.isfinite(r[k]) for k in expected)
    assert not any(k.startswith("eval/") for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()
                   for k in json.loads(line))

    a = load_tensors(tmp_path / "plain" / "model.safetensors")
    b = load_tensors(tmp_path / "scored" / "model.safetensors")
    assert set(a) == set(b)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"evaluating during training changed the weights: {different[:5]}"

    # `info` reports the last training record, though an eval record was logged after it
    from genforge.cli import app

    shown = runner.invoke(app, ["info", str(tmp_path / "scored")], catch_exceptions=False).output
    assert "speed (last)" in shown and "/s" in shown and "main/loss" in shown, shown


def test_eval_every_rejects_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="eval_every"):
        train(family="vae", data="digits", out=tmp_path / "a", steps=2, eval_every=-1)
    with pytest.raises(ConfigError, match="eval_n"):
        train(family="vae", data="digits", out=tmp_path / "b", steps=2, eval_every=1, eval_n=1)


# ---- 9: the eval and compare commands ----------------------------------------------------------------------
def test_cli_eval_prints_table_and_writes_eval_json(vae_run, tmp_path):
    from genforge.cli import app

    run = copy_run(vae_run, tmp_path / "vae")
    out = runner.invoke(app, ["eval", str(run), "--n", "30", "--quiet", "--device", "cpu", "--likelihood-samples", "20"],
                        catch_exceptions=False)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("30 samples vs the train split of digits") and "classifier" in lines[0]
    assert "this run" in out.output and "real data" in out.output
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.split() and line.split()[0] in ALL_IMAGE_METRICS}
    assert set(rows) == ALL_IMAGE_METRICS
    assert len(rows["fd"]) == 2 and len(rows["nll_bound_nats"]) == 1  # the real data has no likelihood bound
    assert f"wrote {run / 'eval.json'}" in out.output
    stored = json.loads((run / "eval.json").read_text())
    assert list(stored["results"]) == ["classifier/n=30"]
    assert float(rows["fd"][0]) == pytest.approx(stored["results"]["classifier/n=30"]["metrics"]["fd"], rel=1e-4)


@pytest.mark.slow
def test_cli_eval_bad_inputs_give_one_line_errors(vae_run, text_runs, tmp_path):
    cases = {
        "unknown extractor": (["--features", "bogus"], vae_run, "unknown feature extractor 'bogus'"),
        "too few samples": (["--n", "1"], vae_run, "from 2 to 100,000"),
        "image extractor on text": (["--features", "classifier"], text_runs["txt"], "text run"),
        "missing run": ([], tmp_path / "no-such-run", "does not exist"),
        "missing dinov2 weights": (["--features", "dinov2", "--weights", tmp_path / "nope"], vae_run, "do not exist"),
        "weights without dinov2": (["--features", "random", "--weights", tmp_path], vae_run, "--weights applies"),
    }
    failures = []
    for what, (options, run, expected) in cases.items():
        proc = run_main("eval", run, "--quiet", "--device", "cpu", *options)
        try:
            line = one_error_line(proc)
            assert expected.lower() in line.lower(), line
        except AssertionError as e:
            failures.append(f"{what}: {e}")
    assert not failures, "\n".join(failures)


def test_cli_compare_writes_a_self_contained_report(vae_run, text_runs, tmp_path):
    from genforge.cli import app
    from genforge.evaluate.evaluator import REFERENCE_NAME

    image = copy_run(vae_run, tmp_path / "vae-digits")
    text = copy_run(text_runs["py"], tmp_path / "tiny-gpt")
    report = tmp_path / "report.html"
    out = runner.invoke(app, ["compare", str(image), str(text), "--n", "30", "--n-text", "8", "--likelihood-samples", "20",
                              "--out", str(report),
                              "--quiet", "--device", "cpu"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert f"wrote {report}" in out.output
    html = report.read_text(encoding="utf-8")
    assert "vae-digits" in html and "tiny-gpt" in html
    assert "data:image/png;base64," in html
    assert REFERENCE_NAME in html
    assert "http://" not in html.replace("http://www.w3.org", "") and 'src="http' not in html  # nothing fetched
    assert "<link" not in html and '<script src' not in html
    # the scores the report used are kept with each run
    assert list(json.loads((image / "eval.json").read_text())["results"]) == ["classifier/n=30"]
    assert list(json.loads((text / "eval.json").read_text())["results"]) == ["text/n=8"]


@pytest.mark.slow
def test_cli_compare_refuses_runs_on_different_data(vae_run, tmp_path):
    digits_run = copy_run(vae_run, tmp_path / "on-digits")
    train(family="vae", data="mnist", out=tmp_path / "on-mnist", steps=3)
    report = tmp_path / "report.html"
    # compare scores both runs before it sees they differ; one importance sample keeps the VAE's likelihood
    # bound (1000 a held-out image by default: most of a minute on mnist) from being the test's cost
    proc = run_main("compare", digits_run, tmp_path / "on-mnist", "--n", "30", "--features", "random", "--out", report,
                    "--likelihood-samples", "1", "--quiet", "--device", "cpu")
    line = one_error_line(proc)
    assert "cannot compare" in line and "on-digits" in line and "on-mnist" in line
    assert not report.exists()
    # --out naming a folder is refused before any work, and nothing is written
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_main("compare", digits_run, "--n", "30", "--out", tmp_path, "--quiet", "--device", "cpu")
    assert "is a directory" in one_error_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---- found along the way -----------------------------------------------------------------------------------
def test_genforge_train_stays_callable(genforge_cache):
    import genforge
    import genforge.train.trainer  # noqa: F401  (what the first genforge.train(...) call imports)

    assert callable(genforge.train)


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_parameter_counts_come_from_the_meta_device_and_match_a_real_build(family, tmp_path):
    # compare's overview counts parameters without allocating or initialising a network
    from genforge.api import make_config
    from genforge.modalities import prepare
    from genforge.runs import Run

    config = make_config(family, "digits", steps=1)
    run = Run.create(tmp_path / family, config, prepare("digits", config.data, progress=False).spec, None)
    assert run.num_parameters() == sum(p.numel() for p in run.build_family().parameters()) > 1000
