#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (localhost), without systemd.
#
#   tests/slurm/local_slurm.sh start    # install (if missing), configure, start, wait for the node to be idle
#   tests/slurm/local_slurm.sh status   # daemons + sinfo
#   tests/slurm/local_slurm.sh stop     # scontrol shutdown + munged --stop
#   tests/slurm/local_slurm.sh env      # prints `export SLURM_CONF=...` (eval it if /etc/slurm/slurm.conf is not ours)
#
# Everything Slurm writes (config, state, spool, logs, pid files) lives under $SLURM_LOCAL_DIR
# (default /tmp/coredit-slurm). munged uses Debian's default paths (/etc/munge/munge.key,
# /run/munge/munge.socket.2, /var/log/munge/munged.log) because Slurm's auth/munge finds it there.
# /etc/slurm/slurm.conf is made a symlink to our config (only if that path is free or already
# our symlink), so plain `sinfo`/`sbatch` work in any shell, including inside jobs.
#
# Needs root (apt-get, munge user, daemons run as root). Idempotent: `start` on a running cluster
# only re-checks that the node is up; `stop` on a stopped one does nothing.
#
# Env knobs:
#   SLURM_LOCAL_DIR          state/log dir                          [/tmp/coredit-slurm]
#   SLURM_LOCAL_PARTITION    partition name                         [debug]
#   SLURM_LOCAL_CRED_EXPIRE  AuthInfo cred_expire (s); it is also the delay before a requeued job
#                            may start again (Slurm's default is 120 s)           [10]
#   SLURM_LOCAL_KEEP_STATE   1: keep job state from a previous run (slurmctld without -c) [0]
#   SLURM_LOCAL_TIMEOUT      seconds to wait for the node to become idle          [90]
#   SLURM_LOCAL_GPUS         fake GPUs the node advertises (gres gpu, backed by /dev/null clones
#                            $SLURM_LOCAL_DIR/dev/gpuN) so `--gpus-per-node=8` scripts schedule as
#                            written; jobs see CUDA_VISIBLE_DEVICES but there is no GPU. 0: none [8]
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/coredit-slurm}"
PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
CRED_EXPIRE="${SLURM_LOCAL_CRED_EXPIRE:-10}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-90}"
GPUS="${SLURM_LOCAL_GPUS:-8}"
CONF="$DIR/etc/slurm.conf"
LOG="$DIR/log"
ETC_CONF=/etc/slurm/slurm.conf
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGE_PID=/run/munge/munged.pid
MUNGE_LOG=/var/log/munge/munged.log
NODE="$(hostname -s)"
export SLURM_CONF="$CONF"

log() { echo "[local_slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_alive() { # pidfile: its process exists, is not a zombie, and is the daemon the file is named after
    local pid state comm
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/stat ]] || return 1
    state="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)"
    [[ -n "$state" && "$state" != Z && "$state" != X && "$comm" == "$(basename "$1" .pid)" ]]
}

install_packages() {
    local need=()
    command -v munged >/dev/null || need+=(munge)
    for b in slurmctld slurmd sbatch; do command -v "$b" >/dev/null || { need+=(slurm-wlm); break; }; done
    ((${#need[@]})) || return 0
    [[ $EUID -eq 0 ]] || die "need root to apt-get install ${need[*]}"
    log "installing ${need[*]} (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d (if present) stops the postinst from starting services; we start them ourselves.
    apt-get update -qq >"$LOG/apt.log" 2>&1 || { cat "$LOG/apt.log" >&2; die "apt-get update failed"; }
    apt-get install -y -q --no-install-recommends "${need[@]}" >>"$LOG/apt.log" 2>&1 \
        || { tail -30 "$LOG/apt.log" >&2; die "apt-get install failed"; }
}

write_conf() {
    # Real CPUs/memory of this host, as slurmd itself detects them (a config that claims more
    # than slurmd finds drains the node with "Low RealMemory"/"Low socket*core*thread count").
    local hw cpus sockets cores threads mem
    hw="$(slurmd -C | head -1)"
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    sockets="$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")"
    cores="$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")"
    threads="$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [[ -n "$cpus" && -n "$mem" ]] || die "could not parse 'slurmd -C': $hw"
    mkdir -p "$DIR/etc"
    local gres_types="" node_gres=""
    if ((GPUS > 0)); then
        mkdir -p "$DIR/dev"
        : >"$DIR/etc/gres.conf.tmp"
        for ((i = 0; i < GPUS; i++)); do
            # slurmd wants a character device: clones of /dev/null (1,3). Without one, Count only
            # (then no CUDA_VISIBLE_DEVICES in jobs).
            [[ -c "$DIR/dev/gpu$i" ]] || { rm -f "$DIR/dev/gpu$i"; mknod "$DIR/dev/gpu$i" c 1 3 2>/dev/null || true; }
            if [[ -c "$DIR/dev/gpu$i" ]]; then
                echo "NodeName=$NODE Name=gpu File=$DIR/dev/gpu$i" >>"$DIR/etc/gres.conf.tmp"
            else
                echo "NodeName=$NODE Name=gpu Count=$GPUS" >"$DIR/etc/gres.conf.tmp"; break
            fi
        done
        mv "$DIR/etc/gres.conf.tmp" "$DIR/etc/gres.conf"
        gres_types="GresTypes=gpu"
        node_gres="Gres=gpu:$GPUS"
    else
        rm -f "$DIR/etc/gres.conf"
    fi
    cat >"$CONF.tmp" <<EOF
# Generated by tests/slurm/local_slurm.sh: single-node test cluster on $(hostname -s).
ClusterName=coredit-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=cred_expire=$CRED_EXPIRE
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: proctrack/linuxproc follows the process tree via /proc, task/none binds nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
MailProg=/bin/true
# Requeued jobs become eligible after cred_expire+1 s and are started by the next periodic scheduler
# pass (default every 60 s): run it every 5 s so a requeue restarts in ~15 s.
SchedulerParameters=sched_interval=5,bf_interval=5
$gres_types
MinJobAge=300
KillWait=30
InactiveLimit=0
Waittime=0
SlurmdTimeout=60
SlurmctldTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem $node_gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    # Let plain sinfo/sbatch (and the jobs) find it without SLURM_CONF.
    if [[ -L "$ETC_CONF" || ! -e "$ETC_CONF" ]]; then
        mkdir -p "$(dirname "$ETC_CONF")"
        ln -sfn "$CONF" "$ETC_CONF"
    elif ! cmp -s "$ETC_CONF" "$CONF"; then
        log "NOTE: $ETC_CONF exists and is not ours; run: export SLURM_CONF=$CONF"
    fi
}

start_munge() {
    if pid_alive "$MUNGE_PID" && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    # munged daemonizes itself; run it as the munge user as Debian's unit does.
    runuser -u munge -- /usr/sbin/munged --force >>"$LOG/munged.start.log" 2>&1 \
        || { cat "$MUNGE_LOG" >&2 2>/dev/null || true; die "munged failed to start (see $MUNGE_LOG)"; }
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "munge does not answer (see $MUNGE_LOG)"
}

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1; }

wait_idle() {
    local t0=$SECONDS st=""
    while ((SECONDS - t0 < TIMEOUT)); do
        st="$(node_state || true)"
        case "$st" in
            idle|mix|alloc|comp) log "node $NODE is $st (after $((SECONDS - t0)) s)"; return 0 ;;
            drain*|drng|down*|fail*)
                # e.g. left DOWN/DRAINED by an unclean previous run: put it back in service.
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    sinfo -N -l >&2 || true
    scontrol show node "$NODE" >&2 || true
    tail -20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
    die "node $NODE not idle after $TIMEOUT s (state '${st}')"
}

do_start() {
    local t0=$SECONDS
    mkdir -p "$LOG" "$DIR/state" "$DIR/spool/slurmd" "$DIR/run"
    install_packages
    if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid" && scontrol ping >/dev/null 2>&1; then
        log "already running"
        wait_idle
        print_where
        return 0
    fi
    write_conf
    start_munge
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        local clear=(-c)
        [[ "${SLURM_LOCAL_KEEP_STATE:-0}" == 1 ]] && clear=()
        # Daemonizes itself; -c: start with no jobs from an earlier run.
        slurmctld "${clear[@]}" -f "$CONF" || die "slurmctld failed (see $LOG/slurmctld.log)"
    fi
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
    scontrol ping | grep -q 'is UP' || { tail -30 "$LOG/slurmctld.log" >&2; die "slurmctld not UP"; }
    if ! pid_alive "$DIR/run/slurmd.pid"; then
        slurmd -f "$CONF" || die "slurmd failed (see $LOG/slurmd.log)"
    fi
    wait_idle
    log "started in $((SECONDS - t0)) s"
    print_where
}

do_stop() {
    if [[ -f "$CONF" ]] && { pid_alive "$DIR/run/slurmctld.pid" || pid_alive "$DIR/run/slurmd.pid"; }; then
        # Cancel what is left, then ask slurmctld to stop itself and every slurmd.
        scancel --partition="$PARTITION" >/dev/null 2>&1 || true
        scontrol shutdown >/dev/null 2>&1 || true
        for _ in $(seq 150); do
            pid_alive "$DIR/run/slurmctld.pid" || pid_alive "$DIR/run/slurmd.pid" || break
            sleep 0.2
        done
        for pf in "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid"; do
            if pid_alive "$pf"; then log "$(basename "$pf" .pid) still up: SIGTERM"; kill "$(cat "$pf")" || true; fi
        done
        for _ in $(seq 50); do
            pid_alive "$DIR/run/slurmctld.pid" || pid_alive "$DIR/run/slurmd.pid" || break
            sleep 0.2
        done
    fi
    if pid_alive "$MUNGE_PID"; then
        runuser -u munge -- /usr/sbin/munged --stop >/dev/null 2>&1 || kill "$(cat "$MUNGE_PID")" 2>/dev/null || true
    fi
    rm -f "$DIR/run/slurmctld.pid" "$DIR/run/slurmd.pid"
    log "stopped (logs kept in $LOG)"
}

do_status() {
    local rc=0 name pf
    for name in slurmctld slurmd; do
        pf="$DIR/run/$name.pid"
        if pid_alive "$pf"; then echo "$name: running (pid $(cat "$pf"))"; else echo "$name: stopped"; rc=3; fi
    done
    if pid_alive "$MUNGE_PID"; then echo "munged: running (pid $(cat "$MUNGE_PID"))"; else echo "munged: stopped"; rc=3; fi
    if ((rc == 0)); then sinfo -N -o '%N %P %t %c %m' || rc=3; squeue || true; fi
    print_where
    return $rc
}

print_where() {
    log "config: $CONF (SLURM_CONF; /etc/slurm/slurm.conf -> it)"
    log "logs:   $LOG/slurmctld.log $LOG/slurmd.log $MUNGE_LOG"
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    restart) do_stop; do_start ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 {start|stop|status|restart|env}" >&2; exit 2 ;;
esac
