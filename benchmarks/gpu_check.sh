#!/usr/bin/env bash
# One prepared GPU check (under 8 minutes): the GPU-marked tests, then the training-speed benchmark
# at batch 256 eager and compiled. Run from the repository root on a machine with CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then make setup >/dev/null && PY=.venv/bin/python; fi
export GENFORGE_CACHE=${GENFORGE_CACHE:-$(mktemp -d)}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
echo "== GPU tests"
timeout 240 "$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -5
echo "== training speed, eager, batch 256"
timeout 90 "$PY" benchmarks/train_speed.py --device cuda --steps 30 --batch-size 256
echo "== training speed, compiled, batch 256"
timeout 150 "$PY" benchmarks/train_speed.py --device cuda --steps 30 --batch-size 256 --compile
