"""Model FLOPs utilisation (MFU): the share of a GPU's peak matmul throughput that training achieves.

MFU = tokens/s x training FLOPs per token / the device's peak dense bf16 FLOP/s. The FLOPs count only the
model's own arithmetic (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's ``estimate_mfu``), so
recomputation, padding or an idle GPU lower it, which is the point of the number.
"""

from __future__ import annotations

from genforge.nets.transformer import flops_per_token  # the model's FLOPs per token live with the model

__all__ = ["PEAK_BF16_FLOPS", "flops_per_token", "mfu", "peak_flops"]

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


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation, a fraction of ``peak`` (0.4 is good for a GPT on one GPU)."""
    return tokens_per_s * flops_per_token / peak
