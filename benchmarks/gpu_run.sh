#!/usr/bin/env bash
# One device call: the GPU benchmarks that exist, results under $OUT (device tool) or ./gpu-out.
# Needs the wheels the device image lacks in .whl/ (diffusers, pydantic, tomli-w, this package).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc; uptime;
  python3 -c "import torch,diffusers,accelerate,sys;print(sys.version.split()[0], torch.__version__, diffusers.__version__, accelerate.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
# 1. SiD on SD 1.5's full-size UNet: fp32 / bf16 / bf16 + compile / bf16 + activation checkpointing
timeout 330 python3 -m benchmarks.gpu_sid_sd --mode-timeout 150 2>&1 | grep -v "should be kept in float32" | tee "$OUT/gpu_sid_sd.log"
cp benchmarks/results/gpu_sid_sd.json "$OUT/gpu_sid_sd.json" 2>/dev/null
# 2. the CIFAR-sized DKDM step again, fp32 vs bf16 (the first GPU figures were taken before the
#    per-step host reads were removed)
timeout 120 python3 -m benchmarks.gpu_speed --modes fp32 bf16 --reps 2 2>&1 | grep -v "should be kept in float32" | tee "$OUT/gpu_speed.log"
cp benchmarks/results/gpu_speed.json "$OUT/gpu_speed.json" 2>/dev/null
