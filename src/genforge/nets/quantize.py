"""Vector quantisation with an EMA codebook (VQ-VAE: van den Oord et al. 2017, its appendix; Razavi et al. 2019).

Each vector z of the encoder's output is replaced by its nearest codebook entry e_k (squared L2). The
lookup has no gradient, so the decoder's gradient is passed straight through to z: the quantised output
is z + sg(e_k - z), equal to e_k forward and to the identity backward. The encoder is kept near its codes
by the commitment loss beta * ||z - sg(e_k)||^2 (a mean over elements).

The codebook itself is not trained by gradients. It follows the vectors assigned to it as exponential
moving averages, in training mode only, with decay gamma:

    N_k <- gamma N_k + (1 - gamma) n_k            n_k: vectors of this batch assigned to code k
    m_k <- gamma m_k + (1 - gamma) sum of them
    e_k  = m_k / N~_k,   N~_k = (N_k + eps) / (n + K eps) * n,   n = sum_k N_k

N~ is N with Laplace (add-eps) smoothing, so a code that stops being used never divides by zero.

Dead codes: a code whose N_k falls below ``restart_threshold`` (in vectors per batch) is re-initialised
to a random encoder output of the current batch (as Jukebox does, Dhariwal et al. 2020), with N_k set to
the threshold, so it gets one more chance to win vectors before it is dead again. The codebook starts
with N_k = 1, so with the default threshold of 1 every code the first batch leaves unused is restarted
from data after the first step: a data-dependent initialisation for free. Candidates are drawn for all
K codes every step from the global RNG (which the trainer seeds per step), so the random stream does not
depend on how many codes died and a resumed run repeats the same draws.

Distances, the EMA and the loss are computed in float32, also under bf16 autocast. On CUDA the distance
matmul follows the global TF32 setting, which can only flip assignments between near-equidistant codes.
Under torch.distributed the counts and sums are summed over ranks and rank 0's restart candidates are
broadcast, so every rank keeps the same codebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from genforge.errors import ConfigError

DISTANCE_CHUNK = 2**24  # entries of the (vectors x codes) distance matrix computed at once


def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of ``flat`` (N, D): (N,) int64. float32 in and out.

    ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, and ||z||^2 does not change which code is nearest. Rows are
    taken in chunks so that the distance matrix stays under DISTANCE_CHUNK entries."""
    sq_norms = codebook.pow(2).sum(dim=1)
    rows = max(1, DISTANCE_CHUNK // codebook.shape[0])
    chunks = [torch.addmm(sq_norms, part, codebook.T, alpha=-2.0).argmin(dim=1) for part in flat.split(rows)]
    return torch.cat(chunks) if chunks else flat.new_zeros(0, dtype=torch.long)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    """(B, dim, *spatial) -> (quantized, indices, loss, stats); see the module's docstring.

    quantized: like z, float32, equal to the codes forward and to z backward (straight-through).
    indices: (B, *spatial) int64. loss: the commitment loss, a float32 scalar.
    stats: "perplexity" (exp of the entropy of this batch's code usage: K when all codes are used
    equally, 1 when one code takes everything), "usage" (share of codes used in this batch) and
    "dead_restarts" (codes restarted by this call), as detached tensors.
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, commitment: float = 0.25,
                 eps: float = 1e-5, restart_threshold: float = 1.0):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ConfigError(f"a vector quantizer needs num_codes and dim >= 1, got {num_codes} and {dim}")
        if not 0 < decay < 1:
            raise ConfigError(f"the codebook's EMA decay must be in (0, 1), got {decay}")
        if not commitment >= 0:
            raise ConfigError(f"the commitment weight must be >= 0, got {commitment}")
        if not eps > 0:
            raise ConfigError(f"the codebook's Laplace smoothing eps must be > 0, got {eps}")
        if not restart_threshold >= 0:
            raise ConfigError(f"restart_threshold must be >= 0 (0: never restart codes), got {restart_threshold}")
        self.num_codes, self.dim = num_codes, dim
        self.decay, self.commitment, self.eps = decay, commitment, eps
        self.restart_threshold = restart_threshold
        codebook = torch.randn(num_codes, dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(num_codes))  # N_k
        self.register_buffer("embed_sum", codebook.clone())  # m_k, so that e_k = m_k / N_k at the start

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (B, *spatial) -> their vectors (B, dim, *spatial), float32."""
        return F.embedding(indices, self.codebook).movedim(-1, 1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest-code indices (B, *spatial) of z (B, dim, *spatial); no update, no gradient."""
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            flat = z.detach().float().movedim(1, -1).reshape(-1, self.dim)
            return nearest_codes(flat, self.codebook).view(z.shape[0], *z.shape[2:])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if z.dim() < 2 or z.shape[1] != self.dim:
            raise ValueError(f"expected vectors shaped (B, {self.dim}, ...), got {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            flat = z.movedim(1, -1).reshape(-1, self.dim)
            indices = nearest_codes(flat.detach(), self.codebook)
            counts = torch.bincount(indices, minlength=self.num_codes).float()
            restarts = torch.zeros((), device=z.device)
            if self.training:
                restarts = self._update(flat.detach(), indices, counts)
            # after an update the batch is still quantised with the codes it was assigned to, now moved
            q = self.lookup(indices.view(z.shape[0], *z.shape[2:]))
            loss = self.commitment * F.mse_loss(z, q.detach())
            quantized = z + (q - z).detach()
            probs = counts / counts.sum().clamp(min=1)
            stats = {
                "perplexity": torch.exp(-torch.special.xlogy(probs, probs).sum()).detach(),
                "usage": (counts > 0).float().mean().detach(),
                "dead_restarts": restarts.detach(),
            }
        return quantized, indices.view(z.shape[0], *z.shape[2:]), loss, stats

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The EMA step and the dead-code restarts; returns how many codes were restarted."""
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)
        counts = counts.clone()
        if distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.restart_threshold <= 0 or flat.shape[0] == 0:
            return torch.zeros((), device=flat.device)
        # one candidate per code, every step, whether or not it is needed (see the module's docstring)
        candidates = flat[torch.randint(flat.shape[0], (self.num_codes,), device=flat.device)]
        if distributed():
            dist.broadcast(candidates, src=0)
        dead = self.cluster_size < self.restart_threshold
        threshold = torch.full_like(self.cluster_size, self.restart_threshold)
        self.codebook.copy_(torch.where(dead[:, None], candidates, self.codebook))
        self.embed_sum.copy_(torch.where(dead[:, None], candidates * self.restart_threshold, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead, threshold, self.cluster_size))
        return dead.sum().float()
