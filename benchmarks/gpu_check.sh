#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes): the GPU-marked tests, the training-speed benchmark at batch
# 256 eager and compiled, and genforge's GPT against HF transformers at GPT-2 124M in bf16 (training
# step time and MFU, KV-cache generation at batch 1 and 32). Run from the repository root with CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then make setup >/dev/null && PY=.venv/bin/python; fi
export GENFORGE_CACHE=${GENFORGE_CACHE:-$(mktemp -d)}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
echo "== GPU tests"
timeout 150 "$PY" -m pytest -q -m gpu tests/ 2>&1 | tail -5
echo "== training speed, eager, batch 256"
timeout 60 "$PY" benchmarks/train_speed.py --device cuda --steps 30 --batch-size 256
echo "== training speed, compiled, batch 256"
timeout 110 "$PY" benchmarks/train_speed.py --device cuda --steps 30 --batch-size 256 --compile
echo "== GPT-2 124M: genforge vs HF transformers, bf16, compiled"
timeout 140 "$PY" benchmarks/transformer_speed.py --preset gpt2 --device cuda --compile --steps 10 --new-tokens 64
