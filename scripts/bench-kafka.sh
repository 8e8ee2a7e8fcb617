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
#                          [--partitions 3] [--delivery-replicas 1] [--max-in-flight-total N]
#   scripts/bench-kafka.sh --workloads S1 --partitions 12 --delivery-replicas 2 --max-in-flight-total 64
#                                       # scale-out: two `waybill delivery` processes share
#                                       # the 12 partitions, each with 64 requests in flight
#   scripts/bench-kafka.sh --workloads S1 --scale 3 --partitions 12 --max-in-flight-total 64 --churn
#                                       # a delivery process joins 5 s into each run and the
#                                       # first one leaves (SIGTERM) at 15 s: lost, and the
#                                       # longest pause between arrivals, are in the table
#
# The CPU seconds each process used during each measured run (services,
# the Kafka JVM, the load tool) go to the --out file's name with -cpu.txt.
#   FETCH_WAIT_MS=10 scripts/bench-kafka.sh --workloads W3   # the services'
#                                       # fetch.wait.max.ms (default 100)
#   LINGER_MS=0 scripts/bench-kafka.sh --workloads L1  # the producers' linger.ms (default 2)
#   MALLOC_ARENA_MAX=8 scripts/bench-kafka.sh ...      # the services' malloc arenas (default 2,
#                                       # as the image sets it)
#   scripts/bench-kafka.sh --population 1000000 --workloads W3,R1
#                                       # the million-subscription mode: one deployment
#                                       # gets 1,000,000 background subscriptions through
#                                       # its API (1,000 tenants), then each run restarts
#                                       # its three services on those topics (start-up
#                                       # until /readyz, resident memory of each) and runs
#                                       # the workloads; figures in the -cpu.txt file
#
# Prints the summary table (median, min–max) and writes every run and the
# summary to the --out file. Logs of the processes stay in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3 workloads=W1,W2,W3,W4 scale=1 out=bench-kafka.json partitions=3 replicas=1 total= churn=
population= reuse=
# glibc's malloc arenas, as the image sets them (deploy/Dockerfile).
arenas="${MALLOC_ARENA_MAX:-2}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --workloads) workloads="$2"; shift 2 ;;
    --scale) scale="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --delivery-replicas) replicas="$2"; shift 2 ;;
    --max-in-flight-total) total="$2"; shift 2 ;;
    --churn) churn=1; shift ;;
    --population) population="$2"; shift 2 ;;
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

# CPU seconds (user + system) a process and its children (the Kafka
# launcher's JVM) used so far.
cpu_seconds() { # pid
  python3 - "$1" <<'PY'
import os, sys
def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
def children(pid):
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
try:
    pid = int(sys.argv[1])
    ticks = cpu(pid) + sum(cpu(c) for c in children(pid))
    print(round(ticks / os.sysconf("SC_CLK_TCK"), 2))
except OSError:
    print("gone")
PY
}

# Seconds from $1 (an epoch time) until each of the admin ports $3...
# answers /readyz, polled together; $2 names them. Prints "name s" pairs.
ready_after() { # started names ports...
  python3 - "$@" <<'PY'
import sys, time, urllib.request
started, names, ports = float(sys.argv[1]), sys.argv[2].split(","), sys.argv[3:]
ready, deadline = {}, time.time() + 600
while len(ready) < len(ports):
    for name, port in zip(names, ports):
        if name in ready:
            continue
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                ready[name] = time.time() - started
        except Exception:
            pass
    if time.time() > deadline:
        sys.exit(f"not ready within 600 s: {sorted(set(names) - set(ready))}")
    time.sleep(0.1)
print(" ".join(f"{n} {ready[n]:.1f} s" for n in names))
PY
}

# Resident memory (MiB) of each service process: "name MiB" pairs.
resident() {
  local i out=""
  for i in "${!pids[@]}"; do
    out+=" ${names[$i]} $(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/${pids[$i]}/status" 2>/dev/null || echo gone) MiB"
  done
  echo "${out# }"
}

# Starts one more `waybill delivery` of the deployment in $1 (same group).
start_delivery_replica() { # logs n
  local port
  port=$(free_port)
  MALLOC_ARENA_MAX="$arenas" WAYBILL_DELIVERY__LISTEN="127.0.0.1:$port" RUST_LOG=warn "$bin" delivery \
    --config "$1/waybill.toml" >"$1/delivery$2.log" 2>&1 &
  pids+=($!)
  names+=("delivery$2")
}

# Starts the three services with topics prefixed $2, logging into $1; sets
# $api and $key.
start_deployment() {
  local logs="$1" prefix="$2" matcher delivery ingest_admin
  mkdir -p "$logs"
  if [[ -n "$reuse" ]]; then
    # The same deployment again (its topics, keys and ports).
    cp "$reuse/waybill.toml" "$reuse/ports.env" "$logs/"
    # shellcheck disable=SC1091
    source "$logs/ports.env"
  else
    api=$(free_port) matcher=$(free_port) delivery=$(free_port) ingest_admin=$(free_port)
    key="wb_bench_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    operator="wbop_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    printf 'api=%s matcher=%s delivery=%s ingest_admin=%s key=%s operator=%s\n' \
      "$api" "$matcher" "$delivery" "$ingest_admin" "$key" "$operator" >"$logs/ports.env"
    cat >"$logs/waybill.toml" <<TOML
[kafka]
brokers = "$brokers"
topic_prefix = "$prefix"
partitions = $partitions
subscriptions_partitions = 1
create_topics = false
replication_factor = 1

[kafka.properties]
# The longest a fetch waits for records (Apache Kafka answers as soon as
# records arrive; the test brokers waited this long every time).
"fetch.wait.max.ms" = "${FETCH_WAIT_MS:-100}"
${LINGER_MS:+\"linger.ms\" = \"$LINGER_MS\"}

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
operator_token = "$operator"

[ingest.quotas]
# The load tool is one tenant posting as fast as it can (as waybill dev's
# bench configuration does): no request quota.
requests_per_second = 0

[matcher]
listen = "127.0.0.1:$matcher"

[delivery]
listen = "127.0.0.1:$delivery"
${total:+max_in_flight_total = $total}
TOML
    RUST_LOG=warn "$bin" create-topics --config "$logs/waybill.toml" >"$logs/create-topics.log" 2>&1
  fi
  local service started
  names=()
  started=$(date +%s.%N)
  for service in ingest matcher delivery; do
    MALLOC_ARENA_MAX="$arenas" RUST_LOG=warn "$bin" "$service" --config "$logs/waybill.toml" >"$logs/$service.log" 2>&1 &
    pids+=($!)
    names+=("$service")
  done
  startup="$(ready_after "$started" ingest,matcher,delivery "$ingest_admin" "$matcher" "$delivery")"
  # More delivery processes in the same consumer group (each with an admin
  # port of its own); the group settles before anything is measured.
  local n
  for n in $(seq 2 "$replicas"); do start_delivery_replica "$logs" "$n"; done
  if [[ "$replicas" -gt 1 ]]; then sleep 10; fi
}

# Runs the load tool against the deployment ($1: logs, $2: workload) and
# records each process's CPU seconds during the run.
measure() {
  local logs="$1" workload="$2" before=() i started
  for i in "${!pids[@]}"; do before+=("$(cpu_seconds "${pids[$i]}")"); done
  local kafka_before
  kafka_before=$(cpu_seconds "$kafka_pid")
  started=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  { time RUST_LOG=error "$bin" bench --api "http://127.0.0.1:$api" --key "$key" \
      --workloads "$workload" --scale "$scale" --delivery-replicas "$replicas" \
      --out "$logs.json" >/dev/null 2>"$logs/bench.log" & bench=$!
    if [[ -n "$churn" ]]; then
      sleep 5
      echo "  a delivery process joins" >&3
      start_delivery_replica "$logs" churn
      before+=(0)
      sleep 10
      echo "  the first delivery process leaves (SIGTERM)" >&3
      kill -TERM "${pids[2]}"
    fi
    wait "$bench"; } 2>"$logs/bench.time"
  local line="$workload run: wall $(python3 -c "import time; print(round(time.time() - $started, 1))") s; cpu s:"
  for i in "${!pids[@]}"; do
    local now
    now=$(cpu_seconds "${pids[$i]}")
    if [[ "$now" == gone ]]; then now="${before[$i]} (exited)"; else now=$(python3 -c "print(round($now - ${before[$i]}, 2))"); fi
    line+=" ${names[$i]} $now"
  done
  line+=" kafka $(python3 -c "print(round($(cpu_seconds "$kafka_pid") - $kafka_before, 2))")"
  line+=" bench $(tail -1 "$logs/bench.time" | awk '{print $1 + $2}')"
  echo "$line" >&2
  echo "$line" >>"$cpu_out"
}

exec 3>&2
cpu_out="${out%.json}-cpu.txt"
: >"$cpu_out"
echo "Kafka and the services log to $dir" >&2
start_kafka "$dir/kafka"
echo "warm-up (not counted): W1 at scale 0.5" >&2
start_deployment "$dir/warmup" "warmup."
RUST_LOG=error "$bin" bench --api "http://127.0.0.1:$api" --key "$key" \
  --workloads W1 --scale 0.5 --out "$dir/warmup.json" >/dev/null
stop_deployment
if [[ -n "$population" ]]; then
  echo "population: $population subscriptions through the API of one deployment" >&2
  start_deployment "$dir/population" "pop."
  echo "population: empty deployment ready after: $startup; resident: $(resident)" | tee -a "$cpu_out" >&2
  RUST_LOG=info "$bin" bench --api "http://127.0.0.1:$api" --operator-token "$operator" \
    --populate "$population" --tenants 1000 --out "$dir/population.json" 2>"$dir/population/bench.log"
  python3 - "$dir/population.json" <<'PY' | tee -a "$cpu_out" >&2
import json, sys
r = json.load(open(sys.argv[1]))
print(f"population: {r['subscriptions']} subscriptions over {r['tenants']} tenants in {r['seconds']:.0f} s, "
      f"{r['created_per_s']:.0f} creates/s, create p50 {r['create_latency']['p50_ms']:.1f} ms, "
      f"p99 {r['create_latency']['p99_ms']:.1f} ms")
PY
  echo "population: resident after creating: $(resident)" | tee -a "$cpu_out" >&2
  cp "$dir/population.json" "${out%.json}-population.json"
  stop_deployment
  reuse="$dir/population"
  for run in $(seq 1 "$runs"); do
    echo "run $run: the populated deployment's services again" >&2
    start_deployment "$dir/run$run-population" ""
    echo "run $run: ready after: $startup; resident: $(resident)" | tee -a "$cpu_out" >&2
    for workload in ${workloads//,/ }; do
      mkdir -p "$dir/run$run-$workload"
      measure "$dir/run$run-$workload" "$workload"
    done
    echo "run $run: resident after the workloads: $(resident)" | tee -a "$cpu_out" >&2
    stop_deployment
  done
  runs=0
fi
for run in $(seq 1 "$runs"); do
  for workload in ${workloads//,/ }; do
    echo "run $run, $workload: fresh services and topics" >&2
    start_deployment "$dir/run$run-$workload" "run$run$workload."
    measure "$dir/run$run-$workload" "$workload"
    stop_deployment
  done
done

RUST_LOG=error "$bin" bench --merge "$dir"/run*.json --out "$out"
