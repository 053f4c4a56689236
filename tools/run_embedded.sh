#!/usr/bin/env bash
# The whole pipeline on the embedded default, on a CPU: CoReDiT fine-tuning of the shipped pre-trained host
# with the progressive schedule and SP=2 (gloo), generation dense and pruned in MagicDrive-V2's test layout
# (plus two reference rows: the ground truth through the codec and the pre-trained host before fine-tuning),
# evaluation with the built-in perception, and the Table-4-shaped comparison with fidelity to dense.
#   bash tools/run_embedded.sh                 # NPROC=2 STEPS=... SAMPLES=... SAMPLING_STEPS=... WORK=... to change
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-2}
SAMPLES=${SAMPLES:-2}
SAMPLING_STEPS=${SAMPLING_STEPS:-30}
WORK=${WORK:-work_dirs/tiny_cpu}
CFG_OPTS=("parallel.sp_size=${NPROC}")
if [[ -n "${STEPS:-}" ]]; then CFG_OPTS+=("train.steps=${STEPS}"); fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
GEN=(python tools/generate.py configs/tiny_cpu.py --cfg-options "work_dir=${WORK}" --num-samples "${SAMPLES}"
     --steps "${SAMPLING_STEPS}")

echo "== 1/4 fine-tune the pre-trained host (torchrun, ${NPROC} processes, SP=${NPROC}; resumes if interrupted)"
torchrun --standalone --nproc_per_node "${NPROC}" tools/train.py configs/tiny_cpu.py --work-dir "${WORK}" \
    --resume auto --cfg-options "${CFG_OPTS[@]}"
echo "== 2/4 generate dense (fine-tuned weights), and the two reference rows"
"${GEN[@]}" --ckpt auto --dense --out "${WORK}/videos/dense"
"${GEN[@]}" --ckpt embedded --dense --out "${WORK}/videos/pretrained"
"${GEN[@]}" --codec-reference --out "${WORK}/videos/gt_codec"
echo "== 3/4 generate pruned (plan from training; last 4 steps at c * r_l)"
"${GEN[@]}" --ckpt auto --plan "${WORK}/plan.json" --out "${WORK}/videos/pruned"
echo "== 4/4 evaluate"
python tools/eval_bev.py "${WORK}/videos/gt_codec" "${WORK}/videos/pretrained" "${WORK}/videos/dense" \
    "${WORK}/videos/pruned" --config configs/eval_tiny_cpu.py \
    --cfg-options "data.num_samples=${SAMPLES}" "data.nuscenes_dir=${WORK}/nuscenes_synthetic" \
    --names gt_codec pretrained dense CoReDiT --ratios 0 0 0 auto --references gt_codec pretrained \
    --fidelity-to dense --out "${WORK}/eval"
