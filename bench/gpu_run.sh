#!/usr/bin/env bash
# The one prepared script for the accelerator machine (the `device` tool): installs nothing,
# needs only torch (CUDA), numpy and onnxruntime, which its image has; writes JSON to $OUT.
#   run: bash bench/gpu_run.sh        (about 5 minutes on an H100/H200)
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-bench/results}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
status=0
timeout 240 python bench/gpu_detect.py --seconds 1.0 --rate 10000 || status=1
timeout 240 python bench/gpu_watermark.py --batch 64 --vocabs 50000,128000 || status=1
exit "$status"
