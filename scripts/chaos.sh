#!/usr/bin/env bash
# Runs one chaos scenario of tests/chaos.rs (or all of them) against a tansu
# broker and the three services as separate processes, and prints its
# results (also written to target/chaos/<scenario>.json).
#
#   scripts/chaos.sh kill_matcher      # kill_delivery, kill_ingest,
#                                      # restart_broker, receiver_resets
#   scripts/chaos.sh all
#   WAYBILL_CHAOS_EVENTS=5000 scripts/chaos.sh kill_delivery
set -euo pipefail
cd "$(dirname "$0")/.."

scenarios=(kill_matcher kill_delivery kill_ingest restart_broker receiver_resets)
want="${1:-}"
if [[ -z "$want" ]]; then
  echo "usage: $0 <${scenarios[*]// /|}|all>" >&2
  exit 2
fi
if [[ "$want" != all ]] && [[ ! " ${scenarios[*]} " =~ " $want " ]]; then
  echo "unknown scenario '$want'; one of: ${scenarios[*]} all" >&2
  exit 2
fi

tansu="$(scripts/ensure-tansu.sh)"
filter=()
[[ "$want" != all ]] && filter=(--exact "$want")
WAYBILL_TANSU_BIN="$tansu" cargo test --locked -p waybill --test chaos -- \
  --ignored --nocapture --test-threads 1 "${filter[@]}"
