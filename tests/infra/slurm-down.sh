#!/usr/bin/env bash
# Stop exactly what slurm-up.sh started, by the PIDs it recorded. --purge also removes its state.
set -uo pipefail
R=${CAKE_SLURM_ROOT:-/tmp/cake-slurm}
export SLURM_CONF="$R/etc/slurm.conf"
log() { echo "[slurm-down $(date +%T)] $*"; }
running() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop() {  # name pidfile
  local pid
  [ -s "$2" ] || { log "$1: not running"; return; }
  pid=$(cat "$2")
  if running "$pid"; then
    log "stopping $1 (pid $pid)"; kill -TERM "$pid"
    for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
    running "$pid" && kill -KILL "$pid"
  fi
  rm -f "$2"
}
# Cancel jobs first so Slurm itself tears down their processes.
if [ -s "$R/run/slurmctld.pid" ] && running "$(cat "$R/run/slurmctld.pid")"; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo $jobs)"; echo "$jobs" | xargs -r scancel
    for _ in $(seq 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
if [ -s "$R/ssh/sshd.pid" ]; then  # per-connection sshd processes outlive the listener
  for child in $(ps -o pid= --ppid "$(cat "$R/ssh/sshd.pid")" 2>/dev/null); do kill -TERM "$child" 2>/dev/null || true; done
fi
stop sshd "$R/ssh/sshd.pid"
stop slurmd "$R/run/slurmd.pid"
stop slurmctld "$R/run/slurmctld.pid"
stop munged "$R/run/munged.pid"
[ "${1:-}" = "--purge" ] && rm -rf "$R"
log "done"
