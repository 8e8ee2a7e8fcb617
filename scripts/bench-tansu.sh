#!/usr/bin/env bash
# Runs `waybill bench` against a deployment of three separate processes
# (`waybill ingest`, `waybill matcher`, `waybill delivery`, release build) on a
# tansu broker (memory storage), all on this machine. Every run of every
# workload gets a fresh deployment: tansu slows down as its log grows.
#
#   scripts/bench-tansu.sh [--runs 3] [--workloads W1,W2,W3,W4] [--scale 1] [--out bench-tansu.json]
#   FETCH_WAIT_MS=10 scripts/bench-tansu.sh --workloads W3   # the services'
#                                       # fetch.wait.max.ms (default 100)
#
# Prints the summary table (median, min–max) and writes every run and the
# summary to the --out file. Logs of the processes stay in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3 workloads=W1,W2,W3,W4 scale=1 out=bench-tansu.json
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --workloads) workloads="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

tansu="$(scripts/ensure-tansu.sh)"
cargo build --locked --release -q -p waybill
bin="${CARGO_TARGET_DIR:-target}/release/waybill"
dir="$(mktemp -d -t waybill-bench-tansu.XXXXXX)"
pids=()
stop_deployment() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_deployment EXIT

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

wait_listening() { # port
  python3 - "$1" <<'PY'
import socket, sys, time
deadline = time.time() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("tansu did not start")
        time.sleep(0.1)
PY
}

# Starts tansu and the three services, logging into $1; sets $api and $key.
start_deployment() {
  local logs="$1" broker matcher delivery
  mkdir -p "$logs"
  broker=$(free_port) api=$(free_port) matcher=$(free_port) delivery=$(free_port)
  key="wb_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  cat >"$logs/waybill.toml" <<TOML
[kafka]
brokers = "127.0.0.1:$broker"
partitions = 3
subscriptions_partitions = 1
create_topics = false
replication_factor = 1

[kafka.properties]
# tansu answers a fetch when this wait runs out, not when records arrive
# (Apache Kafka answers at once): each Kafka hop costs up to this wait.
"fetch.wait.max.ms" = "${FETCH_WAIT_MS:-100}"

[secrets]
current_key_id = "k1"
keys = { k1 = "$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')" }

[url_policy]
allow_http = true
allow_private_networks = true

[ingest]
listen = "127.0.0.1:$api"
api_keys = [{ id = "key_bench", key = "$key", tenant_id = "ten_bench" }]

[matcher]
listen = "127.0.0.1:$matcher"

[delivery]
listen = "127.0.0.1:$delivery"
TOML
  "$tansu" broker --listener-url "tcp://127.0.0.1:$broker" \
    --advertised-listener-url "tcp://127.0.0.1:$broker" \
    --storage-engine memory://tansu/ >"$logs/broker.log" 2>&1 &
  pids+=($!)
  wait_listening "$broker"
  RUST_LOG=warn "$bin" create-topics --config "$logs/waybill.toml" >"$logs/create-topics.log" 2>&1
  local service
  for service in ingest matcher delivery; do
    RUST_LOG=warn "$bin" "$service" --config "$logs/waybill.toml" >"$logs/$service.log" 2>&1 &
    pids+=($!)
  done
  local port
  for port in "$api" "$matcher" "$delivery"; do wait_ready "http://127.0.0.1:$port/readyz"; done
}

echo "tansu and the services log to $dir" >&2
for run in $(seq 1 "$runs"); do
  for workload in ${workloads//,/ }; do
    echo "run $run, $workload: fresh deployment" >&2
    start_deployment "$dir/run$run-$workload"
    RUST_LOG=error "$bin" bench --api "http://127.0.0.1:$api" --key "$key" \
      --workloads "$workload" --scale "$scale" --out "$dir/run$run-$workload.json" >/dev/null
    stop_deployment
  done
done

RUST_LOG=error "$bin" bench --merge "$dir"/run*.json --out "$out"
