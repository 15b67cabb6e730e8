#!/usr/bin/env bash
# The one prepared script for the accelerator machine (the `device` tool): installs nothing,
# needs only torch (CUDA), numpy and onnxruntime, which its image has; writes JSON to $OUT.
#   run: bash bench/gpu_run.sh        (about 5 minutes on an H100/H200)
# Shorter, to share one call with bench/device_scaling.sh (the CPU scaling figure; see the end
# of bench/hotpath_results.md), through the environment (defaults: the line above's run):
#   GPU_TIMEOUT=100 DETECT_ARGS="--seconds 0.5 --rate 10000" bash bench/gpu_run.sh
#   GPU_TIMEOUT   seconds each of the two benches may run (240)
#   DETECT_ARGS   bench/gpu_detect.py's arguments ("--seconds 1.0 --rate 10000")
#   WATERMARK_ARGS  bench/gpu_watermark.py's ("--batch 64 --vocabs 50000,128000")
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-bench/results}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
GPU_TIMEOUT="${GPU_TIMEOUT:-240}"
read -r -a detect_args <<< "${DETECT_ARGS:---seconds 1.0 --rate 10000}"
read -r -a watermark_args <<< "${WATERMARK_ARGS:---batch 64 --vocabs 50000,128000}"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
status=0
timeout "$GPU_TIMEOUT" python bench/gpu_detect.py "${detect_args[@]}" || status=1
timeout "$GPU_TIMEOUT" python bench/gpu_watermark.py "${watermark_args[@]}" || status=1
exit "$status"
