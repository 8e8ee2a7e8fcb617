#!/usr/bin/env python3
"""Writes the Helm chart's values.schema.json and README.md from values.yaml.

values.yaml is the one source: its keys and defaults give the schema's
properties and types (an object of the chart's own settings takes no other
key, so a misspelt value fails `helm install`), its `# --` comments the
descriptions. What a default cannot say (allowed words, ranges, units) is in
RULES below. `--check` writes nothing and fails when either file differs
from what it would write (`make check-deploy` runs it).

    scripts/chart-docs.py          # regenerate
    scripts/chart-docs.py --check  # fail if out of date
"""

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "waybill"

# Values that are Kubernetes objects or free maps: any keys.
FREE = {
    "kafka.properties", "secrets.previousKeys", "podSecurityContext", "securityContext",
    "podAnnotations", "podLabels", "nodeSelector", "affinity", "serviceAccount.annotations",
    "ingest.quotas.tenants", "ingest.resources", "matcher.resources", "delivery.resources",
    "ingress.annotations", "metrics.serviceMonitor.labels", "metrics.prometheusRule.labels",
}

DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d))+$",
            "description_suffix": " A duration: `500ms`, `5s`, `2m`, `1h30m`."}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
REPLICAS = {"type": "integer", "minimum": 0}
POSITIVE = {"type": "integer", "minimum": 1}
PERCENT = {"type": ["integer", "null"], "minimum": 1, "maximum": 100}

# What a default cannot say.
RULES = {
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "image.digest": {"pattern": r"^(sha256:[0-9a-f]{64})?$"},
    "kafka.brokers": {"minLength": 1},
    "kafka.partitions": POSITIVE,
    "kafka.replicationFactor": POSITIVE,
    "kafka.minInsyncReplicas": {"type": "integer", "minimum": 0},
    "kafka.topicPrefix": {"pattern": r"^[A-Za-z0-9._-]*$"},
    "kafka.sasl.mechanism": {"enum": ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]},
    "secrets.currentKeyId": {"pattern": r"^[A-Za-z0-9_-]{1,32}$"},
    "secrets.operatorToken": {"anyOf": [{"maxLength": 0}, {"minLength": 24}]},
    "secrets.previousKeyIds": {"items": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,32}$"}},
    "urlPolicy.allowedPorts": {"items": PORT},
    "catalog.eventTypes": {"items": {
        "type": "object", "required": ["name", "topic"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "topic": {"type": "string"},
                       "description": {"type": "string"}, "domain": {"type": "string"}}}},
    "logFormat": {"enum": ["json", "human"]},
    "otel.protocol": {"enum": ["http/protobuf", "grpc"]},
    "otel.compression": {"enum": ["gzip", "none"]},
    "otel.endpoint": {"pattern": r"^(https?://.+)?$"},
    "extraEnv": {"items": {"type": "object", "required": ["name"]}},
    "tolerations": {"items": {"type": "object"}},
    "topologySpreadConstraints": {"items": {"type": "object", "required": ["maxSkew", "topologyKey"]}},
    "startupTimeoutSeconds": {"type": "integer", "minimum": 5, "multipleOf": 5},
    "terminationGracePeriodSeconds": POSITIVE,
    "ingest.service.type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "ingest.maxEventBytes": POSITIVE,
    "ingest.writeTimeout": DURATION,
    "delivery.connectTimeout": DURATION,
    "delivery.requestTimeout": DURATION,
    "delivery.drainTimeout": DURATION,
    "delivery.maxInFlightTotal": {"type": "integer", "minimum": 1, "maximum": 100000},
    "metrics.serviceMonitor.interval": DURATION,
    "tests.timeout": DURATION,
    "tests.receiverUrl": {"pattern": r"^https?://.+"},
    "networkPolicy.deliveryEgress.kafka.ports": {"items": PORT},
    "networkPolicy.deliveryEgress.otel.ports": {"items": PORT},
}
for service in ("ingest", "matcher", "delivery"):
    RULES[f"{service}.replicas"] = REPLICAS
    RULES[f"{service}.port"] = PORT
    RULES[f"{service}.adminPort"] = PORT
    RULES[f"{service}.autoscaling.minReplicas"] = POSITIVE
    RULES[f"{service}.autoscaling.maxReplicas"] = POSITIVE
    RULES[f"{service}.autoscaling.targetCPUUtilizationPercentage"] = PERCENT
    RULES[f"{service}.autoscaling.lag.targetPerReplica"] = POSITIVE
    RULES[f"{service}.keda.minReplicas"] = {"type": "integer", "minimum": 0}
    RULES[f"{service}.keda.maxReplicas"] = POSITIVE
    RULES[f"{service}.keda.lagThreshold"] = POSITIVE
    RULES[f"{service}.groupId"] = {"minLength": 1}
for quota in ("requestsPerSecond", "requestBurst", "idempotencyKeys", "concurrentReplays"):
    RULES[f"ingest.quotas.{quota}"] = {"type": "integer", "minimum": 0}


def comments(text: str) -> dict[str, str]:
    """The `# --` comment above each key, by dotted path."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending.append(stripped[4:].strip())
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not match:
            if not stripped:
                pending = []
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if pending:
            found[".".join(k for _, k in stack)] = " ".join(pending)
        pending = []
    return found


def type_of(value) -> dict:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {}


def schema_of(path: str, value, docs: dict[str, str]) -> dict:
    node = type_of(value)
    if isinstance(value, dict) and path not in FREE:
        node["additionalProperties"] = False
        node["properties"] = {
            key: schema_of(f"{path}.{key}" if path else key, inner, docs)
            for key, inner in value.items()
        }
    rule = dict(RULES.get(path, {}))
    suffix = rule.pop("description_suffix", "")
    node.update(rule)
    description = docs.get(path, "") + suffix
    if description:
        node["description"] = description.strip()
    return node


def schema(values: dict, docs: dict[str, str]) -> str:
    root = schema_of("", values, docs)
    root = {"$schema": "https://json-schema.org/draft-07/schema#",
            "title": "Values of the waybill chart (generated by scripts/chart-docs.py from values.yaml)",
            **root}
    return json.dumps(root, indent=2) + "\n"


def rows(path: str, value, docs: dict[str, str]):
    if isinstance(value, dict) and value and path not in FREE:
        for key, inner in value.items():
            yield from rows(f"{path}.{key}" if path else key, inner, docs)
        return
    default = json.dumps(value, separators=(", ", ": ")) if value not in ("", None) else '""' if value == "" else "null"
    if len(default) > 60:
        default = default[:57] + "..."
    kind = type_of(value).get("type", "any")
    allowed = RULES.get(path, {}).get("enum")
    text = docs.get(path, "")
    if allowed:
        text += " One of " + ", ".join(f"`{a}`" for a in allowed) + "."
    text = text.replace("|", "\\|").strip()
    default = default.replace("|", "\\|")
    yield f"| `{path}` | {kind} | `{default}` | {text} |"


def readme(values: dict, docs: dict[str, str]) -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    lines = [
        f"# {chart['name']}",
        "",
        "<!-- Generated by scripts/chart-docs.py from values.yaml; edit values.yaml and rerun. -->",
        "",
        chart.get("description", ""),
        "",
        f"Chart version {chart['version']}, app version {chart.get('appVersion', '')}, "
        f"Kubernetes {chart.get('kubeVersion', 'any')}. How to install, size and run it: "
        "[docs/deploy.md](../../docs/deploy.md). `values-ha.yaml` is an overlay for production.",
        "",
        "Every value is checked against `values.schema.json` by `helm install`, `helm template` "
        "and `helm lint`: a misspelt key or a value outside its range is refused before anything "
        "is applied.",
        "",
        "## Values",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
        *rows("", values, docs),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    docs = comments(text)
    wanted = {"values.schema.json": schema(values, docs), "README.md": readme(values, docs)}
    bare = [row.split("|")[1].strip(" `") for row in rows("", values, docs) if row.endswith("|  |")]
    if bare:
        print(f"FAIL values.yaml: no `# --` comment for {', '.join(bare)}", file=sys.stderr)
        return 1
    if "--check" in sys.argv[1:]:
        stale = [name for name, body in wanted.items()
                 if not (CHART / name).exists() or (CHART / name).read_text() != body]
        if stale:
            print(f"FAIL helm/waybill/{' and '.join(stale)} out of date with values.yaml: "
                  "run scripts/chart-docs.py", file=sys.stderr)
            return 1
        print("ok   helm/waybill/values.schema.json and README.md match values.yaml", flush=True)
        return 0
    for name, body in wanted.items():
        (CHART / name).write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
