#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for development and CI (Debian/Ubuntu, as root,
# no systemd needed): munged, slurmctld, slurmd, and slurmdbd on a private MariaDB, because
# submitit reads job states with sacct, which needs accounting.
#
#   scripts/slurm_local.sh up       install what is missing (apt-get), write the configs, start
#   scripts/slurm_local.sh down     cancel every job, stop every daemon that `up` started
#   scripts/slurm_local.sh status   the daemons and the node
#
# One node (this host, its CPUs and memory as slurmd sees them), one default partition `local`.
# State and logs live under $SLURM_LOCAL_DIR (default /var/lib/slurm-local); the configs go to
# /etc/slurm, and are only overwritten when this script wrote them.
set -euo pipefail

ROOT=${SLURM_LOCAL_DIR:-/var/lib/slurm-local}
RUN=$ROOT/run
LOGS=$ROOT/log
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by cnn-train scripts/slurm_local.sh; 'down' then 'up' rewrites it"
PARTITION=local
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
MYSQL_SOCKET=$RUN/mariadb/mariadbd.sock
export MYSQL_UNIX_PORT=$MYSQL_SOCKET # slurmdbd's MariaDB client finds the private server here

say() { echo "slurm_local: $*" >&2; }
die() {
    echo "error: $*" >&2
    exit 1
}

pid_file() { # pid_file NAME: where the daemon writes its pid
    case "$1" in
    munged) echo /run/munge/munged.pid ;;
    mariadb) echo "$RUN/mariadb/mariadbd.pid" ;;
    *) echo "$RUN/$1.pid" ;;
    esac
}

running() { # running NAME: the daemon's pid file names a live process
    local pid
    pid=$(cat "$(pid_file "$1")" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

wait_until() { # wait_until SECONDS WHAT COMMAND...: poll COMMAND every half second
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 2))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up within ${seconds}s; see the logs in $LOGS"
}

install_missing() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" \
        >"$LOGS/apt.log" 2>&1 || die "apt-get install failed; see $LOGS/apt.log"
}

write_if_ours() { # write_if_ours PATH MODE: stdin becomes PATH unless someone else wrote PATH
    local path=$1 mode=$2 text
    text=$(cat)
    if [ -f "$path" ] && ! grep -qF "$MARK" "$path"; then
        die "$path exists and was not written by this script; move it away first"
    fi
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$text" >"$path.tmp"
    chmod "$mode" "$path.tmp"
    mv "$path.tmp" "$path"
}

write_configs() {
    local node hardware memory cpus
    node=$(hostname -s)
    getent hosts "$node" >/dev/null || die "this host's name '$node' does not resolve; add it to /etc/hosts"
    hardware=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hardware")
    write_if_ours "$CONF" 644 <<EOF
$MARK
ClusterName=local
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$ROOT/slurmctld
SlurmdSpoolDir=$ROOT/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups: processes are tracked through their parents, tasks are not bound to CPUs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
# CPUs (not whole cores) and memory are what jobs ask for and get.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
NodeName=$node $hardware State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((memory / cpus))
EOF
    write_if_ours "$DBD_CONF" 600 <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
EOF
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return # a munged is already serving this host (ours or the system's)
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
    runuser -u munge -- munged
    touch "$RUN/munged.ours" # so that `down` stops it, and only then
    wait_until 30 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
    running mariadb && return
    if [ ! -d "$ROOT/mysql/mysql" ]; then
        mkdir -p "$ROOT/mysql"
        chown mysql:mysql "$ROOT/mysql"
        mariadb-install-db --no-defaults --user=mysql --datadir="$ROOT/mysql" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed; see $LOGS/mariadb-install.log"
    fi
    setsid mariadbd --no-defaults --user=mysql --datadir="$ROOT/mysql" --socket="$MYSQL_SOCKET" \
        --pid-file="$(pid_file mariadb)" --skip-networking --log-error="$LOGS/mariadb.log" \
        </dev/null >/dev/null 2>&1 &
    wait_until 60 MariaDB mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" ping
}

node_state() { sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null | head -1; }

up() {
    [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"
    mkdir -p "$RUN/mariadb" "$LOGS" "$ROOT/slurmctld" "$ROOT/slurmd"
    install_missing
    chown mysql:mysql "$RUN/mariadb"
    write_configs
    start_munge
    start_mariadb
    running slurmdbd || slurmdbd
    wait_until 60 slurmdbd sacctmgr -n list cluster
    running slurmctld || slurmctld
    wait_until 60 slurmctld scontrol ping
    running slurmd || slurmd
    wait_until 60 "the node" sh -c "sinfo -h -o %T | grep -qvE 'unk|down|drain|not_responding'"
    case "$(node_state)" in
    *drain* | *down*) scontrol update nodename="$(hostname -s)" state=resume ;;
    esac
    say "up: partition '$PARTITION', node $(hostname -s) $(node_state); logs in $LOGS"
}

stop() { # stop NAME: TERM the daemon, wait for it to go
    running "$1" || return 0
    local pid
    pid=$(cat "$(pid_file "$1")")
    kill "$pid"
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

down() {
    if running slurmctld; then
        squeue -h -o %A | sort -u | xargs -r scancel 2>/dev/null || true
        for _ in $(seq 90); do
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    stop slurmd
    stop slurmctld
    stop slurmdbd
    stop mariadb
    if [ -f "$RUN/munged.ours" ]; then
        stop munged
        rm -f "$RUN/munged.ours"
    fi
    say "down"
}

status() {
    local name
    for name in munged mariadb slurmdbd slurmctld slurmd; do
        if running "$name"; then echo "$name running"; else echo "$name stopped"; fi
    done
    running slurmctld && sinfo
    return 0
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) die "usage: $0 up|down|status" ;;
esac
