#!/usr/bin/env bash
# Fuzzes the HTTP API as an attacker would: schemathesis (pinned in
# scripts/fuzz-requirements.txt) against GET /v1/openapi.json of a fresh
# `waybill dev`, every operation, in every phase (examples, coverage,
# fuzzing, stateful links), with every check but positive_data_acceptance
# (scripts/schemathesis.toml says why): no 5xx, answers that match the
# document. Tenant operations run with the dev tenant's key, operator ones
# with the operator token. Every dialect is enabled, so the seed platforms'
# APIs are fuzzed against their own parts of the document too.
#
#   scripts/fuzz-api.sh <waybill binary> [seconds per pass, default 60]
#
# Writes JUnit reports and the dev log to $FUZZ_OUT (default target/fuzz-api);
# exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
binary="$1"
seconds="${2:-60}"
out="${FUZZ_OUT:-${CARGO_TARGET_DIR:-$here/../target}/fuzz-api}"
mkdir -p "$out"
schemathesis="$(dirname "$("$here/ensure-deploy-tools.sh" fuzz)")/schemathesis"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
key="wb_fuzz_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
operator="wbop_fuzz_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
WAYBILL_INGEST__OPERATOR_TOKEN="$operator" \
  WAYBILL_INGEST__DIALECTS='["route_planner", "logistics_2023_07", "spotgo", "spotnana"]' RUST_LOG="${RUST_LOG:-warn}" \
  "$binary" dev --port "$port" --api-key "$key" >"$out/dev.log" 2>&1 &
dev=$!
trap 'kill "$dev" 2>/dev/null; wait "$dev" 2>/dev/null || true' EXIT
api="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -fsS "$api/v1/openapi.json" >/dev/null 2>&1 && break
  kill -0 "$dev" 2>/dev/null || { cat "$out/dev.log" >&2; exit 1; }
  sleep 0.5
done

status=0
# One worker: with two threads, hypothesis's lambda descriptions call
# ast.parse concurrently, which CPython 3.11 can fail with "SystemError: AST
# constructor recursion depth mismatch" (cpython gh-106905), a tool crash
# that counts as an error of the run.
pass() {
  local name="$1" token="$2"; shift 2
  echo "== schemathesis: $name ($seconds s)"
  "$schemathesis" --config-file "$here/schemathesis.toml" run "$api/v1/openapi.json" \
    -H "Authorization: Bearer $token" --checks all --exclude-checks positive_data_acceptance \
    --max-time "$seconds" \
    --workers 1 --request-timeout 20 --seed 1 \
    --report junit --report-dir "$out/$name" "$@" || status=1
}
pass tenant "$key" --exclude-path-regex '^/v1/tenants'
pass operator "$operator" --include-path-regex '^/v1/(tenants|event_types)'
# No crash: the system still answers after the run.
curl -fsS "$api/v1/event_types" -H "Authorization: Bearer $key" >/dev/null \
  || { echo "waybill dev stopped answering during the fuzz run" >&2; status=1; }
if grep -E ' (ERROR|panicked)' "$out/dev.log" | grep -v librdkafka >&2; then
  echo "errors in the dev log ($out/dev.log)" >&2
  status=1
fi
exit "$status"
