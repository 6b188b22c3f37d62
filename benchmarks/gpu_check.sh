#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes): the GPU-marked tests, the training-speed benchmark at batch
# 256 eager and compiled, genforge's GPT against HF transformers at GPT-2 124M in bf16 (training
# step time and MFU, KV-cache generation at batch 1 and 32), and genforge's diffusion UNet against
# diffusers at the DDPM-CIFAR10 size (35.7M parameters) in bf16, compiled (training at batch 128,
# DDIM-50 at batch 256). Run from the repository root with CUDA.
#
# Time budget: each section has a cap (its `timeout`), and no section runs past the script's total of
# BUDGET_S seconds (default 470): a section gets min(cap, time left), and is skipped when under 20 s
# are left. A failing or timed-out section is reported and the next one runs; the summary at the end
# lists every section's outcome. The caps add up to more than the budget on purpose: they are upper
# bounds for a cold machine (compilation); whether typical runs fit is unmeasured (no GPU so far).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then make setup >/dev/null && PY=.venv/bin/python; fi
export GENFORGE_CACHE=${GENFORGE_CACHE:-$(mktemp -d)}
BUDGET_S=${BUDGET_S:-470}
SUMMARY=()

# section NAME CAP_SECONDS COMMAND...: run COMMAND under min(CAP, time left); record how it ended
section() {
    local name=$1 cap=$2 left rc
    shift 2
    left=$((BUDGET_S - SECONDS))
    echo "== $name"
    if [ "$left" -lt 20 ]; then
        echo "skipped: ${left}s of the ${BUDGET_S}s budget left"
        SUMMARY+=("SKIPPED  $name (out of time budget)")
        return 0
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    local start=$SECONDS
    timeout -k 10 "$cap" "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("ok       $name ($((SECONDS - start))s)")
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        SUMMARY+=("TIMEOUT  $name (after ${cap}s)")
    else
        SUMMARY+=("FAILED   $name (exit $rc after $((SECONDS - start))s)")
    fi
    return 0
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
section "GPU tests" 200 bash -c 'set -o pipefail; "$0" -m pytest -q -m gpu tests/ 2>&1 | tail -5' "$PY"
section "training speed, eager, batch 256" 60 \
    "$PY" benchmarks/train_speed.py --device cuda --steps 30 --batch-size 256
section "training speed, compiled, batch 256" 110 \
    "$PY" benchmarks/train_speed.py --device cuda --steps 30 --batch-size 256 --compile
section "GPT-2 124M: genforge vs HF transformers, bf16, compiled" 140 \
    "$PY" benchmarks/transformer_speed.py --preset gpt2 --device cuda --compile --steps 10 --new-tokens 64
# four compilations (two networks x training, sampling) dominate this section's time (an estimate,
# never measured yet: 2-3 minutes cold, ~20 s of measuring); the training line is printed, and written
# to benchmarks/results/diffusion_speed.md, before sampling starts, so a timeout keeps it
section "DDPM-CIFAR10 UNet: genforge vs diffusers, bf16, compiled" 240 \
    bash -c '"$0" -c "import diffusers" 2>/dev/null || { echo "diffusers is missing: pip install -e .[bench]"; exit 3; }
             exec "$0" benchmarks/diffusion_speed.py --preset cifar --device cuda --compile' "$PY"
# with more than one GPU: the same global batch in 1 process and in N (torchrun, NCCL), the transformer
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$GPUS" -gt 1 ]; then
    section "multi-GPU scaling (torchrun, 1 to $GPUS processes)" 120 \
        "$PY" benchmarks/ddp_scaling.py --families transformer --steps 30 --global-batch $((32 * GPUS))
    section "multi-GPU scaling, FSDP (torchrun, 1 to $GPUS processes)" 120 \
        "$PY" benchmarks/ddp_scaling.py --families transformer --steps 30 --global-batch $((32 * GPUS)) --fsdp
else
    SUMMARY+=("SKIPPED  multi-GPU scaling (one GPU visible)")
fi

# a runner that collects files from $OUT gets the benchmark result files too
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then cp benchmarks/results/*.md "$OUT"/ 2>/dev/null || true; fi
echo "== summary (${SECONDS}s of ${BUDGET_S}s)"
printf '%s\n' "${SUMMARY[@]}"
