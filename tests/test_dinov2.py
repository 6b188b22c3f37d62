"""DINOv2: our ViT loads Hugging Face Dinov2Model weights and matches it; loading finds, checks and explains."""

import json

import pytest
import torch
from safetensors.torch import save_file

from genforge.errors import ConfigError, DataError
from genforge.evaluate.dinov2 import DinoV2, DinoV2Features, load_dinov2

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 4, "image_size": 16,
        "mlp_ratio": 4, "layer_norm_eps": 1e-6, "layerscale_value": 1.0, "use_swiglu_ffn": False, "num_channels": 3,
        "hidden_act": "gelu"}
# head size 64, so that a .safetensors file alone (no config.json) infers the very same architecture
TINY64 = {**TINY, "hidden_size": 128}


def tiny_model(config=TINY, seed=0):
    torch.manual_seed(seed)
    model = DinoV2(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # zero-initialised tokens and embeddings get values too
    return model


def save(model, folder, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def pixels(n=3, size=16, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_keys_are_those_of_hf_checkpoints():
    keys = set(DinoV2(TINY).state_dict())
    assert {"embeddings.cls_token", "embeddings.mask_token", "embeddings.position_embeddings",
            "embeddings.patch_embeddings.projection.weight", "encoder.layer.1.attention.attention.query.weight",
            "encoder.layer.0.attention.output.dense.bias", "encoder.layer.0.layer_scale1.lambda1",
            "encoder.layer.0.mlp.fc1.weight", "encoder.layer.1.layer_scale2.lambda1", "layernorm.weight"} <= keys
    assert DinoV2(TINY)(pixels()).shape == (3, 32)


@pytest.mark.parametrize("layout", ["dir", "file+config", "file alone"])
def test_load_round_trip(tmp_path, layout):
    config = TINY64 if layout == "file alone" else TINY
    model = tiny_model(config)
    folder = save(model, tmp_path / "w", None if layout == "file alone" else config)
    loaded = load_dinov2(folder if layout == "dir" else folder / "model.safetensors")
    assert loaded.dim == config["hidden_size"] and loaded.name == "dinov2" and len(loaded.fingerprint) == 12
    for size in (16, 24):  # native grid, and one that interpolates the position embeddings
        x = pixels(size=size)
        with torch.no_grad():
            assert torch.equal(loaded.model(x), model(x))


def test_inferred_config_needs_64_dim_heads(tmp_path):
    folder = save(tiny_model(), tmp_path / "w")  # hidden 32: the heads cannot be read off the shapes
    with pytest.raises(ConfigError, match="config.json"):
        load_dinov2(folder / "model.safetensors")


@pytest.mark.parametrize("swiglu", [False, True])
def test_matches_hugging_face(tmp_path, swiglu):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.Dinov2Model(transformers.Dinov2Config(**{**TINY, "use_swiglu_ffn": swiglu})).eval()
    with torch.no_grad():  # HF initialises layer scale to 1, biases to 0 and the mask token to 0: shake them all
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hub")  # the hub layout: checkpoint names, config.json
    # a state dict of the model in memory: transformers 5 renamed its attention and SwiGLU weights
    (tmp_path / "raw").mkdir()
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "raw" / "weights.safetensors")
    (tmp_path / "raw" / "config.json").write_text(json.dumps({**TINY, "use_swiglu_ffn": swiglu}))
    for ours in (load_dinov2(tmp_path / "hub"), load_dinov2(tmp_path / "raw" / "weights.safetensors")):
        for size in (16, 28, 20):  # native; a larger grid and a smaller one interpolate the position embeddings
            x = pixels(size=size)
            with torch.no_grad():
                expected = hf(pixel_values=x).pooler_output
                torch.testing.assert_close(ours.model(x), expected, atol=1e-5, rtol=0)
    x = pixels(size=24)[:, :, :16]  # a non-square grid
    with torch.no_grad():
        torch.testing.assert_close(ours.model(x), hf(pixel_values=x).pooler_output, atol=1e-5, rtol=0)


def test_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="do not exist"):
        load_dinov2(tmp_path / "nope")


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(ConfigError, match="no model.safetensors"):
        load_dinov2(tmp_path)


def test_truncated_file(tmp_path):
    folder = save(tiny_model(), tmp_path / "w", TINY)
    data = (folder / "model.safetensors").read_bytes()
    for cut in (len(data) // 2, 5):  # the tensor data, then the header, cut short
        (folder / "model.safetensors").write_bytes(data[:cut])
        with pytest.raises(ConfigError, match="truncated"):
            load_dinov2(folder)


def test_wrong_keys(tmp_path):
    sd = tiny_model().state_dict()
    sd["encoder.layer.0.mlp.fc3.weight"] = sd.pop("encoder.layer.0.mlp.fc1.weight")
    (tmp_path / "w").mkdir()
    save_file(sd, tmp_path / "w" / "model.safetensors")
    (tmp_path / "w" / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(ConfigError, match=r"1 missing \(e\.g\. \['encoder\.layer\.0\.mlp\.fc1\.weight'\]\)"):
        load_dinov2(tmp_path / "w")
    save_file({"foo": torch.zeros(2)}, tmp_path / "foo.safetensors")  # no config: nothing to infer from
    with pytest.raises(ConfigError, match="does not hold DINOv2"):
        load_dinov2(tmp_path / "foo.safetensors")


def test_config_that_does_not_fit_the_weights(tmp_path):
    folder = save(tiny_model(), tmp_path / "w", {**TINY, "patch_size": 8})
    with pytest.raises(ConfigError, match="does not belong"):
        load_dinov2(folder)


def test_unsupported_config(tmp_path):
    folder = save(tiny_model(), tmp_path / "w", {**TINY, "hidden_act": "relu"})
    with pytest.raises(ConfigError, match="unsupported DINOv2 config: hidden_act"):
        load_dinov2(folder)


def test_pickle_only(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(ConfigError, match="safetensors only; convert it once"):
        load_dinov2(tmp_path)
    with pytest.raises(ConfigError, match="safetensors only"):
        load_dinov2(tmp_path / "pytorch_model.bin")


def test_pickle_only_in_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_WEIGHTS", str(tmp_path / "genforge"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snapshot = tmp_path / "hf" / "hub" / "models--facebook--dinov2-large" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ConfigError, match="dinov2-large.*safetensors only"):
        load_dinov2()


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_WEIGHTS", str(tmp_path / "genforge"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(ConfigError, match="no DINOv2 weights found.*--weights PATH") as e:
        load_dinov2()
    assert str(tmp_path / "genforge" / "dinov2") in str(e.value) and "\n" not in str(e.value)

    hub = tmp_path / "hf" / "hub"
    (hub / "models--facebook--dinov2-small" / "snapshots" / "abc").mkdir(parents=True)  # empty: skipped
    save(tiny_model(seed=2), hub / "models--facebook--dinov2-base" / "snapshots" / "def", TINY)
    base = load_dinov2()
    save(tiny_model(seed=1), hub / "models--facebook--dinov2-small" / "snapshots" / "abc", TINY)
    small = load_dinov2()
    assert small.fingerprint != base.fingerprint  # small is preferred over base
    assert small.fingerprint == load_dinov2(hub / "models--facebook--dinov2-small" / "snapshots" / "abc").fingerprint
    save(tiny_model(seed=3), tmp_path / "genforge" / "dinov2", TINY)
    assert load_dinov2().fingerprint == load_dinov2(tmp_path / "genforge" / "dinov2").fingerprint  # ours first


def test_features(tmp_path):
    features = load_dinov2(save(tiny_model(), tmp_path / "w", TINY), resolution=16)
    gray = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = features(gray)
    assert out.shape == (5, 32) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.equal(out, features(gray))
    torch.testing.assert_close(features(gray.expand(-1, 3, -1, -1)), out)  # gray is three equal channels
    features.batch_size = 2
    torch.testing.assert_close(features(gray), out, atol=1e-5, rtol=0)
    assert features(gray[:0]).shape == (0, 32)
    with pytest.raises(DataError):
        features(torch.zeros(2, 4, 16, 16))


def test_default_resolution_and_bad_resolution(tmp_path):
    folder = save(tiny_model(), tmp_path / "w", TINY)
    assert load_dinov2(folder).resolution == 224
    with pytest.raises(ConfigError, match="multiple of the patch size 4"):
        load_dinov2(folder, resolution=30)
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        DinoV2Features(DinoV2(TINY), "x", resolution=18)
