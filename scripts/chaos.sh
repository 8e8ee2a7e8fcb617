#!/usr/bin/env bash
# Runs one chaos scenario of tests/chaos.rs (or all of them) on Apache Kafka
# (one KRaft node, or three for the broker-fault scenarios) and the three
# services as separate processes, and prints its results (also written to
# target/chaos/<scenario>.json).
#
#   scripts/chaos.sh kill_matcher      # kill_delivery, kill_ingest,
#                                      # restart_broker, kill_partition_leader,
#                                      # rolling_restart, receiver_resets
#   scripts/chaos.sh all
#   WAYBILL_CHAOS_EVENTS=5000 scripts/chaos.sh kill_delivery
#   WAYBILL_CHAOS_RUNS=30 WAYBILL_CHAOS_EVENTS=1500 scripts/chaos.sh kill_delivery
#                                      # the same scenario 30 times; prints
#                                      # the losses of each run
set -euo pipefail
cd "$(dirname "$0")/.."

scenarios=(kill_matcher kill_delivery kill_ingest restart_broker kill_partition_leader rolling_restart receiver_resets)
want="${1:-}"
if [[ -z "$want" ]]; then
  echo "usage: $0 <${scenarios[*]// /|}|all>" >&2
  exit 2
fi
if [[ "$want" != all ]] && [[ ! " ${scenarios[*]} " =~ " $want " ]]; then
  echo "unknown scenario '$want'; one of: ${scenarios[*]} all" >&2
  exit 2
fi

libs="$(scripts/ensure-kafka.sh)"
filter=()
[[ "$want" != all ]] && filter=(--exact "$want")
runs="${WAYBILL_CHAOS_RUNS:-1}"
if [[ "$runs" == 1 ]]; then
  WAYBILL_KAFKA_LIBS="$libs" cargo test --locked -p waybill --test chaos -- \
    --ignored --nocapture --test-threads 1 "${filter[@]}"
  exit 0
fi
# Repeated runs: one JSON result per run, a summary line at the end.
out="$PWD/target/chaos/runs-$want"
mkdir -p "$out"
cargo test --locked -p waybill --test chaos --no-run -q 2>/dev/null
failed=0
for i in $(seq 1 "$runs"); do
  if WAYBILL_KAFKA_LIBS="$libs" WAYBILL_CHAOS_OUT="$out/$i" cargo test --locked -q -p waybill --test chaos -- \
    --ignored --nocapture --test-threads 1 "${filter[@]}" >"$out/$i.log" 2>&1; then
    echo "run $i: passed $(grep -hoE '"(lost|duplicates|takeover_rewinds|commit_failures)": [0-9]+' "$out/$i"/*.json | tr '\n' ' ')"
  else
    failed=$((failed + 1))
    echo "run $i: FAILED $(grep -hoE '"(lost|duplicates|takeover_rewinds|commit_failures)": [0-9]+' "$out/$i"/*.json 2>/dev/null | tr '\n' ' ') (log: $out/$i.log)"
  fi
done
echo "$runs runs of $want, $failed failed; logs and results in $out"
[[ "$failed" == 0 ]]
