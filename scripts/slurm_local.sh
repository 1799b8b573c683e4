#!/usr/bin/env bash
# A single-node SLURM on this machine, for trying (and testing) the `hydra/launcher=slurm`
# path without a cluster:
#
#   bash scripts/slurm_local.sh start    # idempotent; prints where the logs are
#   bash scripts/slurm_local.sh status
#   bash scripts/slurm_local.sh stop
#
# What `start` brings up, each daemon by hand (no systemd needed):
#   munged      authentication (Debian's /etc/munge/munge.key)
#   mariadbd    the accounting database, its own data directory, bound to 127.0.0.1 only
#   slurmdbd    accounting: without it `sacct` fails and submitit cannot tell that a
#               cancelled job is over, so a sweep waits for it forever
#   slurmctld   the controller;  slurmd  the one compute node (partition `debug`)
# All state, spool, config and log files live in $GROKTRANSFER_SLURM_DIR
# (default /tmp/groktransfer-slurm). /etc/slurm/slurm.conf becomes a symlink to the
# config there so that sbatch/sinfo/sacct work without SLURM_CONF; an existing real
# /etc/slurm/slurm.conf is never touched (the script refuses instead).
#
# Needs root (it starts daemons as root and munged as the munge user). When the Debian
# packages are missing it installs them: slurmctld slurmd slurm-client munge slurmdbd
# mariadb-server (apt-get; package registries only).
# Exit codes: 0 up (or stopped), 1 could not start (the log to read is printed), 2 usage.
set -euo pipefail

STATE="${GROKTRANSFER_SLURM_DIR:-/tmp/groktransfer-slurm}"
CPUS="${GROKTRANSFER_SLURM_CPUS:-8}"          # declared CPUs: more than the machine has, so jobs overlap
DB_PORT="${GROKTRANSFER_SLURM_DB_PORT:-3316}"  # not 3306: a system MariaDB may hold that
NODE="$(hostname -s)"
CONF="$STATE/etc/slurm.conf"
SYSTEM_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
LOG="$STATE/log"
RUN="$STATE/run"

say() { echo "[slurm_local] $*"; }
die() { echo "[slurm_local] ERROR: $*" >&2; exit 1; }

alive() {  # alive <pidfile>: the process recorded there is running
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for <seconds> <description> <log> <command...>
  local limit="$1" what="$2" log="$3"; shift 3
  local t=0
  until "$@" >/dev/null 2>&1; do
    t=$((t + 1))
    if [ "$t" -ge $((limit * 5)) ]; then
      echo "[slurm_local] ERROR: $what did not come up within ${limit}s; last lines of $log:" >&2
      tail -n 20 "$log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$LOG/apt.log" 2>&1 || { tail -n 20 "$LOG/apt.log" >&2; die "apt-get update failed"; }
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 \
    || { tail -n 20 "$LOG/apt.log" >&2; die "apt-get install failed (see $LOG/apt.log)"; }
}

write_configs() {
  local mem_mb
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$STATE/etc" "$STATE/ctld" "$STATE/spool" "$LOG" "$RUN"
  cat >"$CONF" <<EOF
# written by scripts/slurm_local.sh: a one-node cluster for trying groktransfer's SLURM path
ClusterName=groktransfer
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again after 10 s instead of the default 120 s
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# lets the node declare more CPUs than it has, so more than two jobs run at once
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
# schedule every 2 s (defaults: 60 s, backfill 30 s), so a requeued job restarts promptly
SchedulerParameters=bf_interval=2,sched_interval=2
JobRequeue=1
# seconds between SIGTERM and SIGKILL when a job is cancelled or requeued
KillWait=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$STATE/etc/slurmdbd.conf" <<EOF
# written by scripts/slurm_local.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$STATE/etc/slurmdbd.conf"
}

link_system_conf() {
  if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then return 0; fi
  if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    die "$SYSTEM_CONF exists and is not this script's; refusing to replace a real cluster's config"
  fi
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -s "$CONF" "$SYSTEM_CONF"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall the munge package)"
  touch "$LOG/munged.log" && chown munge:munge "$LOG/munged.log"
  runuser -u munge -- /usr/sbin/munged --log-file="$LOG/munged.log" --pid-file=/run/munge/munged.pid
  touch "$RUN/munged.ours"  # stop only what we started
  wait_for 10 munged "$LOG/munged.log" sh -c 'munge -n | unmunge'
}

start_mariadb() {
  local db="$STATE/mysql" sock="$STATE/mysql/mysqld.sock"
  alive "$db/mariadbd.pid" && return 0
  if [ ! -d "$db/mysql" ]; then
    mkdir -p "$db" && chown mysql:mysql "$db"
    mariadb-install-db --user=mysql --datadir="$db" --auth-root-authentication-method=socket \
      >"$LOG/mariadb-install.log" 2>&1 || { tail -n 20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  touch "$LOG/mariadbd.log" && chown mysql:mysql "$LOG/mariadbd.log"  # it runs as mysql
  # setsid: the server must outlive the caller's process group (CI kills it when the step ends)
  setsid /usr/sbin/mariadbd --user=mysql --datadir="$db" --socket="$sock" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --pid-file="$db/mariadbd.pid" --log-error="$LOG/mariadbd.log" \
    --skip-name-resolve >/dev/null 2>&1 &
  wait_for 60 mariadbd "$LOG/mariadbd.log" mariadb --socket="$sock" -uroot -e 'SELECT 1'
  mariadb --socket="$sock" -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

start_slurm_daemons() {
  export SLURM_CONF="$CONF"  # slurmdbd finds slurmdbd.conf beside it
  if ! alive "$RUN/slurmdbd.pid"; then
    /usr/sbin/slurmdbd
    wait_for 30 slurmdbd "$LOG/slurmdbd.log" sh -c "grep -q 'slurmdbd version .* started' '$LOG/slurmdbd.log'"
  fi
  if ! alive "$RUN/slurmctld.pid"; then
    /usr/sbin/slurmctld -f "$CONF"
    wait_for 30 slurmctld "$LOG/slurmctld.log" scontrol ping
  fi
  if ! alive "$RUN/slurmd.pid"; then
    /usr/sbin/slurmd -f "$CONF"
  fi
  # the node is usable once sinfo lists it idle (or already busy with jobs)
  wait_for 60 slurmd "$LOG/slurmd.log" sh -c "sinfo -h -N -o '%T' | grep -qE '^(idle|mixed|allocated)'"
  # accounting: the controller registers the cluster itself; wait until sacct answers
  wait_for 30 "accounting (sacct)" "$LOG/slurmdbd.log" sacct -n -X -S now
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || { echo "[slurm_local] needs root (it starts munged, mariadbd and the SLURM daemons)" >&2; exit 1; }
  local t0; t0=$(date +%s.%N)
  mkdir -p "$LOG" "$RUN"
  install_packages
  write_configs
  link_system_conf
  start_munge
  start_mariadb
  start_slurm_daemons
  local secs; secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  echo "$secs" >"$STATE/start_seconds"
  say "SLURM is up in ${secs}s: node $NODE, partition debug ($(sinfo -h -o '%c' | head -1) CPUs)"
  say "config $CONF; logs in $LOG (slurmctld.log slurmd.log slurmdbd.log mariadbd.log munged.log)"
}

stop_pid() {  # stop_pid <name> <pidfile>
  if alive "$2"; then
    local pid; pid=$(cat "$2")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$2"
}

cmd_stop() {
  stop_pid slurmd "$RUN/slurmd.pid"
  stop_pid slurmctld "$RUN/slurmctld.pid"
  stop_pid slurmdbd "$RUN/slurmdbd.pid"
  stop_pid mariadbd "$STATE/mysql/mariadbd.pid"
  if [ -e "$RUN/munged.ours" ]; then
    stop_pid munged /run/munge/munged.pid
    rm -f "$RUN/munged.ours"
  fi
  if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then rm -f "$SYSTEM_CONF"; fi
  say "stopped; state and logs kept in $STATE (delete it for a clean start)"
}

cmd_status() {
  local rc=0
  for d in munged:/run/munge/munged.pid mariadbd:"$STATE/mysql/mariadbd.pid" slurmdbd:"$RUN/slurmdbd.pid" \
           slurmctld:"$RUN/slurmctld.pid" slurmd:"$RUN/slurmd.pid"; do
    if alive "${d#*:}"; then say "${d%%:*}: running (pid $(cat "${d#*:}"))"; else say "${d%%:*}: not running"; rc=1; fi
  done
  if [ "$rc" -eq 0 ] && SLURM_CONF="$CONF" scontrol ping >/dev/null 2>&1; then
    SLURM_CONF="$CONF" sinfo
    [ -s "$STATE/start_seconds" ] && say "last start took $(cat "$STATE/start_seconds")s"
  else
    rc=1
  fi
  say "logs in $LOG"
  return "$rc"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
