"""genforge's GPT against Hugging Face transformers' GPT2LMHeadModel at the same configuration, in one run.

    python benchmarks/transformer_speed.py                         # CPU, a small model
    python benchmarks/transformer_speed.py --preset gpt2 --device cuda --compile   # GPT-2 124M, bf16

Training: the median time of a full optimisation step (forward, loss, backward, AdamW) at the same
batch, context and architecture (learned positions, LayerNorm with biases, GELU MLP, tied
embeddings: GPT-2's), so the ratio measures the implementations, not the options. Generation: greedy
decoding with a KV cache, tokens/s at batch 1 and 32, genforge's ``generate`` against HF
``generate(do_sample=False)``, genforge on the device's default decoding path (on CUDA the compiled
step with the static cache, eager with the dynamic cache elsewhere; see
``genforge.families.decode_path``) and, on CUDA, on the eager dynamic path too, so the compiled
path's gain shows. Ratios > 1 mean genforge is faster. On CUDA both run under bf16 autocast, and with
``--compile`` both models are compiled for training (generation does not depend on it). HF
transformers is a benchmark-only dependency (the `test` extra installs it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

PRESETS = {
    # the demo's character-level code model
    "demo": dict(n_layer=3, n_head=4, n_embd=128, vocab_size=128, block_size=256, batch_size=32),
    # a small code model: what a laptop CPU trains in minutes
    "small": dict(n_layer=4, n_head=4, n_embd=256, vocab_size=4096, block_size=256, batch_size=16),
    # GPT-2 124M as in nanoGPT
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304, block_size=1024, batch_size=8),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_genforge(p: dict, device: torch.device):
    from genforge.data.spec import DataSpec
    from genforge.families.transformer import Transformer, TransformerConfig

    config = TransformerConfig(n_layer=p["n_layer"], n_head=p["n_head"], n_embd=p["n_embd"], dropout=0.0, bias=True,
                               pos="learned", norm="layernorm", mlp="gelu")
    spec = DataSpec("text", (p["block_size"],), vocab_size=p["vocab_size"])
    return Transformer(config, spec).to(device)


def build_hf(p: dict, device: torch.device):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=p["vocab_size"], n_positions=p["block_size"], n_embd=p["n_embd"],
                        n_layer=p["n_layer"], n_head=p["n_head"], activation_function="gelu",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).to(device)
    model.config.pad_token_id = 0
    return model


def step_times(loss_fn, params, device, dtype, steps: int) -> list[float]:
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    times = []
    for i in range(steps + 3):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= 3:  # warm-up (and compilation) excluded
            times.append(time.perf_counter() - start)
    return times


def bench_training(p: dict, device, dtype, steps: int, compile_: bool) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, p["vocab_size"], (p["batch_size"], p["block_size"] + 1), generator=g).to(device)
    batch = {"x": x[:, :-1], "y": x[:, 1:]}
    ours = build_genforge(p, device).train()
    if compile_:
        ours.net.compile()
    hf = build_hf(p, device).train()
    if compile_:
        hf.compile()

    def ours_loss():
        _, loss, _ = next(ours.training_step(batch))
        return loss

    def hf_loss():
        return hf(input_ids=x[:, :-1], labels=x[:, :-1]).loss

    t_ours = statistics.median(step_times(ours_loss, list(ours.parameters()), device, dtype, steps))
    t_hf = statistics.median(step_times(hf_loss, list(hf.parameters()), device, dtype, steps))
    return t_ours, t_hf


@torch.no_grad()
def bench_generation(p: dict, device, dtype, batch: int, new_tokens: int, prompt_len: int = 16) -> dict[str, float]:
    """Tokens/s of each way of generating: "genforge" (its default decoding path on ``device``), on CUDA
    also "genforge eager dynamic", and "HF"."""
    from genforge.families.decode_path import DecodePath
    from genforge.sampling.tokens import Decoding

    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(1, p["vocab_size"], (batch, prompt_len), generator=g).to(device)
    ours = build_genforge(p, device).eval()
    hf = build_hf(p, device).eval()

    def run_ours(path: DecodePath | None = None):
        ours.decode_path = path  # None: the default for the device
        return ours.generate(prompt, new_tokens, decoding=Decoding(temperature=0.0))

    def run_hf():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, use_cache=True)

    runs = {"genforge": run_ours}
    if ours.current_decode_path() != DecodePath():
        runs["genforge eager dynamic"] = lambda: run_ours(DecodePath())
    runs["HF"] = run_hf
    rates = {}
    for name, fn in runs.items():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            fn()  # warm-up (and, for a compiled path, compilation and CUDA graph recording)
            sync(device)
            start = time.perf_counter()
            out = fn()
            sync(device)
        assert out.shape == (batch, prompt_len + new_tokens), out.shape
        rates[name] = batch * new_tokens / (time.perf_counter() - start)
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per row")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    p = PRESETS[args.preset]
    print(f"# transformer speed, preset {args.preset} {p}, device {device}, "
          f"{'bf16' if dtype else 'fp32'}, compile {args.compile}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    t_ours, t_hf = bench_training(p, device, dtype, args.steps, args.compile)
    tokens = p["batch_size"] * p["block_size"]
    print(f"training step: genforge {t_ours * 1000:.1f} ms ({tokens / t_ours:,.0f} tok/s), "
          f"HF GPT2LMHeadModel {t_hf * 1000:.1f} ms ({tokens / t_hf:,.0f} tok/s); genforge/HF time ratio "
          f"{t_ours / t_hf:.2f}x")
    if device.type == "cuda":
        from genforge.train.flops import peak_flops

        peak = peak_flops(torch.cuda.get_device_name(device))
        per_token = build_genforge(p, torch.device("meta")).flops_per_token()
        if peak:
            print(f"MFU: genforge {tokens / t_ours * per_token / peak:.1%}, HF {tokens / t_hf * per_token / peak:.1%} "
                  f"(peak {peak / 1e12:.0f} TFLOP/s bf16)")
    from genforge.families.decode_path import DecodePath

    path = DecodePath.default_for(device).describe()
    for batch in (1, 32):
        rates = bench_generation(p, device, dtype, batch, args.new_tokens)
        ours, hf = rates["genforge"], rates["HF"]
        line = (f"generation, batch {batch}: genforge ({path}) {ours:,.0f} tok/s, HF generate {hf:,.0f} tok/s; "
                f"speed-up {ours / hf:.2f}x")
        if "genforge eager dynamic" in rates:
            eager = rates["genforge eager dynamic"]
            line += f"; genforge eager dynamic cache {eager:,.0f} tok/s ({path} / eager: {ours / eager:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
