"""Model FLOPs utilisation (MFU): the share of a GPU's peak matmul throughput that training achieves.

MFU = tokens/s x training FLOPs per token / the device's peak dense bf16 FLOP/s. The FLOPs count only the
model's own arithmetic (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's ``estimate_mfu``), so
recomputation, padding or an idle GPU lower it, which is the point of the number.
"""

from __future__ import annotations

# Peak dense (not 2:4-sparse) bf16 tensor-core FLOP/s from the vendors' datasheets, matched as a
# case-insensitive substring of torch.cuda.get_device_name(). First match wins, so a name that another
# contains comes after it ("H100 PCIe" before "H100", "L40S" and "L40" before "L4").
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("GH200", 989e12),
    ("H200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),  # SXM and PCIe alike
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),  # GeForce cards: with fp32 accumulation, which autocast uses
    ("RTX 3090", 71e12),
    ("RTX A6000", 155e12),
    ("MI300X", 1307e12),
)


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a device named like ``torch.cuda.get_device_name()``; None if unknown."""
    name = device_name.lower()
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in name:
            return flops
    return None


def flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int, block_size: int) -> float:
    """Training FLOPs per token of a decoder: 6N + 12 L H Q T.

    ``n_params`` counts the weights every token multiplies by (position tables left out, a tied output
    head counted once): 2 FLOPs per weight forward, 4 backward. The second term is attention's own
    matmuls, q.k and att.v, over a context of T = block_size: 2 x 2 x L x H x Q x T forward, times 3
    with backward.
    """
    return 6.0 * n_params + 12.0 * n_layer * n_head * head_dim * block_size


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation, a fraction of ``peak`` (0.4 is good for a GPT on one GPU)."""
    return tokens_per_s * flops_per_token / peak
