#!/usr/bin/env bash
# Stop exactly what k8s-up.sh started (by the PIDs it recorded) and undo its host changes: the Pods'
# containers, mounts, network namespaces, the cakebr0 bridge, kubepods cgroups, and the sysctls the
# kubelet changed. --purge is accepted for symmetry with slurm-down.sh (state is always removed).
set -uo pipefail
H=${CAKE_K8S_HOME:-/var/cache/cake-k8s}
R=${CAKE_K8S_RUN:-/tmp/cake-k8s}
P="$R/pids"; B="$H/bin"
log() { echo "[k8s-down $(date +%T)] $*"; }
[ -d "$P" ] || { log "not running"; exit 0; }
export KUBECONFIG="$R/kubeconfig" CONTAINERD_ADDRESS="$R/containerd/containerd.sock"
running() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop() { local f="$P/$1.pid" pid; [ -s "$f" ] || return 0; pid=$(cat "$f")
  if running "$pid"; then kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do running "$pid" || break; sleep 0.25; done
    running "$pid" && kill -KILL "$pid" 2>/dev/null; fi
  rm -f "$f"; }
[ -s "$P/kube-apiserver.pid" ] && running "$(cat "$P/kube-apiserver.pid")" &&
  timeout 30 "$B/kubectl" delete pods --all -A --grace-period=0 --force >/dev/null 2>&1
stop kubelet
# containers and sandboxes the kubelet left: kill their tasks (the runc shims exit with them)
if [ -S "$CONTAINERD_ADDRESS" ]; then
  for c in $(timeout 10 ctr -n k8s.io tasks ls -q 2>/dev/null); do timeout 10 ctr -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1; done
  sleep 1
  for c in $(timeout 10 ctr -n k8s.io containers ls -q 2>/dev/null); do timeout 10 ctr -n k8s.io tasks delete -f "$c" >/dev/null 2>&1; done
fi
for pf in "$R"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*/shim.pid; do
  [ -f "$pf" ] && running "$(cat "$pf")" && kill -KILL "$(cat "$pf")" 2>/dev/null; done
stop containerd; stop kube-scheduler; stop kube-controller-manager; stop kube-apiserver; stop registry; stop etcd
# mounts, network namespaces, bridge and cgroups left behind by kubelet/containerd/CNI
grep -oE " $R[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
# only the Pod network namespaces that appeared while this cluster ran (another cluster may have its own)
for ns in $(ls /run/netns 2>/dev/null | grep '^cni-'); do
  grep -qx "$ns" "$R/netns.before" 2>/dev/null || ip netns delete "$ns" 2>/dev/null; done
ip link delete cakebr0 2>/dev/null
for ctl in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$ctl" ] && find "$ctl" -depth -type d -exec rmdir {} \; 2>/dev/null; done
[ -f "$R/sysctl.orig" ] && sysctl -q -w $(cat "$R/sysctl.orig")
rm -rf "$R"
log "stopped"
