#!/usr/bin/env bash
# Validates the kustomize configs against a real API server: builds
# config/default, config/prometheus and config/samples and sends every object
# with `kubectl apply --server-side --dry-run=server`, so the API server's own
# schema, CEL rules and admission decide. Nothing is changed on the server
# except, with CREATE_NAMESPACES=true, the namespaces the dry run needs.
#
# Objects whose apiVersion the server does not serve (for example
# monitoring.coreos.com/v1 ServiceMonitor and PrometheusRule where the
# prometheus-operator is not installed, as on envtest) are skipped with a
# message naming them.
#
# The CRDs must already be installed (`make install`, or envtest): the samples
# and the other objects are checked against them.
#
# Environment:
#   KUBECONFIG         the API server to validate against (kubectl's default otherwise)
#   KUBECTL            kubectl binary (default: kubectl)
#   KUSTOMIZE          kustomize binary (default: bin/kustomize, else `kubectl kustomize`)
#   CREATE_NAMESPACES  true: create the namespaces the dry run needs (default: false)
#   SAMPLES_NAMESPACE  namespace the samples are checked in (default: saga-validate-samples)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBECTL=${KUBECTL:-kubectl}
KUSTOMIZE=${KUSTOMIZE:-$ROOT/bin/kustomize}
CREATE_NAMESPACES=${CREATE_NAMESPACES:-false}
SAMPLES_NAMESPACE=${SAMPLES_NAMESPACE:-saga-validate-samples}
NAMESPACE=saga-operator-system   # config/default's namespace
PREFIX=saga-operator-            # config/default's namePrefix

log() { printf 'validate-manifests: %s\n' "$*" >&2; }

build() {
  if [ -x "$KUSTOMIZE" ]; then
    "$KUSTOMIZE" build "$1"
  else
    "$KUBECTL" kustomize "$1"
  fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$KUBECTL" api-versions >"$work/served"

# served_only reads a multi-document YAML stream and writes the documents whose
# apiVersion the server serves; it names the others on stderr.
served_only() {
  awk -v served="$work/served" '
    function flush() {
      if (doc != "") {
        if (av in ok) { printf "---\n%s", doc }
        else { printf "validate-manifests: skipping %s %s: %s is not served by this API server\n", kind, name, av > "/dev/stderr" }
      }
      doc = ""; av = ""; kind = ""; name = ""; inmeta = 0
    }
    BEGIN { while ((getline l < served) > 0) ok[l] = 1 }
    /^---/ { flush(); next }
    { doc = doc $0 "\n" }
    /^apiVersion:/ { av = $2 }
    /^kind:/ { kind = $2 }
    /^metadata:/ { inmeta = 1; next }
    /^[^ ]/ { inmeta = 0 }
    inmeta && /^  name:/ && name == "" { name = $2 }
    END { flush() }
  '
}

ensure_namespace() {
  if "$KUBECTL" get namespace "$1" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$CREATE_NAMESPACES" = true ]; then
    log "creating namespace $1 for the dry run"
    "$KUBECTL" create namespace "$1" >/dev/null
  else
    log "namespace $1 does not exist: a server-side dry run of the objects in it would fail; set CREATE_NAMESPACES=true"
    return 1
  fi
}

dry_run() { # name, file, [kubectl args...]
  local what=$1 file=$2
  shift 2
  log "server-side dry run of $what"
  "$KUBECTL" apply --server-side --dry-run=server --field-manager=validate-manifests "$@" -f "$file"
}

ensure_namespace "$NAMESPACE"
ensure_namespace "$SAMPLES_NAMESPACE"

build "$ROOT/config/default" | served_only >"$work/default.yaml"
dry_run config/default "$work/default.yaml"

# config/prometheus is not enabled in config/default; check it under the same
# namespace and prefix.
# (kustomize takes no absolute path as a resource: copy it under the overlay.)
mkdir -p "$work/prometheus"
cp -R "$ROOT/config/prometheus" "$work/prometheus/base"
cat >"$work/prometheus/kustomization.yaml" <<YAML
namespace: $NAMESPACE
namePrefix: $PREFIX
resources:
- base
YAML
build "$work/prometheus" | served_only >"$work/prometheus.yaml"
dry_run config/prometheus "$work/prometheus.yaml"

build "$ROOT/config/samples" | served_only >"$work/samples.yaml"
dry_run config/samples "$work/samples.yaml" --namespace "$SAMPLES_NAMESPACE"

log "all served objects accepted"
