#!/usr/bin/env bash
# Build (once per machine, cached) everything the Kubernetes tests need:
#   * a real Kubernetes v1.20.2 (apiserver, controller-manager, scheduler, kubelet, kubectl) from Debian
#     bookworm's own `kubernetes` source package with Debian's Go, plus etcd/containerd/runc/CNI/registry
#     from Debian's binary packages;
#   * the `pause` image and a busybox image;
#   * the session image `cake-python:test` (built in parallel with the compile) (debootstrap minbase + python3, then pip install --target of
#     ipykernel, pyzmq, cloudpickle, numpy, matplotlib): what a Cake session Pod runs.
# Cache: $CAKE_K8S_HOME (default /var/cache/cake-k8s). Each part is skipped when its output exists, so a
# second run takes seconds. Needs root (apt, debootstrap). ~5 min on 2 cores the first time.
# Pitfall (found building it): the vendored reflect2 v1.0.1 corrupts memory under Go >= 1.18
# (kube-apiserver dies "fatal error: fault" in reflect2.UnsafeIterate); Debian's reflect2 1.0.2 fixes it.
set -euo pipefail
H=${CAKE_K8S_HOME:-/var/cache/cake-k8s}
HERE=$(cd "$(dirname "$0")" && pwd)
log() { echo "[k8s-build $(date +%T)] $*"; }
[ "$(id -u)" = 0 ] || { echo "k8s-build.sh needs root (apt-get, debootstrap)" >&2; exit 1; }
mkdir -p "$H"/{bin,images,src}
export DEBIAN_FRONTEND=noninteractive
apt_retry() { for i in $(seq 1 30); do "$@" && return 0; log "apt busy, retry $i"; sleep 10; done; return 1; }

need=()
for p in etcd-server containerd runc containernetworking-plugins busybox-static docker-registry skopeo \
         debootstrap openssl curl iproute2 bc; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ! -x "$H/bin/kube-apiserver" ]; then
  for p in golang-go golang-github-modern-go-reflect2-dev make gcc libc6-dev rsync; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  # keep package scripts from starting the system's own containerd/etcd/registry services
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt_retry apt-get update -qq
  apt_retry apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# ------------------------------------------------------------------ the session image (in parallel)
# debootstrap + pip mostly wait on the network: build the image while Go compiles (saves ~100 s).
"$HERE/k8s/build-session-image.sh" "$H" > "$H/session-image.log" 2>&1 &
image_pid=$!

# ------------------------------------------------------------------ Kubernetes binaries
if [ ! -x "$H/bin/kube-apiserver" ] || [ ! -x "$H/bin/kubectl" ]; then
  start=$(date +%s)
  A="$H/apt"; mkdir -p "$A"/{lists/partial,cache/archives/partial,parts}
  # a private deb-src index for the archives this machine's apt already uses (its sources are not touched)
  python3 "$HERE/k8s/apt_sources.py" src > "$A/parts/src.sources"
  APTO=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$A/parts"
        -o Dir::State::Lists="$A/lists" -o Dir::Cache="$A/cache")
  apt_retry apt-get "${APTO[@]}" update -qq
  cd "$H/src"
  [ -f kubernetes_1.20.5+really1.20.2.orig.tar.gz ] ||
    apt_retry apt-get "${APTO[@]}" source --download-only kubernetes=1.20.5+really1.20.2-1.1+deb12u1
  rm -rf kubernetes-1.20.2 && tar xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz
  cd kubernetes-1.20.2
  R=vendor/github.com/modern-go/reflect2
  find "$R" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R/"
  log "compiling Kubernetes (several minutes)"
  GOCACHE="$H/gocache" GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl" \
    KUBE_BUILD_PLATFORMS=linux/amd64 >"$H/build.log" 2>&1 || { tail -30 "$H/build.log" >&2; exit 1; }
  mkdir -p "$H/images/pause-rootfs"
  gcc -Os -static -DVERSION=v3.4.1-debian -o "$H/images/pause-rootfs/pause" build/pause/linux/pause.c
  cp _output/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kubectl} "$H/bin/"
  # the source tree and go cache are 3 GB: keep only the binaries
  cd "$H" && rm -rf "$H/src/kubernetes-1.20.2" "$H/gocache"
  log "Kubernetes built in $(( $(date +%s) - start )) s"
fi

# ------------------------------------------------------------------ pause + busybox images
if [ ! -f "$H/images/pause.tar" ]; then
  python3 "$HERE/k8s/mkimage.py" "$H/images/pause-rootfs" localhost/cake-pause:3.2 "$H/images/pause.tar" '["/pause"]'
fi
if [ ! -f "$H/images/busybox.tar" ]; then
  B="$H/images/busybox-rootfs"; rm -rf "$B"; mkdir -p "$B"/{bin,tmp,etc,root}
  cp /bin/busybox "$B/bin/"
  for c in $(/bin/busybox --list); do [ "$c" = busybox ] || ln -sf busybox "$B/bin/$c"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$B/etc/passwd"
  python3 "$HERE/k8s/mkimage.py" "$B" localhost/busybox:latest "$H/images/busybox.tar"
  rm -rf "$B"
fi

if ! wait "$image_pid"; then tail -20 "$H/session-image.log" >&2; echo "the session image build failed" >&2; exit 1; fi
grep -v '^WARNING' "$H/session-image.log" || true
log "ready: $H"
