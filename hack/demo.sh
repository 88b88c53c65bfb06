#!/usr/bin/env bash
# make demo: the saga operator on a local control plane, with nothing but Go
# and kubectl.
#
# Builds the envtest binaries (hack/setup-envtest.sh), the manager, the
# reference shop services, the control plane and shopctl into bin/; starts
#   - a control plane (etcd + kube-apiserver, CRDs installed, namespace shop),
#   - the reference shop services on 127.0.0.1:18081..18084 (the URLs of
#     config/samples), with a fresh data directory and seeded stock,
#   - the manager (metrics on :8080, probes on :8081),
# applies config/samples with kubectl, waits for the three sagas to end,
# prints them and the services' ledgers, and keeps everything running until
# Ctrl-C, which stops every process it started.
#
# Environment:
#   DEMO_EXIT=1          exit after printing instead of waiting for Ctrl-C
#   DEMO_DIR             kubeconfig, logs and data (default bin/demo; emptied on start)
#   DEMO_WAIT_TIMEOUT    how long each saga may take (default 120s)
#   KUBEBUILDER_ASSETS   existing envtest binaries (skips building them)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEMO_DIR=${DEMO_DIR:-bin/demo}
DEMO_WAIT_TIMEOUT=${DEMO_WAIT_TIMEOUT:-120s}
NAMESPACE=shop
PARTICIPANT_PORTS=(18081 18082 18083 18084)
METRICS_PORT=8080
PROBE_PORT=8081
# The samples: order-1001 (SKU-1 x2, SKU-2 x1) succeeds; order-1002 wants
# 1000 SKU-RARE and there are 10; order-1003 costs 1,500,000 cents, over the
# payment service's default limit of 1,000,000 per user.
STOCK='SKU-1=100,SKU-2=50,SKU-RARE=10,SKU-LUXURY=5'
SAGAS=(order-1001=Succeeded order-1002-out-of-stock=Compensated order-1003-payment-declined=Compensated)

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\ndemo: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(($(date +%s) - START))s"; }
START=$(date +%s)

# ---------------------------------------------------------------- checks
command -v go >/dev/null || die "go is not on PATH: install the Go version of go.mod"
command -v kubectl >/dev/null || die "kubectl is not on PATH: the demo applies the samples with it (https://kubernetes.io/docs/tasks/tools/)"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${PARTICIPANT_PORTS[@]}" "$METRICS_PORT" "$PROBE_PORT"; do
  if listening "$port"; then
    die "port $port is already in use (is another make demo running? Ctrl-C it first). The demo needs ${PARTICIPANT_PORTS[*]}, $METRICS_PORT and $PROBE_PORT."
  fi
done

# ---------------------------------------------------------------- build
say "building (the first run builds kube-apiserver and etcd from Go modules and compiles the operator: expect 5 to 20 minutes on 2 cores; later runs take seconds)"
ASSETS=$(hack/setup-envtest.sh) || die "hack/setup-envtest.sh failed"
echo "envtest binaries: $ASSETS"
mkdir -p bin
for target in manager=./cmd/manager participants=./cmd/participants controlplane=./hack/controlplane shopctl=./hack/shopctl; do
  name=${target%%=*}
  echo "building bin/$name ($(elapsed))"
  go build -o "bin/$name" "${target#*=}" || die "building bin/$name failed (see the compiler's output above)"
done
echo "built in $(elapsed)"

# ---------------------------------------------------------------- processes
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
KUBECONFIG_FILE=$DEMO_DIR/kubeconfig

declare -A PIDS=()
ORDER=() # start order; stopped in reverse

# start NAME CMD...: runs CMD in the background, in its own process group,
# with its output in $DEMO_DIR/NAME.log.
start() {
  local name=$1
  shift
  set -m # a background job started in monitor mode gets its own process group
  "$@" >"$DEMO_DIR/$name.log" 2>&1 &
  PIDS[$name]=$!
  set +m
  ORDER+=("$name")
}

alive() { kill -0 "${PIDS[$1]}" 2>/dev/null; }

# stop NAME: SIGTERM to its process group, SIGKILL after a grace period.
stop() {
  local name=$1 pid=${PIDS[$1]:-} grace=${2:-15} tick
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((tick = 0; tick < grace * 10; tick++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "demo: $name did not stop within ${grace}s; killing it" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$name]"
}

CLEANED=
cleanup() {
  [ -n "$CLEANED" ] && return
  CLEANED=1
  trap '' INT TERM
  if [ ${#PIDS[@]} -gt 0 ]; then
    say "stopping the demo"
    local i
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
      # The control plane stops etcd and kube-apiserver itself: give it time.
      if [ "${ORDER[$i]}" = controlplane ]; then stop controlplane 60; else stop "${ORDER[$i]}" 15; fi
    done
    echo "stopped; logs are in $DEMO_DIR/"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# fail NAME MESSAGE: the process NAME is not working; show its log and exit.
fail() {
  echo >&2
  echo "demo: $2; the end of $DEMO_DIR/$1.log:" >&2
  tail -n 30 "$DEMO_DIR/$1.log" >&2 || true
  exit 1
}

say "starting the control plane (etcd + kube-apiserver) ($(elapsed))"
start controlplane bin/controlplane --assets "$ASSETS" --kubeconfig "$KUBECONFIG_FILE" --namespace "$NAMESPACE"
for ((i = 0; ; i++)); do
  grep -q "control plane ready" "$DEMO_DIR/controlplane.log" 2>/dev/null && break
  alive controlplane || fail controlplane "the control plane exited"
  [ $i -lt 1800 ] || fail controlplane "the control plane is not ready after 3 minutes"
  sleep 0.1
done
grep "control plane ready" "$DEMO_DIR/controlplane.log"
export KUBECONFIG=$KUBECONFIG_FILE

say "starting the reference shop services on 127.0.0.1:${PARTICIPANT_PORTS[0]}..${PARTICIPANT_PORTS[3]}, stock $STOCK"
start participants bin/participants --data-dir "$DEMO_DIR/participants" --stock "$STOCK"
health=()
for port in "${PARTICIPANT_PORTS[@]}"; do health+=("http://127.0.0.1:$port/healthz"); done
bin/shopctl wait --timeout 60s "${health[@]}" || fail participants "the shop services are not healthy"

say "starting the manager (metrics on :$METRICS_PORT, probes on :$PROBE_PORT)"
start manager bin/manager --metrics-bind-address=":$METRICS_PORT" --metrics-secure=false \
  --health-probe-bind-address=":$PROBE_PORT" --participant-probe-interval=10s --kubeconfig "$KUBECONFIG"
bin/shopctl wait --timeout 60s "http://127.0.0.1:$PROBE_PORT/readyz" || fail manager "the manager is not ready"

say "kubectl apply -k config/samples   (namespace $NAMESPACE)"
kubectl apply -k config/samples

say "waiting for the sagas to end"
FAILED=
for entry in "${SAGAS[@]}"; do
  name=${entry%%=*} phase=${entry#*=}
  if kubectl wait "osaga/$name" --for=jsonpath='{.status.phase}'="$phase" --timeout="$DEMO_WAIT_TIMEOUT" >/dev/null; then
    echo "$name: $phase, as designed"
  else
    FAILED=1
    echo "demo: $name did not reach phase $phase within $DEMO_WAIT_TIMEOUT (phase now: $(kubectl get osaga "$name" -o jsonpath='{.status.phase}')); see kubectl describe osaga $name and $DEMO_DIR/manager.log" >&2
  fi
done

say "kubectl get osagas"
kubectl get osagas
say "kubectl get participants"
kubectl get participants

say "the shop's books (bin/shopctl ledger)"
bin/shopctl ledger

# The consistency checker: inventory loses order-1001's reservation together
# with the record of its idempotency key, as after a restore from an old
# backup. The next check finds the step no longer applied; repair: Redrive
# re-sends the reservation with its original key, which repairs it.
CONSISTENCY_TIMEOUT=60s
say "consistency: the services agree with order-1001 (checked 5s after it ended)"
if kubectl wait osaga/order-1001 --for=condition=Consistent=true --timeout="$CONSISTENCY_TIMEOUT" >/dev/null; then
  kubectl get osaga order-1001
  uid=$(kubectl get osaga order-1001 -o jsonpath='{.metadata.uid}')
  say "inventory loses order-1001's reservation and its key record (bin/shopctl tamper)"
  bin/shopctl tamper --url "http://127.0.0.1:${PARTICIPANT_PORTS[2]}" --saga-uid "$uid" \
    --step reserve-inventory --op drop --forget-key
  say "the checker notices within its 15s interval"
  if kubectl wait osaga/order-1001 --for=condition=Consistent=false --timeout="$CONSISTENCY_TIMEOUT" >/dev/null; then
    kubectl get osaga order-1001
    echo
    # kubectl describe, its conditions and Events.
    kubectl describe osaga order-1001 | awk '/^  Conditions:/ || /^Events:/ {p=1} /^  History:/ {p=0} p'
    say "kubectl patch osaga order-1001 -p '{\"spec\":{\"consistency\":{\"repair\":\"Redrive\"}}}'"
    kubectl patch osaga order-1001 --type merge -p '{"spec":{"consistency":{"repair":"Redrive"}}}'
    if kubectl wait osaga/order-1001 --for=condition=Consistent=true --timeout="$CONSISTENCY_TIMEOUT" >/dev/null; then
      kubectl get osaga order-1001
      echo
      kubectl describe osaga order-1001 | sed -n '/^Events:/,$p' | grep -E 'Events:|Type|----|Consistent|StepNotApplied|Repaired|RepairFailed'
    else
      FAILED=1
      echo "demo: order-1001 was not repaired within $CONSISTENCY_TIMEOUT; see kubectl describe osaga order-1001" >&2
    fi
  else
    FAILED=1
    echo "demo: the checker did not report the tampered step within $CONSISTENCY_TIMEOUT; see $DEMO_DIR/manager.log" >&2
  fi
else
  FAILED=1
  echo "demo: order-1001 was not checked Consistent within $CONSISTENCY_TIMEOUT; see $DEMO_DIR/manager.log" >&2
fi

cat <<EOF

==> the demo is running ($(elapsed) since make demo started)

order-1001 succeeded: an order, a charge, a reservation and a confirmation;
then inventory lost its reservation, the consistency checker reported it
(Consistent=False, a Warning Event) and repair: Redrive put it back with the
original idempotency key.
order-1002-out-of-stock was created and paid, then inventory refused it: the
charge was refunded and the order cancelled. order-1003-payment-declined was
declined by payment: its order was cancelled, inventory never called.

Use it from another terminal:

  export KUBECONFIG=$KUBECONFIG      # namespace $NAMESPACE is the default
  kubectl get osagas -w
  kubectl describe osaga order-1002-out-of-stock
  sed 's/1001/1004/g' config/samples/saga_v1alpha1_ordersaga.yaml | kubectl apply -f -
  bin/shopctl ledger
  curl -s localhost:$METRICS_PORT/metrics | grep '^saga_'

Logs: $DEMO_DIR/controlplane.log, participants.log, manager.log
EOF

if [ -n "${DEMO_EXIT:-}" ] && [ "${DEMO_EXIT}" != 0 ]; then
  [ -z "$FAILED" ] || exit 1
  exit 0
fi

echo "Press Ctrl-C to stop everything."
while :; do
  for name in "${ORDER[@]}"; do
    alive "$name" || fail "$name" "$name exited"
  done
  sleep 1
done
