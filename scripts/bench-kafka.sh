#!/usr/bin/env bash
# Runs `waybill bench` against a deployment of three separate processes
# (`waybill ingest`, `waybill matcher`, `waybill delivery`, release build) on
# an Apache Kafka broker (one KRaft node, started by the testkit's `kafka`
# example as the tests start it), all on this machine. The broker runs for
# the whole measurement, as a production broker does (its JIT warmed by a
# W1 run that is not counted); every run of every workload gets fresh
# services and fresh topics and groups (a topic prefix of its own), so runs
# do not inherit each other's logs or offsets.
#
#   scripts/bench-kafka.sh [--runs 3] [--workloads W1,W2,W3,W4] [--scale 1] [--out bench-kafka.json]
#   FETCH_WAIT_MS=10 scripts/bench-kafka.sh --workloads W3   # the services'
#                                       # fetch.wait.max.ms (default 100)
#
# Prints the summary table (median, min–max) and writes every run and the
# summary to the --out file. Logs of the processes stay in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3 workloads=W1,W2,W3,W4 scale=1 out=bench-kafka.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --workloads) workloads="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

export WAYBILL_KAFKA_LIBS="$(scripts/ensure-kafka.sh)"
cargo build --locked --release -q -p waybill
cargo build --locked --release -q -p waybill-testkit --example kafka
bin="${CARGO_TARGET_DIR:-target}/release/waybill"
kafka="${CARGO_TARGET_DIR:-target}/release/examples/kafka"
dir="$(mktemp -d -t waybill-bench-kafka.XXXXXX)"
pids=()
stop_deployment() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
stop_all() {
  stop_deployment
  # The launcher stops the Kafka node on SIGTERM.
  if [[ -n "${kafka_pid:-}" ]]; then
    kill "$kafka_pid" 2>/dev/null || true
    wait "$kafka_pid" 2>/dev/null || true
    kafka_pid=
  fi
}
trap stop_all EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() { # url
  python3 - "$1" <<'PY'
import sys, time, urllib.request
deadline = time.time() + 60
while True:
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200:
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit(f"{sys.argv[1]} not ready within 60 s")
    time.sleep(0.2)
PY
}

# Starts the Kafka node, logging into $1; sets $brokers.
start_kafka() {
  local logs="$1"
  mkdir -p "$logs"
  "$kafka" "$logs" 1 >"$logs/kafka.out" 2>&1 &
  kafka_pid=$!
  brokers=
  for _ in $(seq 1 1200); do
    brokers="$(sed -n 's/^bootstrap: //p' "$logs/kafka.out")"
    [[ -n "$brokers" ]] && break
    kill -0 "$kafka_pid" 2>/dev/null || { cat "$logs/kafka.out" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$brokers" ]] || { echo "Kafka did not start (see $logs)" >&2; exit 1; }
}

# Starts the three services with topics prefixed $2, logging into $1; sets
# $api and $key.
start_deployment() {
  local logs="$1" prefix="$2" matcher delivery ingest_admin
  mkdir -p "$logs"
  api=$(free_port) matcher=$(free_port) delivery=$(free_port) ingest_admin=$(free_port)
  key="wb_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  cat >"$logs/waybill.toml" <<TOML
[kafka]
brokers = "$brokers"
topic_prefix = "$prefix"
partitions = 3
subscriptions_partitions = 1
create_topics = false
replication_factor = 1

[kafka.properties]
# The longest a fetch waits for records (Apache Kafka answers as soon as
# records arrive; the test brokers waited this long every time).
"fetch.wait.max.ms" = "${FETCH_WAIT_MS:-100}"

[secrets]
current_key_id = "k1"
keys = { k1 = "$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')" }

[url_policy]
allow_http = true
allow_private_networks = true
allow_any_port = true

[ingest]
listen = "127.0.0.1:$api"
admin_listen = "127.0.0.1:$ingest_admin"
api_keys = [{ id = "key_bench", key = "$key", tenant_id = "ten_bench" }]

[ingest.quotas]
# The load tool is one tenant posting as fast as it can (as waybill dev's
# bench configuration does): no request quota.
requests_per_second = 0

[matcher]
listen = "127.0.0.1:$matcher"

[delivery]
listen = "127.0.0.1:$delivery"
TOML
  RUST_LOG=warn "$bin" create-topics --config "$logs/waybill.toml" >"$logs/create-topics.log" 2>&1
  local service
  for service in ingest matcher delivery; do
    RUST_LOG=warn "$bin" "$service" --config "$logs/waybill.toml" >"$logs/$service.log" 2>&1 &
    pids+=($!)
  done
  local port
  for port in "$ingest_admin" "$matcher" "$delivery"; do wait_ready "http://127.0.0.1:$port/readyz"; done
}

echo "Kafka and the services log to $dir" >&2
start_kafka "$dir/kafka"
echo "warm-up (not counted): W1 at scale 0.5" >&2
start_deployment "$dir/warmup" "warmup."
RUST_LOG=error "$bin" bench --api "http://127.0.0.1:$api" --key "$key" \
  --workloads W1 --scale 0.5 --out "$dir/warmup.json" >/dev/null
stop_deployment
for run in $(seq 1 "$runs"); do
  for workload in ${workloads//,/ }; do
    echo "run $run, $workload: fresh services and topics" >&2
    start_deployment "$dir/run$run-$workload" "run$run$workload."
    RUST_LOG=error "$bin" bench --api "http://127.0.0.1:$api" --key "$key" \
      --workloads "$workload" --scale "$scale" --out "$dir/run$run-$workload.json" >/dev/null
    stop_deployment
  done
done

RUST_LOG=error "$bin" bench --merge "$dir"/run*.json --out "$out"
