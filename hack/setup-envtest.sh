#!/usr/bin/env bash
# Builds the envtest control-plane binaries (kube-apiserver and etcd) from Go
# modules, so tests run without downloading prebuilt archives. The binaries are
# cached under bin/k8s/<version>/; a second run is a no-op. The last line
# printed is the directory to use as KUBEBUILDER_ASSETS.
#
# A user who already has binaries sets KUBEBUILDER_ASSETS and skips this.
#
# Environment:
#   KUBERNETES_VERSION  k8s.io/kubernetes version for kube-apiserver (default v1.37.2)
#   ETCD_VERSION        go.etcd.io/etcd/server/v3 version (default v3.6.16)
#   LOCALBIN            where to cache (default <repo>/bin)
set -euo pipefail

KUBERNETES_VERSION=${KUBERNETES_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCALBIN=${LOCALBIN:-$ROOT/bin}
DEST="$LOCALBIN/k8s/${KUBERNETES_VERSION#v}-$(go env GOOS)-$(go env GOARCH)"

log() { printf 'setup-envtest: %s\n' "$*" >&2; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build_etcd() {
  [ -x "$DEST/etcd" ] && return 0
  log "building etcd $ETCD_VERSION (under a minute)"
  mkdir -p "$work/etcd"
  (
    cd "$work/etcd"
    go mod init envtest-etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$DEST/etcd.tmp" go.etcd.io/etcd/server/v3
  )
  mv "$DEST/etcd.tmp" "$DEST/etcd"
}

build_apiserver() {
  [ -x "$DEST/kube-apiserver" ] && return 0
  log "building kube-apiserver $KUBERNETES_VERSION (about 5 minutes on 2 cores the first time)"
  local staging="v0${KUBERNETES_VERSION#v1}"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  mkdir -p "$work/apiserver"
  (
    cd "$work/apiserver"
    go mod init envtest-apiserver >/dev/null 2>&1
    # k8s.io/kubernetes replaces its staging modules with local paths; point
    # each at the published module of the same release instead.
    {
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >>go.mod
    printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >tools.go
    go mod tidy >/dev/null 2>&1 || true
    CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$DEST/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  )
  mv "$DEST/kube-apiserver.tmp" "$DEST/kube-apiserver"
}

start=$(date +%s)
build_etcd
build_apiserver
log "ready in $(( $(date +%s) - start ))s: $DEST"
echo "$DEST"
