#!/usr/bin/env python3
"""Where an event's milliseconds go, from its traces.

Starts Jaeger (the binary scripts/ensure-go-tools.sh builds), runs one
latency workload of scripts/bench-kafka.sh (three processes on Apache Kafka)
with the services exporting a sample of their traces to it, then reads the
traces back through Jaeger's query API and prints the median and 90th
percentile of each stage of the path:

  api      POST /v1/events arrives → the event's produce call
  produce  produce call → Kafka's acknowledgement (linger.ms, acks=all)
  hop 1    the event's produce call → the matcher's process span starts
  match    the matcher's span (freshness lookup, match, tasks produced)
  hop 2    the matcher's span ends → the delivery's process span starts
  prepare  the delivery's span starts → the webhook request starts
           (freshness lookup, rate limit, request slot)
  request  the webhook request (the receiver answers at once)
  total    POST /v1/events arrives → the webhook request starts

    scripts/latency-breakdown.py [--workload L1] [--ratio 0.05] [bench-kafka.sh options...]
    LINGER_MS=0 scripts/latency-breakdown.py --workload L1

The sampler's ratio keeps the export's own cost small; the spans are the
services' own (their clocks are this machine's).
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jaeger_binary():
    out = subprocess.run(
        [str(ROOT / "scripts/ensure-go-tools.sh")], check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]
    return pathlib.Path(out) / "jaeger"


def start_jaeger(workdir):
    otlp, query, grpc = free_port(), free_port(), free_port()
    config = workdir / "jaeger.yaml"
    config.write_text(f"""service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
""")
    log = open(workdir / "jaeger.log", "w")
    proc = subprocess.Popen([str(jaeger_binary()), f"--config=file:{config}"], stdout=log, stderr=log)
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{query}/api/services", timeout=2)
            return proc, otlp, query
        except OSError:
            if time.time() > deadline:
                sys.exit(f"Jaeger did not start; see {workdir / 'jaeger.log'}")
            time.sleep(0.2)


def traces(query):
    url = (f"http://127.0.0.1:{query}/api/traces?service=waybill-ingest"
           "&operation=POST%20%2Fv1%2Fevents&limit=100000&lookback=1h")
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.load(r)["data"]


def stages(trace, workload):
    """The stage durations of one trace (ms), or None if it is incomplete."""
    by_name = {}
    for span in trace["spans"]:
        # Topic names carry the deployment's prefix (`run1L1.freights`).
        verb, _, topic = span["operationName"].partition(" ")
        name = f"{verb} {topic.rsplit('.', 1)[-1]}" if verb in ("publish", "process") else span["operationName"]
        by_name.setdefault(name, span)
    need = ["POST /v1/events", "publish freights", "process freights", "process deliveries", "POST"]
    if not all(n in by_name for n in need):
        return None
    # Only the measured workload's events (`bench-<workload>-...`), not
    # the warm-up's.
    tags = {t["key"]: t["value"] for t in by_name["publish freights"].get("tags", [])}
    if not str(tags.get("waybill.event_id", "")).startswith(f"bench-{workload}-"):
        return None
    start = {n: by_name[n]["startTime"] / 1000 for n in need}
    end = {n: start[n] + by_name[n]["duration"] / 1000 for n in need}
    return {
        "api": start["publish freights"] - start["POST /v1/events"],
        "produce": end["publish freights"] - start["publish freights"],
        "hop 1": start["process freights"] - start["publish freights"],
        "match": end["process freights"] - start["process freights"],
        "hop 2": start["process deliveries"] - end["process freights"],
        "prepare": start["POST"] - start["process deliveries"],
        "request": end["POST"] - start["POST"],
        "total": start["POST"] - start["POST /v1/events"],
    }


def percentile(values, q):
    values = sorted(values)
    return values[round((len(values) - 1) * q)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="L1")
    parser.add_argument("--ratio", default="0.05")
    args, rest = parser.parse_known_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="waybill-latency-"))
    jaeger, otlp, query = start_jaeger(workdir)
    try:
        env = dict(os.environ,
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp}",
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                   OTEL_TRACES_SAMPLER_ARG=args.ratio)
        subprocess.run([str(ROOT / "scripts/bench-kafka.sh"), "--runs", "1", "--workloads",
                        args.workload, "--out", str(workdir / "bench.json"), *rest],
                       env=env, check=True)
        time.sleep(6)  # the last batches of spans
        found = traces(query)
    finally:
        jaeger.terminate()
        jaeger.wait()
    rows = [s for s in (stages(t, args.workload) for t in found) if s]
    if not rows:
        names = sorted({s["operationName"] for t in found for s in t["spans"]})
        sys.exit(f"no complete trace among {len(found)} in Jaeger (spans seen: {names}); see {workdir}")
    print(f"{args.workload}: {len(rows)} sampled events, stage medians and p90 (ms)")
    print("| stage | p50 | p90 |\n|---|---|---|")
    for stage in rows[0]:
        values = [r[stage] for r in rows]
        print(f"| {stage} | {percentile(values, 0.5):.2f} | {percentile(values, 0.9):.2f} |")


if __name__ == "__main__":
    main()
