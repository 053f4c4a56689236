#!/usr/bin/env bash
# Real Slurm checks for our sbatch scripts, on the local single-node cluster (tests/slurm/local_slurm.sh).
#
#   tests/slurm/run_smoke.sh            # all checks (~6 min on 2 cores)
#   tests/slurm/run_smoke.sh --quick    # skip the real time-limit (--signal=B:USR1@secs) check
#   tests/slurm/run_smoke.sh smoke requeue usr1 timelimit templates   # pick checks
#
# Checks:
#   smoke      sbatch --ntasks=2: srun starts 2 torchrun agents, c10d rendezvous from the Slurm env,
#              world of 4 gloo ranks all-reduces; job COMPLETED, output has the right sum.
#   requeue    job checkpoints every step; `scontrol requeue <jobid>` while it runs; the rerun has
#              SLURM_RESTART_COUNT=1, resumes from the checkpoint (start_step > 0) and finishes.
#   usr1       `scancel --batch --signal=USR1`: the sbatch's USR1 trap runs `scontrol requeue`, the
#              rerun resumes (the same code path the pre-timeout signal takes, without the wait).
#   timelimit  real pre-timeout requeue: --time=2 --signal=B:USR1@30 and more work than fits;
#              Slurm signals, the trap requeues, reruns resume until done, never TIMEOUT.
#   templates  tools/slurm/train.sbatch and eval.sbatch (if present) as written, with stand-in
#              TRAIN_CMD/EVAL_CMD (tests/slurm/fake_*.py): train gets USR1 early (ignored by the
#              REQUEUE_MIN_SECS guard) and mid-run (requeues), and must be relaunched with
#              `CONFIG --resume auto`; the rank layout keeps an SP group inside a node.
#   train-real (opt-in, not in the default set) train.sbatch with the real tools/train.py on
#              configs/tiny_cpu.py (DP 2 x SP 2 on gloo), requeued after its first checkpoint.
#
# Env: SLURM_SMOKE_NO_START=1 (cluster already up, do not call local_slurm.sh start),
#      SLURM_SMOKE_STOP=1 (stop the cluster at the end), SLURM_SMOKE_WORK (work dir, default mktemp).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
QUICK=0
CHECKS=()
for a in "$@"; do
    case "$a" in
        --quick) QUICK=1 ;;
        smoke|requeue|usr1|timelimit|templates|train-real) CHECKS+=("$a") ;;
        *) echo "usage: $0 [--quick] [smoke|requeue|usr1|timelimit|templates|train-real ...]" >&2; exit 2 ;;
    esac
done
if ((${#CHECKS[@]} == 0)); then
    CHECKS=(smoke requeue usr1 timelimit templates)
    ((QUICK)) && CHECKS=(smoke requeue usr1 templates)
fi

T0=$SECONDS
if [[ "${SLURM_SMOKE_NO_START:-0}" != 1 ]]; then
    bash "$HERE/local_slurm.sh" start || exit 1
fi
eval "$(bash "$HERE/local_slurm.sh" env)"   # SLURM_CONF, in case /etc/slurm/slurm.conf is not ours
WORK="${SLURM_SMOKE_WORK:-$(mktemp -d /tmp/coredit-slurm-smoke.XXXXXX)}"
mkdir -p "$WORK"
echo "[run_smoke] work dir: $WORK"

PASSED=0
FAILED=0
FAILED_NAMES=()

say() { echo "[run_smoke] $*"; }

job_field() { # jobid field -> value from `scontrol show job -o` (empty if the job is unknown)
    scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

# Wait for a terminal state (COMPLETED/FAILED/CANCELLED/TIMEOUT/...). A requeued job passes through
# REQUEUED/PENDING and runs again, which is not terminal. Echoes the final state.
wait_job() { # jobid timeout_s
    local jid=$1 limit=$2 t0=$SECONDS st
    while ((SECONDS - t0 < limit)); do
        st="$(job_field "$jid" JobState)"
        case "$st" in
            COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
                echo "$st"; return 0 ;;
            "") echo "UNKNOWN"; return 1 ;;
        esac
        sleep 1
    done
    echo "WAIT_TIMEOUT($(job_field "$jid" JobState))"
    return 1
}

wait_running() { # jobid timeout_s
    local t0=$SECONDS
    while ((SECONDS - t0 < $2)); do
        [[ "$(job_field "$1" JobState)" == RUNNING ]] && return 0
        sleep 0.5
    done
    return 1
}

ckpt_step() { # ckpt_dir -> step in last.json (0 if none)
    python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]+"/last.json"))["step"])
except Exception: print(0)' "$1"
}

wait_ckpt() { # ckpt_dir min_step timeout_s
    local t0=$SECONDS
    while ((SECONDS - t0 < $3)); do
        (($(ckpt_step "$1") >= $2)) && return 0
        sleep 0.5
    done
    return 1
}

submit() { # name [sbatch args...] -> jobid; env for the job is passed via exported vars
    local name=$1; shift
    sbatch --parsable --chdir="$REPO" --output="$WORK/$name-%j.out" --job-name="smoke-$name" "$@" \
        | cut -d';' -f1
}

CUR=""
check() { # cond message
    if eval "$1"; then say "  ok: $2"; else say "  FAIL: $2"; CUR_FAILED=1; fi
}
begin() { CUR=$1; CUR_FAILED=0; CUR_T0=$SECONDS; say "=== $1"; }
finish() { # outfile
    if ((CUR_FAILED)); then
        FAILED=$((FAILED + 1)); FAILED_NAMES+=("$CUR")
        say "--- $CUR FAILED after $((SECONDS - CUR_T0)) s; job output ($1):"
        grep -v '^W[0-9]\{4\} ' "$1" 2>/dev/null | tail -40 | sed 's/^/    | /'
    else
        PASSED=$((PASSED + 1)); say "--- $CUR passed in $((SECONDS - CUR_T0)) s"
    fi
}

# Common: the sbatch output lines from tests/slurm/dist_ckpt.py.
count() { grep -c "$1" "$2" 2>/dev/null || true; }
last_match() { grep "$1" "$2" 2>/dev/null | tail -1; }
kv() { sed -n "s/.*[ ^]$1=\([^ ]*\).*/\1/p" <<<" $2" | head -1; }

run_smoke() {
    begin smoke
    export CKPT_DIR="$WORK/ckpt-smoke" STEPS=3 CKPT_EVERY=1 STEP_SLEEP=0 NPROC_PER_NODE=2
    local jid out st
    jid="$(submit smoke "$REPO/tests/slurm/smoke.sbatch")"
    out="$WORK/smoke-$jid.out"
    st="$(wait_job "$jid" 180)"
    say "  job $jid: $st ExitCode=$(job_field "$jid" ExitCode)"
    check '[[ $st == COMPLETED && $(job_field $jid ExitCode) == 0:0 ]]' "job COMPLETED with exit 0:0"
    check 'grep -q "SMOKE_ALLREDUCE_OK world=4 sum=10" "$out"' "2 srun tasks x 2 procs = world 4, all-reduce sum 10"
    check 'grep -q "SMOKE_DONE world=4 steps=3 restart_count=0 resumed_from=0" "$out"' "ran 3 steps from scratch"
    check 'grep -q "^rendezvous $(hostname -s):" "$out"' "MASTER_ADDR from scontrol show hostnames"
    finish "$out"
}

run_requeue() {
    begin requeue
    export CKPT_DIR="$WORK/ckpt-requeue" STEPS=24 CKPT_EVERY=1 STEP_SLEEP=0.5 NPROC_PER_NODE=2
    local jid out st line start
    jid="$(submit requeue "$REPO/tests/slurm/smoke.sbatch")"
    out="$WORK/requeue-$jid.out"
    if wait_ckpt "$CKPT_DIR" 5 120; then
        say "  checkpoint at step $(ckpt_step "$CKPT_DIR"): scontrol requeue $jid"
        scontrol requeue "$jid"
    else
        say "  no checkpoint within 120 s"; CUR_FAILED=1
    fi
    st="$(wait_job "$jid" 240)"
    say "  job $jid: $st ExitCode=$(job_field "$jid" ExitCode) Restarts=$(job_field "$jid" Restarts)"
    line="$(last_match SMOKE_START "$out")"
    start="$(kv start_step "$line")"
    check '[[ $st == COMPLETED ]]' "requeued job COMPLETED"
    check '[[ $(job_field $jid Restarts) == 1 ]]' "scontrol shows Restarts=1"
    check '[[ $(count "SMOKE_START" "$out") == 2 ]]' "script ran twice, output appended (--open-mode=append)"
    check '[[ "$line" == *"restart_count=1"* && "$line" == *"resumed=1"* && ${start:-0} -ge 5 ]]' \
        "second run saw SLURM_RESTART_COUNT=1 and resumed from step ${start:-?} (>= 5), not from 0"
    check 'grep -q "SMOKE_DONE world=4 steps=24 restart_count=1 resumed_from=$start" "$out"' "finished all 24 steps"
    finish "$out"
}

run_usr1() {
    begin usr1
    export CKPT_DIR="$WORK/ckpt-usr1" STEPS=20 CKPT_EVERY=1 STEP_SLEEP=0.5 NPROC_PER_NODE=2
    local jid out st line
    jid="$(submit usr1 "$REPO/tests/slurm/smoke.sbatch")"
    out="$WORK/usr1-$jid.out"
    if wait_ckpt "$CKPT_DIR" 4 120; then
        say "  checkpoint at step $(ckpt_step "$CKPT_DIR"): scancel --batch --signal=USR1 $jid"
        scancel --batch --signal=USR1 "$jid"
    else
        say "  no checkpoint within 120 s"; CUR_FAILED=1
    fi
    st="$(wait_job "$jid" 240)"
    say "  job $jid: $st Restarts=$(job_field "$jid" Restarts)"
    line="$(last_match SMOKE_START "$out")"
    check '[[ $st == COMPLETED ]]' "job COMPLETED"
    check 'grep -q "got USR1" "$out"' "USR1 trap ran in the batch shell"
    check '[[ $(job_field $jid Restarts) == 1 && "$line" == *"resumed=1"* ]]' "trap requeued it and the rerun resumed"
    check 'grep -q "SMOKE_DONE world=4 steps=20 restart_count=1" "$out"' "finished all 20 steps"
    finish "$out"
}

run_timelimit() {
    begin timelimit
    # slurmctld checks time limits every 30 s and sends the --signal when now + secs + 30 >= end, so
    # --time=2 --signal=B:USR1@30 signals 60-90 s into a run (hard kill only at 120-150 s). 70 s of steps
    # after a ~10 s torchrun start-up: run 1 is requeued by its trap, run 2 resumes and finishes.
    export CKPT_DIR="$WORK/ckpt-timelimit" STEPS=140 CKPT_EVERY=2 STEP_SLEEP=0.5 NPROC_PER_NODE=2
    local jid out st n
    jid="$(submit timelimit --time=2 --signal=B:USR1@30 "$REPO/tests/slurm/smoke.sbatch")"
    out="$WORK/timelimit-$jid.out"
    st="$(wait_job "$jid" 480)"
    n="$(job_field "$jid" Restarts)"
    say "  job $jid: $st Restarts=$n, USR1 traps: $(count 'got USR1' "$out")"
    check '[[ $st == COMPLETED ]]' "job COMPLETED (not TIMEOUT) across requeues"
    check '[[ ${n:-0} -ge 1 && $(count "got USR1" "$out") -ge 1 ]]' "Slurm sent USR1 before the limit and the trap requeued"
    check '[[ $(grep SMOKE_START "$out" | grep -c "resumed=1") -ge 1 ]]' "reruns resumed from the checkpoint"
    check 'grep -q "SMOKE_DONE world=4 steps=140" "$out"' "finished all 140 steps"
    finish "$out"
}

run_templates() {
    local tr="$REPO/tools/slurm/train.sbatch" ev="$REPO/tools/slurm/eval.sbatch"
    if [[ ! -f "$tr" ]]; then say "=== templates: $tr not found, skipped"; return; fi
    begin templates
    # train.sbatch exactly as written (--gpus-per-node=8 on the fake GPUs, --exclusive, USR1 trap,
    # c10d rendezvous), with two overrides to play 2 nodes on one: --ntasks-per-node=2 and NNODES=2.
    # The stand-in tests/slurm/fake_train.py takes tools/train.py's command line and resumes from
    # --work-dir only under --resume auto.
    # Its USR1 trap is driven by hand: one USR1 early in the run (under REQUEUE_MIN_SECS: must NOT
    # requeue), one after a checkpoint (must requeue).
    export CONFIG=configs/tiny_cpu.py NNODES=2 NPROC_PER_NODE=2 TRAIN_CMD=tests/slurm/fake_train.py \
        TRAIN_ARGS="--work-dir $WORK/fake-train" FAKE_STEPS=16 FAKE_STEP_SLEEP=0.5 REQUEUE_MIN_SECS=8
    local jid out st line start t0
    jid="$(submit train --ntasks-per-node=2 "$tr")"
    out="$WORK/train-$jid.out"
    t0=$SECONDS
    until grep -q "^=== .* job=$jid" "$out" 2>/dev/null || ((SECONDS - t0 > 60)); do sleep 0.2; done
    scancel --batch --signal=USR1 "$jid"
    if wait_ckpt "$WORK/fake-train" 4 120; then
        say "  checkpoint at step $(ckpt_step "$WORK/fake-train"): scancel --batch --signal=USR1 $jid"
        scancel --batch --signal=USR1 "$jid"
    else
        say "  stand-in trainer made no checkpoint within 120 s"; CUR_FAILED=1
    fi
    st="$(wait_job "$jid" 240)"
    say "  train job $jid: $st Restarts=$(job_field "$jid" Restarts)"
    line="$(last_match FAKE_TRAIN_START "$out")"
    start="$(kv start_step "$line")"
    check '[[ $st == COMPLETED ]]' "train.sbatch COMPLETED after a requeue"
    check 'grep -q "not requeueing" "$out"' "an early USR1 (run time < REQUEUE_MIN_SECS) did not requeue"
    check 'grep -q "USR1: time limit near, scontrol requeue $jid" "$out" && [[ $(job_field $jid Restarts) == 1 ]]' \
        "a later USR1 requeued the job once"
    check 'grep -q "^FAKE_TRAIN_ARGV configs/tiny_cpu.py --resume auto --work-dir $WORK/fake-train$" "$out"' \
        "ran TRAIN_CMD CONFIG --resume auto TRAIN_ARGS"
    check 'grep -q "FAKE_TRAIN_ENV world=4 local_world=2 nnodes_env=2 cuda_visible=0,1,2,3,4,5,6,7" "$out"' \
        "2 agents x 2 workers, the step sees the node's 8 (fake) GPUs"
    check 'grep -q "FAKE_TRAIN_LAYOUT local_world=2 contiguous=1 one_task_per_group=1" "$out"' \
        "ranks [kL, kL+L) belong to one srun task (an SP group of L stays in a node)"
    check '[[ "$line" == *"restart_count=1"* && ${start:-0} -ge 4 ]]' "rerun resumed from step ${start:-?} (>= 4)"
    check 'grep -q "FAKE_TRAIN_DONE world=4 steps=16 restart_count=1" "$out"' "stand-in trainer finished"
    finish "$out"

    if [[ -f "$ev" ]]; then
        begin eval-template
        export CONFIG=configs/tiny_cpu.py EVAL_CMD=tests/slurm/fake_eval.py EVAL_ARGS="--ckpt x/last" NPROC_PER_NODE=2
        jid="$(submit eval "$ev")"
        out="$WORK/eval-$jid.out"
        st="$(wait_job "$jid" 180)"
        say "  eval job $jid: $st"
        check '[[ $st == COMPLETED ]]' "eval.sbatch COMPLETED"
        check 'grep -q "FAKE_EVAL argv=configs/tiny_cpu.py --ckpt x/last world=2 cuda_visible=0,1,2,3,4,5,6,7" "$out"' \
            "ran torchrun --standalone EVAL_CMD CONFIG EVAL_ARGS, world 2"
        finish "$out"
    fi
}

# The real trainer through train.sbatch (opt-in: `run_smoke.sh train-real`): tools/train.py
# configs/tiny_cpu.py, 2 agents x 2 workers = DP 2 x SP 2, requeued after its first checkpoint.
run_train-real() {
    begin train-real
    local wd="$WORK/train-real"
    export CONFIG=configs/tiny_cpu.py NNODES=2 NPROC_PER_NODE=2 TRAIN_CMD=tools/train.py \
        TRAIN_ARGS="--work-dir $wd --cfg-options train.steps=${TRAIN_REAL_STEPS:-12} train.ckpt_every=2 train.log_every=1"
    local jid out st
    jid="$(submit train-real --ntasks-per-node=2 "$REPO/tools/slurm/train.sbatch")"
    out="$WORK/train-real-$jid.out"
    local t0=$SECONDS
    local js
    while ((SECONDS - t0 < 300)) && ! grep -q "saved checkpoint" "$wd/train.log" 2>/dev/null; do
        js="$(job_field "$jid" JobState)"
        case "$js" in PENDING|RUNNING|CONFIGURING) ;; *) say "  job $jid is $js before a checkpoint"; break ;; esac
        sleep 1
    done
    if grep -q "saved checkpoint" "$wd/train.log" 2>/dev/null; then
        say "  $(grep "saved checkpoint" "$wd/train.log" | tail -1 | sed 's/.*saved/saved/'): scontrol requeue $jid"
        scontrol requeue "$jid"
    else
        say "  no checkpoint from tools/train.py"; CUR_FAILED=1
    fi
    st="$(wait_job "$jid" 600)"
    say "  job $jid: $st Restarts=$(job_field "$jid" Restarts)"
    check '[[ $st == COMPLETED ]]' "train.sbatch + tools/train.py COMPLETED after a requeue"
    check 'grep -q "resumed from" "$wd/train.log"' "second run resumed (--resume auto)"
    finish "$out"
    [[ -f "$wd/train.log" ]] && grep -E "resumed|saved checkpoint|world" "$wd/train.log" | tail -8 | sed 's/^/    | /'
}

for c in "${CHECKS[@]}"; do "run_$c"; done

say "total $((SECONDS - T0)) s; logs in $WORK"
((FAILED)) && say "failed: ${FAILED_NAMES[*]}"
if [[ "${SLURM_SMOKE_STOP:-0}" == 1 ]]; then bash "$HERE/local_slurm.sh" stop; fi
echo "run_smoke: $PASSED passed, $FAILED failed"
((FAILED == 0))
