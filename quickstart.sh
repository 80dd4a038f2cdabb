#!/usr/bin/env bash
# Builds podwarn and runs it on this machine with the embedded store in ./.podwarn.
# Ctrl-C stops everything; data stays in ./.podwarn for the next run.
set -euo pipefail
cd "$(dirname "$0")"

DATA="${PODWARN_DATA_DIR:-$PWD/.podwarn/collector}"
LISTEN="${PODWARN_LISTEN:-127.0.0.1:8443}"
CLUSTER="${PODWARN_CLUSTER:-local}"

echo "==> building (first build takes a few minutes)"
cargo build --quiet --bins
BIN="$PWD/target/debug"

mkdir -p "$DATA"
if [ ! -f "$PWD/.podwarn/agent-$CLUSTER/tls.crt" ]; then
  "$BIN/podwarn-collector" cert issue --data-dir "$DATA" --cluster "$CLUSTER" --out "$PWD/.podwarn/agent-$CLUSTER"
fi

echo "==> starting the collector on https://$LISTEN (data in $DATA)"
"$BIN/podwarn-collector" serve --data-dir "$DATA" --listen "$LISTEN" &
COLLECTOR=$!
trap 'kill $COLLECTOR 2>/dev/null; wait $COLLECTOR 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 50); do
  [ -f "$DATA/serve.json" ] && break
  sleep 0.2
done

cat <<MSG

podwarn is running.
  query events:     curl -s --cacert $DATA/tls/ca.crt -H "Authorization: Bearer \$(cat $DATA/admin.token)" https://$LISTEN/v1/events
  query incidents:  curl -s --cacert $DATA/tls/ca.crt -H "Authorization: Bearer \$(cat $DATA/admin.token)" https://$LISTEN/v1/incidents
  clusters:         curl -s --cacert $DATA/tls/ca.crt -H "Authorization: Bearer \$(cat $DATA/admin.token)" https://$LISTEN/v1/clusters
  agent certificate for cluster "$CLUSTER": .podwarn/agent-$CLUSTER/
Press Ctrl-C to stop.
MSG
wait $COLLECTOR
