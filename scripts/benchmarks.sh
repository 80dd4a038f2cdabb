#!/usr/bin/env bash
# Regenerates every number in docs/BENCHMARKS.md on this machine: the
# collector (durable ingest against redb's raw rate, storage per event,
# queries over PODWARN_BENCH_EVENTS stored events, default 10 million), the
# agent (CPU and memory per event rate, event-to-queryable latency) and the
# 200-agent load test. Each benchmark rewrites its own section.
#
# Release builds take several minutes on 2 cores; the whole run takes about
# an hour. Run it on an otherwise idle machine: the numbers are medians, but
# a busy machine still lowers them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bins
cargo build --profile agent --locked -p podwarn-agent --bin podwarn-agent
cargo bench --locked -p podwarn-collector --bench collector
cargo bench --locked -p podwarn-testkit --bench agent
cargo bench --locked -p podwarn-testkit --bench load
echo "docs/BENCHMARKS.md updated"
