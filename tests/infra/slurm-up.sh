#!/usr/bin/env bash
# Bring up a real single-node Slurm cluster on this machine for Cake's tests:
#   munge + slurmctld + slurmd (Debian's packages), a fake GPU GRES (type t4) so that
#   --gres=gpu:t4:1 sets CUDA_VISIBLE_DEVICES, and a key-only sshd on 127.0.0.1 that acts as the
#   login node (host alias `cake-login` in $CAKE_SLURM_ROOT/ssh/ssh_config).
# Idempotent; state lives under $CAKE_SLURM_ROOT (default /tmp/cake-slurm). Needs root (apt, daemons).
# Stop with tests/infra/slurm-down.sh, which kills exactly the PIDs recorded here.
# Pitfalls handled (found on these machines): no cgroups -> proctrack/linuxproc + task/none; gres File=
# must be a character device; munge's socket dir must be 0755; sshd with UsePAM no, StrictModes no
# (/tmp is world-writable) and /run/sshd present; batch_sched_delay=0 halves job start latency.
set -euo pipefail

R=${CAKE_SLURM_ROOT:-/tmp/cake-slurm}
SSH_PORT=${CAKE_SLURM_SSH_PORT:-2222}
log() { echo "[slurm-up $(date +%T)] $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "slurm-up.sh needs root (it installs Debian's slurm packages and starts daemons)." >&2
  exit 1
fi

# ------------------------------------------------------------------ packages
need=()
command -v munged >/dev/null || need+=(munge)
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v slurmd >/dev/null || need+=(slurmd)
command -v sbatch >/dev/null || need+=(slurm-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  # Keep package scripts from starting the system's own munge/slurm/ssh services.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  for attempt in 1 2 3 4 5; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null && break
    log "apt-get install failed (attempt $attempt); retrying in 10 s"; sleep 10
  done
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  command -v slurmctld >/dev/null || { echo "could not install Slurm" >&2; exit 1; }
fi

mkdir -p "$R"/{etc,run,log,state/ctld,state/d,munge,dev,ssh}
chmod 755 "$R" "$R/munge"
H=$(hostname -s)
export SLURM_CONF="$R/etc/slurm.conf"
alive() { [ -s "$1" ] && [ -e "/proc/$(cat "$1")" ] && [ "$(awk '{print $3}' "/proc/$(cat "$1")/stat" 2>/dev/null)" != Z ]; }

# ------------------------------------------------------------------ munge
[ -s "$R/munge/munge.key" ] || dd if=/dev/urandom of="$R/munge/munge.key" bs=128 count=1 status=none
chmod 400 "$R/munge/munge.key"
MSOCK="$R/munge/munge.socket.2"
if ! alive "$R/run/munged.pid"; then
  rm -f "$MSOCK" "$MSOCK.lock"
  munged --socket="$MSOCK" --key-file="$R/munge/munge.key" --log-file="$R/log/munged.log" \
         --pid-file="$R/run/munged.pid" --seed-file="$R/munge/munged.seed"
fi
for _ in $(seq 50); do munge -S "$MSOCK" -n 2>/dev/null | unmunge -S "$MSOCK" >/dev/null 2>&1 && break; sleep 0.2; done

# ------------------------------------------------------------------ slurm.conf + fake GPU
read -r CPUS SOCK CORES THREADS MEM < <(slurmd -C | head -1 | python3 -c '
import re, sys
d = dict(re.findall(r"(\w+)=(\S+)", sys.stdin.read()))
print(d["CPUs"], d["SocketsPerBoard"], d["CoresPerSocket"], d["ThreadsPerCore"], int(int(d["RealMemory"]) * 0.9))')
GPU_FILE="$R/dev/nvidia0"
if [ ! -c "$GPU_FILE" ]; then rm -f "$GPU_FILE"; mknod "$GPU_FILE" c 1 3 2>/dev/null || GPU_FILE=/dev/null; fi
printf 'AutoDetect=off\nNodeName=%s Name=gpu Type=t4 File=%s\n' "$H" "$GPU_FILE" > "$R/etc/gres.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=cakecluster
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$MSOCK
CredType=cred/munge
StateSaveLocation=$R/state/ctld
SlurmdSpoolDir=$R/state/d
SlurmctldPidFile=$R/run/slurmctld.pid
SlurmdPidFile=$R/run/slurmd.pid
SlurmctldLogFile=$R/log/slurmctld.log
SlurmdLogFile=$R/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=$SOCK CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM Gres=gpu:t4:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
echo "export SLURM_CONF=$SLURM_CONF" > "$R/env.sh"

if ! alive "$R/run/slurmctld.pid"; then log "starting slurmctld"; slurmctld; fi
for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
if ! alive "$R/run/slurmd.pid"; then log "starting slurmd"; slurmd; fi
for _ in $(seq 120); do
  state=$(sinfo -h -N -n "$H" -o %t 2>/dev/null || true)
  case "$state" in idle|mix|alloc) break ;; drain*|down*) scontrol update nodename="$H" state=resume 2>/dev/null || true ;; esac
  sleep 0.5
done
state=$(sinfo -h -N -n "$H" -o %t 2>/dev/null || true)
case "$state" in idle|mix|alloc) log "node $H is $state" ;;
  *) log "node $H is '$state'"; tail -20 "$R/log/slurmctld.log" "$R/log/slurmd.log" >&2; exit 1 ;; esac

# ------------------------------------------------------------------ login node: key-only sshd
S="$R/ssh"; chmod 700 "$S"
[ -s "$S/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$S/host_key"
[ -s "$S/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C cake-tests -f "$S/id_ed25519"
cp "$S/id_ed25519.pub" "$S/authorized_keys"; chmod 600 "$S/authorized_keys"
mkdir -p /run/sshd; chmod 755 /run/sshd
cat > "$S/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $S/host_key
PidFile $S/sshd.pid
AuthorizedKeysFile $S/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding yes
PrintMotd no
MaxSessions 100
MaxStartups 100
SetEnv SLURM_CONF=$SLURM_CONF
CONF
# Host aliases: the login node; a port where nothing listens; the login node with a key it refuses.
ssh_host() {  # alias port identity-file
  printf 'Host %s\n  HostName 127.0.0.1\n  Port %s\n  User root\n  IdentityFile %s\n' "$1" "$2" "$3"
  printf '  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n'
}
{
  ssh_host cake-login "$SSH_PORT" "$S/id_ed25519"
  ssh_host cake-unreachable 1 "$S/id_ed25519"
  ssh_host cake-badkey "$SSH_PORT" "$S/host_key"
} > "$S/ssh_config"
/usr/sbin/sshd -t -f "$S/sshd_config"
if ! alive "$S/sshd.pid"; then log "starting sshd on 127.0.0.1:$SSH_PORT"; /usr/sbin/sshd -f "$S/sshd_config" -E "$R/log/sshd.log"; fi
for _ in $(seq 50); do
  ssh -F "$S/ssh_config" -o BatchMode=yes -o ConnectTimeout=2 cake-login true 2>/dev/null && break; sleep 0.2
done
ssh -F "$S/ssh_config" -o BatchMode=yes cake-login "sinfo -h -o '%P %a %D %t %G'" | sed 's/^/[slurm-up] via ssh: /'
log "ready: source $R/env.sh"
