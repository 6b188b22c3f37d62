"""genforge's diffusion UNet against diffusers' UNet2DModel + DDIMScheduler at the same architecture, in one run.

    python benchmarks/diffusion_speed.py                                   # CPU: the mnist and small presets
    python benchmarks/diffusion_speed.py --preset cifar --device cuda --compile   # DDPM-CIFAR10 UNet, bf16

Both networks are built from one preset: the same resolution levels, channels, blocks per level,
attention placement (32-channel heads), GroupNorm and dropout, so their parameter counts match (both
are printed). One difference is left: diffusers takes one GroupNorm group count for the whole net,
where genforge picks one per width (at least 4 channels a group); it changes no parameter count and
costs the same. Training: the median time of a full optimisation step (noising, forward, MSE on epsilon,
backward, AdamW) at the same batch; genforge's step is ``Diffusion.training_step``, diffusers' is the
same maths written around ``UNet2DModel``. Sampling: DDIM with eta=0 and the same number of steps and
trailing timestep spacing, genforge's ``Diffusion.sample`` against a loop of ``unet(x, t).sample`` and
``DDIMScheduler.step``. The two are measured alternately (the order flips each round) in one process,
so a neighbour's load hits both; the spread of the per-round ratios is printed as the noise. Ratios
> 1 mean genforge is faster. On CUDA both run under bf16 autocast with TF32 and channels-last inputs,
fused AdamW, and with ``--compile`` both networks are compiled (``dynamic=False``). diffusers is a
benchmark-only dependency: ``pip install -e '.[bench]'``.

CPU threads: both models use the same torch threads (``--threads``, default torch's choice). On a
machine that other processes share, OpenMP threads that spin while waiting for a descheduled peer
make multi-threaded runs several times slower and very noisy; ``OMP_WAIT_POLICY=PASSIVE`` (recorded
in the results) or ``--threads 1`` keeps the comparison about the implementations.

Results are printed and written into --out (default benchmarks/results/diffusion_speed.md), one
section per preset, device, thread count and compile setting; a run replaces its own sections and
keeps the others, and writes after each phase, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# Architecture and workload per preset. "mnist" leaves the architecture at DiffusionConfig's defaults.
PRESETS = {
    # genforge's default diffusion model on 28x28 MNIST (what the demo trains on a laptop CPU)
    "mnist": {
        "shape": (1, 28, 28), "arch": {},
        "train_batch": 16, "sample_batch": 16, "sample_steps": 20, "rounds": 9, "steps_per_round": 4, "sample_rounds": 7,
    },
    # the DDPM-CIFAR10 layout at a quarter of the width: ~2.2M parameters, trainable on a CPU
    "small": {
        "shape": (3, 32, 32),
        "arch": {"base_channels": 32, "channel_mults": [1, 2, 2, 2], "blocks_per_level": 2,
                 "attention_resolutions": [16], "dropout": 0.1},
        "train_batch": 16, "sample_batch": 16, "sample_steps": 20, "rounds": 6, "steps_per_round": 2, "sample_rounds": 3,
    },
    # the DDPM-CIFAR10 UNet (Ho et al. 2020; diffusers' google/ddpm-cifar10-32 layout): 35.7M parameters
    "cifar": {
        "shape": (3, 32, 32),
        "arch": {"base_channels": 128, "channel_mults": [1, 2, 2, 2], "blocks_per_level": 2,
                 "attention_resolutions": [16], "dropout": 0.1},
        "train_batch": 128, "sample_batch": 256, "sample_steps": 50, "rounds": 5, "steps_per_round": 5, "sample_rounds": 3,
    },
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_genforge(preset: dict, device: torch.device):
    from genforge.data.spec import DataSpec
    from genforge.families.diffusion import Diffusion, DiffusionConfig

    return Diffusion(DiffusionConfig(**preset["arch"]), DataSpec("image", tuple(preset["shape"]))).to(device)


def build_diffusers(ours, device: torch.device):
    """UNet2DModel laid out like genforge's UNet ``ours.unet`` (read from its config, not re-stated)."""
    from diffusers import UNet2DModel

    from genforge.nets.unet import group_norm

    cfg, (c, h, w) = ours.config, ours.spec.shape
    res, down, up = min(h, w), [], []
    for _ in cfg.channel_mults:
        attn = res in cfg.attention_resolutions
        down.append("AttnDownBlock2D" if attn else "DownBlock2D")
        up.insert(0, "AttnUpBlock2D" if attn else "UpBlock2D")
        res //= 2
    channels = [cfg.base_channels * m for m in cfg.channel_mults]
    # genforge uses 32-channel heads (one head when the width is not a multiple of 32); diffusers takes a
    # head width, so the head counts agree whenever attention blocks share one width (true of all presets)
    attn_channels = [ch for ch, kind in zip(channels, down) if kind.startswith("Attn")] + [channels[-1]]
    head_dim = 32 if all(ch % 32 == 0 for ch in attn_channels) else attn_channels[0]
    # diffusers takes one group count for every norm: genforge's choice for the narrowest width divides
    # all the others (every width, concatenations included, is a multiple of base_channels)
    groups = group_norm(cfg.base_channels).num_groups
    net = UNet2DModel(
        sample_size=(h, w), in_channels=c, out_channels=c, block_out_channels=tuple(channels),
        layers_per_block=cfg.blocks_per_level, down_block_types=tuple(down), up_block_types=tuple(up),
        attention_head_dim=head_dim, norm_num_groups=groups, dropout=cfg.dropout, flip_sin_to_cos=True,
        freq_shift=0, downsample_padding=1,
    )
    return net.to(device)


def make_scheduler(ours):
    from diffusers import DDIMScheduler

    cfg = ours.config
    return DDIMScheduler(num_train_timesteps=cfg.timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                         beta_schedule="linear", clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True,
                         timestep_spacing="trailing")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class Pair:
    """Seconds per unit of work for genforge and diffusers, one entry per round: wall-clock, and the
    process's CPU time (all threads), which leaves out the time the process waits to be scheduled."""

    ours: list[float]
    peer: list[float]
    ours_cpu: list[float]
    peer_cpu: list[float]

    def medians(self) -> tuple[float, float]:
        return statistics.median(self.ours), statistics.median(self.peer)

    def ratios(self) -> list[float]:  # > 1: genforge faster
        return sorted(p / o for o, p in zip(self.ours, self.peer))

    def cpu_ratio(self) -> float:  # ratio of the median CPU seconds per unit, > 1: genforge cheaper
        return statistics.median(self.peer_cpu) / statistics.median(self.ours_cpu)


def alternate(run_ours, run_peer, device, rounds: int, units: int) -> Pair:
    """Time ``run_ours`` and ``run_peer`` (each doing ``units`` of work) alternately, flipping the order."""
    pair = Pair([], [], [], [])
    for r in range(rounds):
        order = ((run_ours, pair.ours, pair.ours_cpu), (run_peer, pair.peer, pair.peer_cpu))
        for fn, wall, cpu in order if r % 2 == 0 else order[::-1]:
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall.append((time.perf_counter() - start) / units)
            cpu.append((time.process_time() - start_cpu) / units)
    return pair


def bench_training(ours, peer, preset: dict, device, dtype, rounds: int, steps: int, warmup: int) -> Pair:
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand((preset["train_batch"], *preset["shape"]), generator=g) * 2 - 1).to(device)
    abar = ours.alphas_cumprod  # the same schedule for both
    fused = device.type == "cuda"
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=fused)
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=1e-4, fused=fused)
    ours.train()
    peer.train()

    def peer_loss() -> torch.Tensor:
        # what Diffusion.training_step does, around UNet2DModel
        t = torch.randint(0, abar.shape[0], (x0.shape[0],), device=device)
        noise = torch.randn_like(x0)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        if device.type == "cuda":  # as Diffusion.predict_eps does
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return (peer(x_t, t).sample.float() - noise.float()).pow(2).mean()

    def ours_loss() -> torch.Tensor:
        _, loss, _ = next(ours.training_step({"x": x0}))
        return loss

    def stepper(loss_fn, opt):
        def run():
            for _ in range(steps):
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = loss_fn()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return run

    run_ours, run_peer = stepper(ours_loss, opt_ours), stepper(peer_loss, opt_peer)
    for _ in range(warmup):  # warm-up (and compilation) excluded
        run_ours()
        run_peer()
    return alternate(run_ours, run_peer, device, rounds, steps)


def bench_sampling(ours, peer, preset: dict, device, dtype, rounds: int, steps: int) -> Pair:
    scheduler = make_scheduler(ours)
    n, shape = preset["sample_batch"], preset["shape"]

    @torch.no_grad()
    def peer_sample(k: int) -> torch.Tensor:
        peer.eval()
        scheduler.set_timesteps(k)  # timesteps stay on the CPU, as in diffusers' DDIMPipeline
        g = torch.Generator(device).manual_seed(1)
        x = torch.randn((n, *shape), generator=g, device=device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        for t in scheduler.timesteps:
            x = scheduler.step(peer(x, t).sample, t, x, eta=0.0).prev_sample
        return x.clamp(-1, 1)

    def ours_sample(k: int) -> torch.Tensor:
        return ours.sample(n, generator=torch.Generator(device).manual_seed(1), steps=k, eta=0.0)

    def timed(fn):
        def run():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = fn(steps)
            assert out.shape == (n, *shape), out.shape
        return run

    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        ours_sample(2)  # warm-up (and compilation): two network calls at the timed shape
        peer_sample(2)
    return alternate(timed(ours_sample), timed(peer_sample), device, rounds, n)


def rate(images_per_s: float) -> str:
    return f"{images_per_s:,.1f}" if images_per_s >= 10 else f"{images_per_s:.2f}"


def load() -> str:
    """The 1-minute load average against the cores: other processes' share of the machine."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def cpu_col(pair: Pair) -> str:
    return f"{pair.cpu_ratio():.2f}x" if min(pair.ours_cpu + pair.peer_cpu) > 0 else "-"


def spread(pair: Pair) -> str:
    r = pair.ratios()
    return f"{r[0]:.2f}-{r[-1]:.2f}"


def section(key: str, lines: list[str]) -> str:
    return "\n".join([f"## {key}", "", *lines, ""])


def write_sections(path: Path, sections: dict[str, str]) -> None:
    """Replace (or add) the named ``## `` sections of the markdown file at ``path``, atomically."""
    head = ("# Diffusion speed: genforge vs diffusers\n\nWritten by `benchmarks/diffusion_speed.py`; each section "
            "is replaced by the run that produced it. img/s from the median of alternating rounds; "
            "ratio = genforge / diffusers img/s (> 1: genforge faster); noise = range of the per-round ratios; "
            "CPU-time ratio = the same from the process's CPU seconds (all threads; on CUDA mostly launch work), "
            "which leaves out waiting to be scheduled (though not a virtual machine's stolen time): when it "
            "matches the ratio, the noise is not from descheduling; "
            "host load = the 1-minute load average before and after (other processes share the machine).\n")
    old: dict[str, str] = {}
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        for block in re.split(r"(?m)^(?=## )", text):
            if block.startswith("## "):
                old[block.splitlines()[0][3:].strip()] = block.rstrip() + "\n"
    old.update(sections)
    text = head + "\n" + "\n".join(old[k] for k in sorted(old))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def run_preset(name: str, args, device: torch.device, dtype, publish) -> None:
    """Measure one preset; ``publish(lines)`` is called after each phase with the section so far."""
    preset = PRESETS[name]
    rounds = args.rounds or preset["rounds"]
    steps = args.steps or preset["steps_per_round"]
    sample_rounds = args.sample_rounds or preset["sample_rounds"]
    sample_steps = args.sample_steps or preset["sample_steps"]
    torch.manual_seed(0)
    ours = build_genforge(preset, device)
    peer = build_diffusers(ours, device)
    p_ours, p_peer = n_params(ours.unet), n_params(peer)
    cfg = ours.config
    arch = (f"{'x'.join(map(str, preset['shape']))}, base {cfg.base_channels}, mults {list(cfg.channel_mults)}, "
            f"{cfg.blocks_per_level} block(s)/level, attention at {list(cfg.attention_resolutions)}, dropout {cfg.dropout}")
    print(f"# preset {name}: {arch}")
    print(f"parameters: genforge UNet {p_ours:,}, diffusers UNet2DModel {p_peer:,} ({p_ours / p_peer - 1:+.2%})")
    if abs(p_ours / p_peer - 1) > 0.05:
        print("WARNING: parameter counts differ by more than 5%; the architectures do not match")
    if device.type == "cuda":
        peer.to(memory_format=torch.channels_last)
    if args.compile:
        ours.unet.compile(dynamic=False)
        peer.compile(dynamic=False)
    lines = [(f"{arch}; {preset['train_batch']} images per training step, DDIM-{sample_steps} (eta 0) "
             f"at batch {preset['sample_batch']}."), "",
             f"Parameters: genforge `UNet` {p_ours:,}, diffusers `UNet2DModel` {p_peer:,} ({p_ours / p_peer - 1:+.2%}).", "",
             ("| | genforge img/s | diffusers img/s | ratio | noise (per-round ratios) | CPU-time ratio | rounds "
             "| host load |"), "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    if not args.skip_train:
        start, load_start = time.perf_counter(), load()
        train = bench_training(ours, peer, preset, device, dtype, rounds, steps, warmup=2 if args.compile else 1)
        t_o, t_p = train.medians()
        b = preset["train_batch"]
        print(f"training step, batch {b}: genforge {t_o * 1000:.1f} ms ({b / t_o:,.1f} img/s), diffusers "
              f"{t_p * 1000:.1f} ms ({b / t_p:,.1f} img/s); ratio {t_p / t_o:.2f}x (rounds {spread(train)}, "
              f"CPU time {cpu_col(train)}) "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
        rows.append(f"| training, batch {b} | {rate(b / t_o)} | {rate(b / t_p)} | **{t_p / t_o:.2f}x** | {spread(train)} "
                    f"| {cpu_col(train)} | {rounds} x {steps} steps | {load_start}-{load()} |")
        publish(lines + rows)  # kept if sampling fails or runs out of time
    if not args.skip_sample:
        start, load_start = time.perf_counter(), load()
        sample = bench_sampling(ours, peer, preset, device, dtype, sample_rounds, sample_steps)
        s_o, s_p = sample.medians()
        print(f"DDIM-{sample_steps} sampling, batch {preset['sample_batch']}: genforge {rate(1 / s_o)} img/s, diffusers "
              f"{rate(1 / s_p)} img/s; ratio {s_p / s_o:.2f}x (rounds {spread(sample)}, "
              f"CPU time {cpu_col(sample)}) "
              f"[{time.perf_counter() - start:.0f} s]", flush=True)
        rows.append(f"| DDIM-{sample_steps} sampling, batch {preset['sample_batch']} | {rate(1 / s_o)} | {rate(1 / s_p)} "
                    f"| **{s_p / s_o:.2f}x** | {spread(sample)} | {cpu_col(sample)} | {sample_rounds} | {load_start}-{load()} |")
        publish(lines + rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["mnist", "small"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating training rounds (preset default)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per round (preset default)")
    parser.add_argument("--sample-rounds", type=int, default=None, help="alternating sampling rounds (preset default)")
    parser.add_argument("--sample-steps", type=int, default=None, help="DDIM steps (preset default)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffusion_speed.md"),
                        help="markdown file to update ('-' to write nothing)")
    args = parser.parse_args(argv)
    import diffusers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        where = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        where = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} thread{'s' * (threads > 1)}"
        if os.environ.get("OMP_WAIT_POLICY"):
            where += f", OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    setting = (f"device {device} ({where}), {'bf16 autocast' if dtype else 'fp32'}, compile {args.compile}, "
               f"torch {torch.__version__}, diffusers {diffusers.__version__}")
    print(f"# diffusion speed, {setting}")
    for name in args.preset:
        if device.type == "cuda":
            key = f"{name}, cuda{', compiled' if args.compile else ''}"
        else:
            threads = torch.get_num_threads()
            key = f"{name}, cpu, {threads} thread{'s' * (threads > 1)}{', compiled' if args.compile else ''}"
            if os.environ.get("OMP_WAIT_POLICY"):
                key += f", OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
        command = [f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"] if os.environ.get("OMP_WAIT_POLICY") else []
        command += ["python benchmarks/diffusion_speed.py", f"--preset {name}", f"--device {args.device}"]
        command += ["--compile"] * args.compile + ([f"--threads {args.threads}"] if args.threads else [])

        def publish(lines: list[str], key=key, command=command) -> None:
            if str(args.out) != "-":
                body = [f"`{' '.join(command)}`: {setting}.", "", *lines]
                write_sections(args.out, {key: section(key, body)})

        run_preset(name, args, device, dtype, publish)


if __name__ == "__main__":
    main()
