#!/usr/bin/env bash
# The first thing to run on a CUDA machine: GPU-only tests, the attention benchmark (CoReDiT against dense
# and ideal, then every token-reduction method's cost as paid) and the end-to-end step (attention scope, then
# attention scope against block scope), each under its own time limit, all results (logs, JSON, Markdown) in OUT_DIR.
#
#   bash tools/gpu_check.sh OUT_DIR            # at most ~10 min on one H100 / H200
#   bash tools/gpu_check.sh --dry-run OUT_DIR  # print the commands, run nothing (no GPU needed)
#
# Needs torch with CUDA (Triton for the kernel tests) and pytest; nothing else of the project's
# dependencies (no mmengine, DeepSpeed, xformers or flash-attn). Wheels for anything missing (pytest and
# its dependencies, say) may be brought in a `.whl/` folder at the repository root (never committed):
# they are installed offline into /tmp/site. Time limits (seconds) can be changed through the
# environment: T_TESTS, T_ATTN, T_ATTN_COMPILE (each compiled resolution), T_ATTN_METHODS, T_E2E, T_E2E_BLOCK,
# T_STEP_TIME. A part
# that fails or times out is marked so in OUT_DIR/SUMMARY.md and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
  echo "usage: bash tools/gpu_check.sh [--dry-run] OUT_DIR" >&2
  exit 2
fi
OUT=$1
PY=${PYTHON:-python3}
# worst case, every part at its limit: 80 + 80 + 2 x 90 + 75 + 105 + 80 s = 10.0 min (+ 10 s kill grace each)
T_TESTS=${T_TESTS:-80}
T_ATTN=${T_ATTN:-80}
T_ATTN_COMPILE=${T_ATTN_COMPILE:-60}
T_ATTN_METHODS=${T_ATTN_METHODS:-75}
T_E2E=${T_E2E:-105}
T_E2E_BLOCK=${T_E2E_BLOCK:-80}
T_STEP_TIME=${T_STEP_TIME:-60}

if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
  if [ $DRY = 1 ]; then
    echo "$PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl"
  else
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || echo "warning: installing .whl/ failed" >&2
  fi
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ $DRY = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: tools/gpu_check.sh needs a CUDA device (torch.cuda.is_available() is False here); run it on a GPU machine, or pass --dry-run to see the commands" >&2
  exit 2
fi

ATTN="tools/bench_attention.py --ratios 0.26,0.5 --passes fwd,fwd+bwd --dtype bfloat16 --out $OUT"
E2E="tools/bench_e2e.py --preset xl --ratio 0.26 --dtype bfloat16 --out $OUT"
# name | time limit (s) | command
PARTS=(
  # tests/test_front_magicdrive.py: the front on the tiny upstream MagicDriveSTDiT3 (runs where MAGICDRIVE_V2_ROOT is set)
  "tests|$T_TESTS|$PY -m pytest -q -rs -p no:cacheprovider tests/test_kernels.py tests/test_attention_backends_cuda.py tests/test_front_magicdrive.py --junitxml $OUT/tests.xml"
  "attention_eager|$T_ATTN|$PY $ATTN --methods coredit --resolutions 848x1600,424x800 --tag gpu_eager"
  "attention_compiled_424x800|$T_ATTN_COMPILE|$PY $ATTN --methods coredit --resolutions 424x800 --compile --no-split --repeats 5 --tag gpu_compiled_424x800"
  "attention_compiled_848x1600|$T_ATTN_COMPILE|$PY $ATTN --methods coredit --resolutions 848x1600 --compile --no-split --repeats 5 --tag gpu_compiled_848x1600"
  # cost as paid: every method's whole reduced call against dense and ideal, interleaved; 848x1600 first (the
  # report is rewritten after each resolution, so a timeout keeps it)
  "attention_methods|$T_ATTN_METHODS|$PY tools/bench_attention.py --methods coredit,coredit_copy,coredit_sharp,coredit_merge,coredit_kv,tome,todo --ratios 0.2,0.4,0.6 --passes fwd,fwd+bwd --dtype bfloat16 --resolutions 848x1600,424x800 --no-split --warmup 1 --repeats 5 --out $OUT --tag gpu_methods"
  # dense, self-attention pruned and self + cross-view (qkv) pruned, interleaved in one run (issue 14)
  "e2e|$T_E2E|$PY $E2E --resolution 848x1600 --cross-view qkv --tag gpu_848x1600 || $PY $E2E --resolution 424x800 --cross-view qkv --tag gpu_424x800"
  # dense, attention scope (self + cross-view qkv) and block scope at r 0.4 / 0.5, interleaved; 848x1600 first (the
  # report is rewritten after each resolution, so a timeout keeps it); no module split (its hooks synchronise)
  # with the step cache beside block scope (its step 1 after an untimed step 0; memory rows give its bytes)
  "e2e_block_scope|$T_E2E_BLOCK|$PY tools/bench_e2e.py --scope block --step-cache --preset xl --resolutions 848x1600,424x800 --ratios 0.4,0.5 --cross-view qkv --dtype bfloat16 --no-split --out $OUT --tag gpu_block_scope"
  # one denoising step per front line and ratio over dense: the front's cost_time on this GPU (--step-time-json)
  "step_time|$T_STEP_TIME|$PY tools/bench_step_time.py --device cuda --depth 2 --control-depth 1 --views 6 --latent-frames 5 --resolution 848x1600 --ratios 0.1 0.3 0.5 --repeats 3 --out $OUT/step_time_cuda.json"
)

if [ $DRY = 1 ]; then
  for part in "${PARTS[@]}"; do
    IFS='|' read -r name limit cmd <<< "$part"
    echo "[$name] timeout -k 10 $limit bash -c '$cmd' > $OUT/$name.log 2>&1"
  done
  exit 0
fi

mkdir -p "$OUT"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null
  nvidia-smi 2>&1 | head -20
  "$PY" - <<'EOF'
import importlib, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "|", torch.cuda.get_device_name(0))
for m in ("triton", "pytest", "numpy", "tqdm", "flash_attn", "xformers", "mmengine", "deepspeed"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "missing:", type(e).__name__)
EOF
} > "$OUT/env.txt" 2>&1
DEVICE=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")

SUMMARY="$OUT/SUMMARY.md"
printf '# GPU check on %s\n\n%s\n\n| part | status | seconds | limit (s) | log |\n|---|---|---|---|---|\n' \
  "$DEVICE" "Commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); environment in env.txt." > "$SUMMARY"
for part in "${PARTS[@]}"; do
  IFS='|' read -r name limit cmd <<< "$part"
  echo "== $name (limit ${limit}s): $cmd" >&2
  t0=$(date +%s)
  timeout -k 10 "$limit" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    124|137) status="timed out" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "   $status after ${dt}s; log $OUT/$name.log" >&2
  echo "| $name | $status | $dt | $limit | [$name.log]($name.log) |" >> "$SUMMARY"
done
{
  echo
  echo "Results: attention_gpu_*.md / e2e_gpu_*.md (and .json) beside this file; tests in tests.xml and tests.log."
  for f in "$OUT"/attention_gpu_*.md "$OUT"/e2e_gpu_*.md; do
    [ -f "$f" ] && { echo; cat "$f"; }
  done
} >> "$SUMMARY"
echo "wrote $SUMMARY" >&2
