#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying the project's SLURM paths (the
# job-array grid, SIGUSR1 requeue, DDP under srun) and for the tests marked `slurm`.
# It is NOT a way to set up a production cluster: no accounting, no cgroups, no limits,
# jobs run as whoever submits them, and it writes SLURM's default config file.
#
#   scripts/local_slurm.sh up     # install munge/slurmctld/slurmd where missing (Debian/
#                                 # Ubuntu, apt), write the config, start the daemons, wait
#                                 # until the node is idle; again while up: no-op
#   scripts/local_slurm.sh down   # cancel this cluster's jobs, stop the daemons `up`
#                                 # started (by their recorded PIDs), wait until they exit
#   scripts/local_slurm.sh status # which of them run
#
# Needs root. The node is this machine: its short host name, its CPUs and memory as
# `slurmd -C` reports them, one partition `local`, cores as the consumable resource
# (select/cons_tres + CR_Core), proctrack/linuxproc and task/none (nothing to configure).
# Files: the config at ${SLURM_CONF:-/etc/slurm/slurm.conf} (written only if absent or
# written by this script: a config of a real cluster is never replaced), everything else
# (munge key and socket, state, logs, PID files) under ${DSRELU_SLURM_DIR:-/var/lib/dsrelu-slurm}.
# munged runs on its own socket there, so a system munge is left alone. `down` keeps the
# files (the next `up` reuses them); delete both to forget the cluster. Ports:
# DSRELU_SLURMCTLD_PORT (6817) and DSRELU_SLURMD_PORT (6818).
set -euo pipefail

readonly PROG="local_slurm.sh"
readonly STATE="${DSRELU_SLURM_DIR:-/var/lib/dsrelu-slurm}"
readonly CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
readonly CTLD_PORT="${DSRELU_SLURMCTLD_PORT:-6817}"
readonly SLURMD_PORT="${DSRELU_SLURMD_PORT:-6818}"
readonly MARKER="# Written by dsrelu_lightning's scripts/local_slurm.sh"
readonly PACKAGES=(munge slurm-client slurmctld slurmd)
readonly DAEMONS=(munged slurmctld slurmd) # start order; stopped in reverse
readonly WAIT_S=60

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

note() { echo "$PROG: $*"; }

pid_file() { echo "$STATE/$1.pid"; }

# The PID `up` recorded for daemon $1, if that process still runs that program.
running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [[ -s "$file" ]] || return 1
    pid="$(<"$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]] || return 1
    echo "$pid"
}

# Who listens on TCP port $1 (nothing when nobody does).
port_owner() {
    local line
    if command -v ss >/dev/null; then
        line="$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n 1)"
        [[ -n "$line" ]] || return 0
        if [[ "$line" =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
            echo "${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]})"
        else
            echo "another process"
        fi
    elif (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "another process"
    fi
}

check_port() { # port, daemon, variable that moves it
    local owner
    owner="$(port_owner "$1")"
    [[ -z "$owner" ]] || die "port $1 ($2) is taken by $owner, which this script did not" \
        "start; stop it, or set $3 to a free port"
}

install_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them" \
        "(this script knows Debian and Ubuntu); install them yourself"
    note "installing ${missing[*]}"
    local apt=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" >"$STATE/apt.log" 2>&1; then
        # A fresh machine may have no package lists yet.
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${apt[@]}"; } \
            >>"$STATE/apt.log" 2>&1; then
            die "installing ${missing[*]} failed; see $STATE/apt.log"
        fi
    fi
}

write_config() {
    local node_line node
    if [[ -e "$CONF" ]] && ! grep -qxF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script (a real cluster's?); it is" \
            "left alone: move it away, or point SLURM_CONF at another path"
    fi
    # "NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=..
    # RealMemory=..": what slurmd finds on this machine.
    node_line="$(slurmd -C | head -n 1)"
    [[ "$node_line" == NodeName=* ]] || die "slurmd -C did not describe this machine: $node_line"
    node="${node_line%% *}"
    node="${node#NodeName=}"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF.tmp" <<EOF
$MARKER
# for trying the SLURM paths on one machine (not a production cluster); rewritten by
# each 'local_slurm.sh up'. State, logs and the munge socket: $STATE.
ClusterName=dsrelu-local
SlurmctldHost=$node
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire (default 120 s) is also how long a requeued job waits before it may start
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=15
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or times out
KillWait=10
$node_line State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    echo "$node" >"$STATE/node"
}

start_munged() {
    local dir="$STATE/munge"
    install -d -m 0755 -o munge -g munge "$dir"
    if [[ ! -s "$dir/munge.key" ]]; then
        mungekey --create --keyfile="$dir/munge.key.tmp" --force
        chown munge:munge "$dir/munge.key.tmp"
        chmod 0400 "$dir/munge.key.tmp"
        mv "$dir/munge.key.tmp" "$dir/munge.key"
    fi
    rm -f "$dir/munge.socket" "$dir/munge.socket.lock"
    runuser -u munge -- munged --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed" ||
        die "munged did not start; see $dir/munged.log"
    # munged writes its PID file as user munge; record it where `down` looks.
    cp "$dir/munged.pid" "$(pid_file munged)"
}

STARTED=() # the daemons this `up` started: stopped again if it fails

start_daemon() { # munged | slurmctld | slurmd
    if running_pid "$1" >/dev/null; then
        note "$1 already runs (pid $(running_pid "$1"))"
        return 0
    fi
    STARTED+=("$1")
    case "$1" in
        munged) start_munged ;;
        slurmctld)
            install -d -m 0755 "$STATE/slurmctld"
            slurmctld -f "$CONF" || die "slurmctld did not start; see $STATE/slurmctld.log"
            ;;
        slurmd)
            install -d -m 0755 "$STATE/slurmd"
            slurmd -f "$CONF" || die "slurmd did not start; see $STATE/slurmd.log"
            ;;
    esac
    local waited=0
    until running_pid "$1" >/dev/null; do
        ((waited++ < 10 * WAIT_S)) || die "$1 did not stay up; see its log in $STATE"
        sleep 0.1
    done
    note "$1 started (pid $(running_pid "$1"))"
}

stop_started_on_failure() {
    local code=$? i
    ((code != 0)) || return 0
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        stop_daemon "${STARTED[i]}" >/dev/null 2>&1 || true
    done
    return "$code"
}

wait_idle() {
    local node state waited=0
    node="$(<"$STATE/node")"
    while :; do
        state="$(sinfo -h -n "$node" -o %t 2>/dev/null || true)"
        case "$state" in
            idle | mix | alloc) break ;;
            down* | drain* | fail*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
        esac
        ((waited++ < 2 * WAIT_S)) || die "node $node is '${state:-unknown}', not idle, after" \
            "$WAIT_S s; see $STATE/slurmctld.log and $STATE/slurmd.log"
        sleep 0.5
    done
    note "up: node $node is $state ($(sinfo -h -n "$node" -o '%c CPUs, %m MiB'));" \
        "config $CONF, logs in $STATE"
}

up() {
    install -d -m 0755 "$STATE"
    # Before anything starts: the ports of the daemons that are not running yet.
    running_pid slurmctld >/dev/null || check_port "$CTLD_PORT" slurmctld DSRELU_SLURMCTLD_PORT
    running_pid slurmd >/dev/null || check_port "$SLURMD_PORT" slurmd DSRELU_SLURMD_PORT
    install_packages
    if running_pid slurmctld >/dev/null || running_pid slurmd >/dev/null; then
        # Keep the config the running daemons read; rewriting it under them could differ.
        [[ -s "$STATE/node" ]] || die "daemons run but $STATE/node is missing; run 'down' first"
    else
        write_config
    fi
    local daemon
    trap stop_started_on_failure EXIT
    for daemon in "${DAEMONS[@]}"; do
        start_daemon "$daemon"
    done
    wait_idle
    trap - EXIT
}

stop_daemon() {
    local pid waited=0
    pid="$(running_pid "$1")" || {
        rm -f "$(pid_file "$1")"
        return 0
    }
    kill -TERM "$pid"
    while [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]; do
        if ((waited++ == 10 * WAIT_S)); then
            note "$1 (pid $pid) ignored SIGTERM for $WAIT_S s: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    rm -f "$(pid_file "$1")"
    note "$1 stopped (pid $pid)"
}

cancel_jobs() {
    running_pid slurmctld >/dev/null || return 0
    local jobs waited=0
    jobs="$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
    [[ -n "${jobs// /}" ]] || return 0
    note "cancelling jobs $jobs"
    # shellcheck disable=SC2086 # one argument per job id
    scancel $jobs 2>/dev/null || true
    # Their slurmstepd and job processes end once the jobs have left the queue.
    while [[ -n "$(squeue -h -o %A 2>/dev/null)" ]]; do
        ((waited++ < 2 * WAIT_S)) || {
            note "jobs still ending after $WAIT_S s: $(squeue -h -o '%A %T' | tr '\n' ' ')"
            return 0
        }
        sleep 0.5
    done
}

down() {
    cancel_jobs
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
    local left
    left="$(pgrep -x slurmstepd | tr '\n' ' ' || true)"
    [[ -z "$left" ]] || note "slurmstepd processes remain (pid $left): jobs that did not end"
    note "down"
}

status() {
    local daemon pid code=0
    for daemon in "${DAEMONS[@]}"; do
        if pid="$(running_pid "$daemon")"; then
            note "$daemon runs (pid $pid)"
        else
            note "$daemon is not running"
            code=3
        fi
    done
    return "$code"
}

[[ $# -eq 1 ]] || die "usage: $PROG up|down|status"
case "$1" in
    up | down | status) ;;
    *) die "unknown command '$1'; usage: $PROG up|down|status" ;;
esac
[[ "$1" == status ]] || [[ "$(id -u)" -eq 0 ]] || die "must run as root (it installs packages" \
    "and starts system daemons); try: sudo $0 $1"
"$1"
