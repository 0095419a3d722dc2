#!/usr/bin/env bash
# Start a real single-node Kubernetes v1.20.2 on loopback for Cake's tests (built by k8s-build.sh):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a loopback image registry, containerd +
# runc, kubelet. Pods get 10.245.0.0/24 on an isolated bridge with no route out; no kube-proxy or DNS
# (Cake needs neither: its channel is port-forward through the API server).
# Writes $CAKE_K8S_RUN/kubeconfig (admin, context "cake") and imports the session images.
# Idempotent: does nothing when its apiserver is already up. Stop with k8s-down.sh (by recorded PID).
# Needs root. ~20 s.
set -euo pipefail
H=${CAKE_K8S_HOME:-/var/cache/cake-k8s}
R=${CAKE_K8S_RUN:-/tmp/cake-k8s}
B="$H/bin"; P="$R/pids"; L="$R/logs"
API_PORT=${CAKE_K8S_API_PORT:-26443}; ETCD_PORT=${CAKE_K8S_ETCD_PORT:-32379}
KUBELET_PORT=${CAKE_K8S_KUBELET_PORT:-30250}; REG_PORT=${CAKE_K8S_REGISTRY_PORT:-35000}
NODE=cake-node
log() { echo "[k8s-up $(date +%T)] $*"; }
[ "$(id -u)" = 0 ] || { echo "k8s-up.sh needs root (containerd, kubelet)" >&2; exit 1; }
[ -x "$B/kube-apiserver" ] && [ -f "$H/images/cake-python.tar" ] || { echo "run tests/infra/k8s-build.sh first ($H is incomplete)" >&2; exit 1; }
alive() { [ -s "$P/$1.pid" ] && [ -e "/proc/$(cat "$P/$1.pid")" ]; }
if alive kube-apiserver && alive kubelet; then log "already running ($R)"; exit 0; fi
if ls "$P"/*.pid >/dev/null 2>&1; then log "a previous cluster left PIDs behind: stopping it first"; "$(dirname "$0")/k8s-down.sh"; fi
rm -rf "$R"
mkdir -p "$R"/{etcd,pki,kubelet/pki,containerd/root,containerd/state,containerd/runc,cni-conf,cni-ipam,"certs.d/127.0.0.1:$REG_PORT",registry} "$P" "$L"
chmod 755 "$R"
ls /run/netns 2>/dev/null > "$R/netns.before" || true
t0=$(date +%s)
bg() { local name=$1; shift; nohup "$@" > "$L/$name.log" 2>&1 & echo $! > "$P/$name.pid"; }
wait_for() { local what=$1 n=$2; shift 2
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && { log "$what ($(( $(date +%s) - t0 )) s)"; return 0; }; sleep 0.5; done
  echo "timeout: $what (logs in $L)" >&2; return 1; }

openssl genrsa -out "$R/pki/sa.key" 2048 2>/dev/null; openssl rsa -in "$R/pki/sa.key" -pubout -out "$R/pki/sa.pub" 2>/dev/null
TOKEN=$(openssl rand -hex 16)
echo "$TOKEN,admin,admin-uid,system:masters" > "$R/pki/tokens.csv"
chmod 600 "$R/pki/tokens.csv" "$R/pki/sa.key"
KC="$R/kubeconfig"
cat > "$KC" <<KCEOF
apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$R/pki/serving/apiserver.crt"}
  name: cake
users:
- name: admin
  user: {token: "$TOKEN"}
contexts:
- context: {cluster: cake, user: admin, namespace: default}
  name: cake
current-context: cake
KCEOF
chmod 600 "$KC"
export KUBECONFIG="$KC"

bg etcd etcd --name default --data-dir "$R/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT+1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT+1))" --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT+1))"
bg kube-apiserver "$B/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 \
  --secure-port="$API_PORT" --cert-dir="$R/pki/serving" --token-auth-file="$R/pki/tokens.csv" \
  --authorization-mode=Node,RBAC --service-account-key-file="$R/pki/sa.pub" \
  --service-account-signing-key-file="$R/pki/sa.key" --service-account-issuer=https://kubernetes.default.svc \
  --service-cluster-ip-range=10.97.0.0/24 --allow-privileged=true --kubelet-preferred-address-types=InternalIP
wait_for "kube-apiserver ready" 240 curl -sfk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz"
bg kube-controller-manager "$B/kube-controller-manager" --kubeconfig="$KC" --leader-elect=false \
  --service-account-private-key-file="$R/pki/sa.key" --root-ca-file="$R/pki/serving/apiserver.crt" \
  --use-service-account-credentials=true --port=0 --secure-port=0
bg kube-scheduler "$B/kube-scheduler" --kubeconfig="$KC" --leader-elect=false --port=0 --secure-port=0

# a loopback registry (plain HTTP on 127.0.0.1 only): images named 127.0.0.1:$REG_PORT/... are pulled
# from it for real; the session images are imported directly (localhost/...), so nothing is pulled
# from outside
cat > "$R/registry.yml" <<RG
version: 0.1
storage: {filesystem: {rootdirectory: "$R/registry"}, delete: {enabled: true}}
http: {addr: "127.0.0.1:$REG_PORT"}
RG
bg registry docker-registry serve "$R/registry.yml"
cat > "$R/certs.d/127.0.0.1:$REG_PORT/hosts.toml" <<HT
server = "http://127.0.0.1:$REG_PORT"
[host."http://127.0.0.1:$REG_PORT"]
  capabilities = ["pull", "resolve"]
HT
cat > "$R/cni-conf/10-cake.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "cake-isolated", "plugins": [
  {"type": "bridge", "bridge": "cakebr0", "isGateway": false, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.0.0/24"}]], "dataDir": "$R/cni-ipam"}},
  {"type": "loopback"}]}
CNI
cat > "$R/containerd.toml" <<CT
version = 2
root = "$R/containerd/root"
state = "$R/containerd/state"
[grpc]
  address = "$R/containerd/containerd.sock"
[ttrpc]
  address = "$R/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/cake-pause:3.2"
  restrict_oom_score_adj = true    # this sandbox forbids lowering oom_score_adj
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$R/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$R/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$R/certs.d"
CT
bg containerd containerd --config "$R/containerd.toml"
export CONTAINERD_ADDRESS="$R/containerd/containerd.sock"
wait_for "containerd up" 60 ctr version
# importing the images (~350 MB) takes as long as the kubelet's start: do both at once
( for img in pause busybox cake-python cake-python-bare; do
    ctr -n k8s.io images import "$H/images/$img.tar" >/dev/null || exit 1
  done ) > "$L/import.log" 2>&1 &
import_pid=$!
wait_for "registry up" 60 curl -sf "http://127.0.0.1:$REG_PORT/v2/"
skopeo copy -q --dest-tls-verify=false "docker-archive:$H/images/busybox.tar" "docker://127.0.0.1:$REG_PORT/busybox:latest"

# the kubelet changes these sysctls: remember them for k8s-down.sh
sysctl -e vm.overcommit_memory kernel.panic kernel.panic_on_oops | sed "s/ = /=/" > "$R/sysctl.orig"
bg kubelet "$B/kubelet" --kubeconfig="$KC" --hostname-override="$NODE" \
  --container-runtime=remote --container-runtime-endpoint="unix://$R/containerd/containerd.sock" \
  --root-dir="$R/kubelet" --cert-dir="$R/kubelet/pki" --volume-plugin-dir="$R/kubelet/volume-plugins" \
  --node-ip=127.0.0.1 --cgroup-driver=cgroupfs --fail-swap-on=false --address=127.0.0.1 --port="$KUBELET_PORT" \
  --healthz-port=0 --read-only-port=0 --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
  --eviction-hard='memory.available<100Mi' --pod-infra-container-image=localhost/cake-pause:3.2
wait_for "node registered" 120 "$B/kubectl" get node "$NODE"
# the kubelet refuses a loopback --node-ip and leaves the Node without addresses: give it 127.0.0.1 so
# that logs, exec and port-forward reach the kubelet
curl -sfk -X PATCH -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/merge-patch+json' \
  "https://127.0.0.1:$API_PORT/api/v1/nodes/$NODE/status" \
  -d '{"status":{"addresses":[{"type":"InternalIP","address":"127.0.0.1"},{"type":"Hostname","address":"'"$NODE"'"}]}}' >/dev/null
wait_for "node Ready" 120 "$B/kubectl" wait --for=condition=Ready "node/$NODE" --timeout=1s
wait_for "default ServiceAccount" 60 "$B/kubectl" get serviceaccount default
wait "$import_pid" || { echo "importing the images into containerd failed ($L/import.log)" >&2; exit 1; }
log "images imported ($(( $(date +%s) - t0 )) s)"
cat > "$R/env.sh" <<ENV
export KUBECONFIG=$KC
export PATH=$B:\$PATH
ENV
log "cluster up in $(( $(date +%s) - t0 )) s: KUBECONFIG=$KC"
