#!/usr/bin/env bash
# Runs the whole podwarn pipeline on this machine: the collector (embedded
# store in ./.podwarn), an agent with its own client certificate, and the
# cluster of the current kubeconfig if one answers, else the bundled
# Kubernetes API simulator playing a realistic cluster.
# Ctrl-C stops everything; the data stays in ./.podwarn for the next run.
set -euo pipefail
cd "$(dirname "$0")"

STATE="${PODWARN_STATE_DIR:-$PWD/.podwarn}"
DATA="$STATE/collector"
LISTEN="${PODWARN_LISTEN:-127.0.0.1:8443}"
SCENARIO="${PODWARN_SIM_SCENARIO:-mixed}"
RATE="${PODWARN_SIM_RATE:-5}"
mkdir -p "$STATE"

BIN="$PWD/target/debug"
if [ -z "${PODWARN_SKIP_BUILD:-}" ]; then
  echo "==> building (the first build takes a few minutes)"
  cargo build --quiet --bins
fi

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Which cluster: the current kubeconfig's, when it answers; else the simulator.
if command -v kubectl >/dev/null 2>&1 && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  CONTEXT=$(kubectl config current-context)
  CLUSTER=$(printf '%s' "$CONTEXT" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-' | sed 's/--*/-/g; s/^-//; s/-$//' | cut -c1-63)
  KUBECONFIG_ARGS=(--context "$CONTEXT")
  echo "==> using your cluster: kubeconfig context $CONTEXT (read-only)"
else
  CLUSTER=sim
  echo "==> no cluster answers on the current kubeconfig: starting podwarn-sim (scenario $SCENARIO, $RATE warnings/s)"
  rm -f "$STATE/sim.kubeconfig"
  "$BIN/podwarn-sim" --listen 127.0.0.1:0 --write-kubeconfig "$STATE/sim.kubeconfig" \
    --scenario "$SCENARIO" --rate "$RATE" > "$STATE/sim.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$STATE/sim.kubeconfig" ] && break; sleep 0.1; done
  KUBECONFIG_ARGS=(--kubeconfig "$STATE/sim.kubeconfig")
fi

echo "==> starting the collector on https://$LISTEN (data in $DATA)"
mkdir -p "$DATA"
"$BIN/podwarn-collector" serve --data-dir "$DATA" --listen "$LISTEN" > "$STATE/collector.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -f "$DATA/serve.json" ] && break; sleep 0.1; done
if [ ! -f "$DATA/serve.json" ]; then
  echo "the collector did not start ($STATE/collector.log):" >&2
  tail -n 5 "$STATE/collector.log" >&2
  if grep -q "written with schema" "$STATE/collector.log"; then
    echo "the data in $STATE was written by another podwarn version: move it aside (mv $STATE $STATE.old) and run again" >&2
  fi
  exit 1
fi

if [ ! -f "$STATE/agent-$CLUSTER/tls.crt" ]; then
  "$BIN/podwarn-collector" cert issue --data-dir "$DATA" --cluster "$CLUSTER" --out "$STATE/agent-$CLUSTER" --ttl 30d
fi

echo "==> starting the agent for cluster $CLUSTER"
"$BIN/podwarn-agent" run "${KUBECONFIG_ARGS[@]}" --collector "https://$LISTEN" \
  --cert-dir "$STATE/agent-$CLUSTER" --spool-dir "$STATE/spool-$CLUSTER" --ops-listen 127.0.0.1:0 \
  > "$STATE/agent.log" 2>&1 &
PIDS+=($!)

CURL="curl -s --cacert $DATA/tls/ca.crt -H \"Authorization: Bearer \$(cat $DATA/admin.token)\""
cat <<MSG

podwarn is running (logs in $STATE/*.log).
  incidents:  $CURL "https://$LISTEN/v1/incidents?active=true"
  events:     $CURL "https://$LISTEN/v1/events?cluster=$CLUSTER&limit=20"
  clusters:   $CURL "https://$LISTEN/v1/clusters"
  test setup: $BIN/podwarn-agent check ${KUBECONFIG_ARGS[*]} --collector https://$LISTEN --cert-dir $STATE/agent-$CLUSTER
Press Ctrl-C to stop.
MSG
wait -n "${PIDS[@]}" || true
echo "a component stopped; see $STATE/*.log" >&2
