#!/usr/bin/env bash
# Make the ALREADY RUNNING local Slurm cluster of tests/infra/slurm-up.sh usable by SkyPilot, offline,
# for tests/sky and bench/sky.py. Additive and idempotent: it never restarts Slurm or sshd.
#
#   - a login user other than root (SkyPilot refuses to set itself up as root on a Slurm login node),
#     authorised with the same test key as root (sshd reads $R/ssh/authorized_keys for every user);
#   - TEST-ONLY offline shims for SkyPilot's node runtime setup, which otherwise downloads uv and a
#     CPython from the internet: a `curl` in ~user/bin answering the uv installer URL with a script that
#     links a uv installed from the package registry, and a uv wrapper mapping `--python 3.10` to this
#     machine's python3.11 and using the system CA store (UV_NATIVE_TLS). None of this is product code;
#   - a node Python ($R/sky/node-python) with ipykernel + cloudpickle (+ matplotlib for figures), the
#     interpreter the test targets name with `python = ...`, as a cluster's module would provide;
#   - a private client HOME ($R/sky/home) so root's ~/.sky and ~/.slurm are untouched: ~/.slurm/config
#     (Host cakecluster = the login node), ~/.sky/config.yaml (runtime tmpdir), seeded catalogs
#     (~/.sky/catalogs/v8: GPU names, and a Hyperbolic price list + dummy key for dry-run planning);
#   - $R/sky/python: the interpreter Cake's SkyPilot bridge runs with (CAKE_SKY_PYTHON): .venv-sky's
#     python with that HOME, usage collection off and a private API server port; $R/sky/sky: the CLI.
# Needs root. Usage: tests/infra/sky-up.sh   (env: CAKE_SLURM_ROOT, CAKE_SKY_USER, CAKE_SKY_VENV)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${CAKE_SLURM_ROOT:-/tmp/cake-slurm}
U=${CAKE_SKY_USER:-cakesky}
VENV=$(realpath "${CAKE_SKY_VENV:-.venv-sky}")
PORT=${CAKE_SKY_API_PORT:-46591}
SSH_PORT=${CAKE_SLURM_SSH_PORT:-2222}
K="$R/sky"
log() { echo "[sky-up $(date +%T)] $*"; }
quiet_pip() { "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }

[ "$(id -u)" = 0 ] || { echo "sky-up.sh needs root (it adds a login user)" >&2; exit 1; }
[ -s "$R/ssh/sshd.pid" ] && [ -e "/proc/$(cat "$R/ssh/sshd.pid")" ] ||
  { echo "the local Slurm cluster is not up: run tests/infra/slurm-up.sh first" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || { echo "no SkyPilot venv at $VENV: run tests/infra/sky-venv.sh first" >&2; exit 1; }
need=()
command -v rsync >/dev/null || need+=(rsync)     # SkyPilot syncs its runtime and workdirs with rsync
command -v curl >/dev/null || need+=(curl)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$K"; chmod 755 "$K"

# ------------------------------------------------------------------ login user
mkdir -p "$R/home"; chmod 755 "$R/home"
# '*' password: no password but not locked (sshd with UsePAM no refuses locked '!' accounts)
id "$U" >/dev/null 2>&1 || useradd -m -d "$R/home/$U" -s /bin/bash -p '*' "$U"
UH=$(getent passwd "$U" | cut -d: -f6)
case "$UH" in "$R"/*) ;; *) echo "refusing: home of $U ($UH) is not under $R" >&2; exit 1 ;; esac
# The user may outlive a wiped $R: bring its home back, owned by it (.profile puts ~/bin on PATH)
[ -f "$UH/.profile" ] || { mkdir -p "$UH"; cp -rT /etc/skel "$UH"; chown -R "$U:" "$UH"; }
chown "$U:" "$UH"

# ------------------------------------------------------------------ node-side shims (test only)
T="$K/tools"; mkdir -p "$T/shim"
if [ ! -x "$T/uvpkg/bin/uv" ]; then
  log "installing uv (for SkyPilot's node runtime)"
  quiet_pip "$VENV/bin/python" -m pip install -q --target "$T/uvpkg" uv   # any pip will do; the system may have none
fi
cat > "$T/uvwrap" <<UVWRAP
#!/bin/bash
# TEST SHIM: SkyPilot runs "uv venv ... --python 3.10", which would download CPython. Use python3.11.
args=(); prev=
for a in "\$@"; do
  if [ "\$prev" = "--python" ] && [ "\$a" = "3.10" ]; then a=/usr/bin/python3.11; fi
  args+=("\$a"); prev=\$a
done
export UV_NATIVE_TLS=1 SSL_CERT_FILE=\${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
exec $T/uvpkg/bin/uv "\${args[@]}"
UVWRAP
cat > "$T/shim/curl" <<CURLSHIM
#!/bin/bash
# TEST SHIM: answer SkyPilot's "curl -LsSf https://astral.sh/uv/install.sh | sh" with a local installer.
for a in "\$@"; do
  if [ "\$a" = https://astral.sh/uv/install.sh ]; then
    cat <<'EOS'
#!/bin/sh
set -e
d="\${UV_INSTALL_DIR:-\$HOME/.local/bin}"
mkdir -p "\$d"
ln -sf $T/uvwrap "\$d/uv"
ln -sf $T/uvpkg/bin/uvx "\$d/uvx"
EOS
    exit 0
  fi
done
exec /usr/bin/curl "\$@"
CURLSHIM
chmod 755 "$T/uvwrap" "$T/shim/curl"; chmod -R a+rX "$T"
# Debian's ~/.profile puts ~/bin first on PATH for the login shells SkyPilot runs its setup in
install -d -o "$U" -g "$U" "$UH/bin"
ln -sfn "$T/shim/curl" "$UH/bin/curl"
install -d -m 1777 "$K/runtime"      # slurm.cluster_configs.<cluster>.tmpdir

# ------------------------------------------------------------------ node Python for the kernel
if [ ! -f "$K/node-python/.ready" ]; then
  log "creating the node Python (ipykernel, cloudpickle, matplotlib)"
  rm -rf "$K/node-python"
  /usr/bin/python3 -m venv "$K/node-python"
  quiet_pip "$K/node-python/bin/python" -m pip install -q ipykernel cloudpickle matplotlib
  touch "$K/node-python/.ready"
fi
chmod -R a+rX "$K/node-python"

# ------------------------------------------------------------------ client side: SkyPilot's HOME
SH="$K/home"; C="$SH/.sky/catalogs/v8"
mkdir -p "$SH/.slurm" "$SH/.ssh" "$C/common"; chmod 700 "$SH/.ssh"
cat > "$SH/.slurm/config" <<CFG
Host cakecluster
  HostName 127.0.0.1
  Port $SSH_PORT
  User $U
  IdentityFile $R/ssh/id_ed25519
  IdentitiesOnly yes
CFG
cat > "$SH/.sky/config.yaml" <<CFG
slurm:
  cluster_configs:
    cakecluster:
      tmpdir: $K/runtime
CFG
# SkyPilot canonicalises GPU names against common/accelerators.csv (downloaded unless present).
printf 'AcceleratorName,Clouds\nT4,"Hyperbolic, Kubernetes, Slurm, SSH"\nA100,"Hyperbolic, Kubernetes, Slurm, SSH"\nH100,"Hyperbolic, Kubernetes, Slurm, SSH"\n' \
  > "$C/common/accelerators.csv"
# Dry-run planning of a cloud target (`%cake plan hyperbolic --gpus H100:1`): a price list in the
# shape SkyPilot fetches, and a TEST-ONLY dummy API key. Hyperbolic is used because SkyPilot's check
# for it only looks for the key file (AWS/GCP checks call their cloud); nothing is ever launched there.
mkdir -p "$C/hyperbolic" "$SH/.hyperbolic"
cat > "$C/hyperbolic/vms.csv" <<'CSV'
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,StorageGiB,Price,Region,GpuInfo,SpotPrice
1x-H100-28-271,H100,1,28,271,1000,1.49,default,"{""Gpus"": [{""Name"": ""H100"", ""Manufacturer"": ""NVIDIA"", ""Count"": 1, ""MemoryInfo"": {""SizeInMiB"": 81920}}], ""TotalGpuMemoryInMiB"": 81920}",
2x-H100-56-542,H100,2,56,542,2000,2.98,default,"{""Gpus"": [{""Name"": ""H100"", ""Manufacturer"": ""NVIDIA"", ""Count"": 2, ""MemoryInfo"": {""SizeInMiB"": 81920}}], ""TotalGpuMemoryInMiB"": 163840}",
1x-A100-24-221,A100,1,24,221,1000,1.29,default,"{""Gpus"": [{""Name"": ""A100"", ""Manufacturer"": ""NVIDIA"", ""Count"": 1, ""MemoryInfo"": {""SizeInMiB"": 81920}}], ""TotalGpuMemoryInMiB"": 81920}",
CSV
[ -s "$SH/.hyperbolic/api_key" ] || { echo "test-only-dummy-key" > "$SH/.hyperbolic/api_key"; chmod 600 "$SH/.hyperbolic/api_key"; }
rm -rf "$C/aws"

cat > "$K/env.sh" <<ENV
# Source this to drive the test SkyPilot by hand (sky status, sky down ...).
export HOME=$SH
export SKYPILOT_DISABLE_USAGE_COLLECTION=1
export SKYPILOT_API_SERVER_LOCAL_PORT=$PORT
export PATH=$VENV/bin:\$PATH
ENV
for tool in python sky; do
  cat > "$K/$tool" <<WRAP
#!/bin/sh
. $K/env.sh
exec $VENV/bin/$tool "\$@"
WRAP
  chmod 755 "$K/$tool"
done
# sshd reads $R/ssh/authorized_keys for every user, as that user: let the login user traverse and read
# it (slurm-up.sh makes the directory 0700 for root's own use; the private key stays 0600).
chmod 711 "$R/ssh"; chmod 644 "$R/ssh/authorized_keys"
# Check that SkyPilot sees both infras (this also records them as enabled), then stop the API server it
# started: the tests start their own and stop it when they end.
start=$(date +%s)
if ! timeout 300 "$K/sky" check slurm hyperbolic > "$K/check.log" 2>&1 || ! grep -q cakecluster "$K/check.log"; then
  cat "$K/check.log" >&2; echo "sky check failed (above)" >&2; "$K/sky" api stop >/dev/null 2>&1 || true; exit 1
fi
"$K/sky" api stop >/dev/null 2>&1 || true
log "sky check: slurm + hyperbolic enabled ($(( $(date +%s) - start )) s incl. API server start)"
log "ready: CAKE_SKY_PYTHON=$K/python; infra slurm/cakecluster/debug --via sky; node python $K/node-python/bin/python"
