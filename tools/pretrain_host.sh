#!/usr/bin/env bash
# Re-make the shipped embedded host from scratch (about 3 h 20 min on 2 idle CPU cores; every step is resumable: re-run
# this script after an interruption). Stage 1: 5000 dense steps without the view layout; stage 2: 5000 steps
# with it, from stage 1's EMA; then the export (fp16 + sha256 manifest) and the host report.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
torchrun --nproc_per_node 2 tools/train.py configs/embedded_pretrain.py --resume auto
python tools/export_host.py configs/embedded_pretrain.py --out work_dirs/embedded_pretrain/embedded_tiny_stage1.pt
torchrun --nproc_per_node 2 tools/train.py configs/embedded_pretrain_layout.py --resume auto
python tools/export_host.py configs/embedded_pretrain_layout.py
python tools/host_report.py --train-log work_dirs/embedded_pretrain/train.log work_dirs/embedded_pretrain_layout/train.log \
    --scenes 16 --out docs/embedded_host
