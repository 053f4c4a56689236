#!/usr/bin/env bash
# Make the second embedded host (configs/embedded_pretrain_varied.py): the shipped host trained on in the varied
# world, then its export (fp16 + sha256 manifest, coredit_video/embedded/host/weights/embedded_tiny_varied.pt).
# Every step resumes: re-run this script after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
torchrun --nproc_per_node 2 tools/train.py configs/embedded_pretrain_varied.py --resume auto
python tools/export_host.py configs/embedded_pretrain_varied.py \
    --out coredit_video/embedded/host/weights/embedded_tiny_varied.pt
