"""The pinned runs: how each was trained and which outputs of it are pinned (see make_pinned.py)."""

from __future__ import annotations

import torch

TEXT = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n" * 20

CASES = {
    "diffusion": {"family": "diffusion", "data": "digits",
                  "overrides": ["model.base_channels=8", "model.channel_mults=[1]", "model.attention_resolutions=[]"],
                  "samples": [{"n": 3, "seed": 0, "steps": 4}, {"n": 2, "seed": 1, "steps": 3, "sampler": "heun", "label": 3}]},
    "gan": {"family": "gan", "data": "digits", "overrides": ["model.width=8", "model.latent_dim=8"],
            "samples": [{"n": 3, "seed": 0}, {"n": 2, "seed": 5, "label": 7, "truncation": 0.5}]},
    "vae": {"family": "vae", "data": "digits", "overrides": ["model.width=8", "model.latent_dim=4"],
            "samples": [{"n": 3, "seed": 0}, {"n": 2, "seed": 2, "label": 1}]},
    "vqvae": {"family": "vqvae", "data": "digits", "overrides": ["model.width=8", "model.num_codes=16", "model.code_dim=4",
                                                                 "model.res_blocks=1"],
              "samples": [{"n": 3, "seed": 0}]},
    "transformer": {"family": "transformer", "data": "text:{here}/corpus.txt",
                    "overrides": ["data.block_size=32", "model.n_layer=1", "model.n_embd=16", "model.n_head=2"],
                    "samples": [{"n": 2, "seed": 0, "prompt": "def ", "temperature": 0.0, "max_new_tokens": 12},
                                {"n": 2, "seed": 3, "max_new_tokens": 12}]},
}


def sample_case(model, case) -> dict[str, torch.Tensor]:
    """The pinned outputs of one run: each sample setting's tensors (images, or token ids)."""
    out = {}
    for i, settings in enumerate(case["samples"]):
        settings = dict(settings)
        n, seed, prompt = settings.pop("n"), settings.pop("seed"), settings.pop("prompt", None)
        tensors, _ = model.sample_tensors(n, seed=seed, prompt=prompt, **settings)
        out[f"sample{i}"] = tensors.contiguous()
    return out
