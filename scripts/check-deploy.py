#!/usr/bin/env python3
"""Checks what can be checked of the deployment without a cluster.

For the chart with its default values and with values-ha.yaml:
  - renders it (helm-python-sdk: Helm's own engine, no helm binary) and lints
    it strictly;
  - validates every rendered manifest against the Kubernetes schemas, offline
    (kubernetes-validate), the Prometheus-operator kinds against their
    required fields;
  - checks that no Helm hook needs an object that does not exist when it
    runs (one the chart makes as a later hook, or not as a hook at all);
  - runs the binary on what the manifests run: each container's first
    argument must be a `waybill` subcommand, and `waybill check-config` must
    accept the rendered configuration with the environment the Deployments
    set (so every config key the chart writes is one the binary reads);
  - scans the manifests with checkov; every skipped check is justified in
    helm/waybill/.checkov.yaml.
And for deploy/compose.yaml: every service it names in `depends_on` exists,
and every waybill container runs a real subcommand.

Usage: check-deploy.py <path to the waybill binary>
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "waybill"
KUBE_VERSION = "1.30"
# Values a user must provide (secrets); everything else is the chart's.
REQUIRED = {
    "secrets": {
        "sealingKey": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "operatorToken": "ci-operator-token-0123456789abcdef",
    }
}

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"FAIL {message}", flush=True)


def merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def subcommands(binary: str) -> set[str]:
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    commands = set()
    in_commands = False
    for line in text.splitlines():
        if line.strip() == "Commands:":
            in_commands = True
            continue
        if in_commands:
            match = re.match(r"^\s{2}([a-z][a-z-]*)\s", line)
            if match:
                commands.add(match.group(1))
            elif line and not line.startswith(" "):
                in_commands = False
    commands.discard("help")
    return commands


# Crates only tests need: the image must not carry them (Kafka process
# management, the OTLP collector, the test CA, the browser driver).
TEST_ONLY_CRATES = ("waybill-testkit", "rcgen", "criterion", "proptest")


def check_shipped_crates() -> None:
    """The shipped binary (`cargo build -p waybill`, what the Dockerfile
    builds) links no test-only crate."""
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-p", "waybill", "-e", "normal,build", "--prefix", "none"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    linked = {line.split()[0] for line in tree.splitlines() if line.strip()}
    for crate in TEST_ONLY_CRATES:
        if crate in linked:
            fail(f"the waybill binary links {crate}, which only tests need")
    if not failures:
        print(f"ok   waybill binary: {len(linked)} crates, none of {', '.join(TEST_ONLY_CRATES)}", flush=True)


def render(values: dict) -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name="waybill", namespace="webhooks", is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__source"] = path
                docs.append(doc)
    return docs


def check_schemas(label: str, docs: list[dict]) -> None:
    for doc in docs:
        source = doc.pop("__source")
        kind = doc.get("kind")
        name = f"{label}: {source} {kind}/{doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion", "").startswith("keda.sh/"):
            spec = doc.get("spec", {})
            if kind != "ScaledObject" or not spec.get("triggers") or not spec.get("scaleTargetRef", {}).get("name"):
                fail(f"{name}: a ScaledObject needs scaleTargetRef.name and triggers")
            continue
        if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            spec = doc.get("spec", {})
            if kind == "ServiceMonitor" and not spec.get("endpoints"):
                fail(f"{name}: no endpoints")
            if kind == "PrometheusRule":
                groups = spec.get("groups") or []
                if not groups or not all(g.get("rules") for g in groups):
                    fail(f"{name}: no rule groups")
                for group in groups:
                    for rule in group["rules"]:
                        if not rule.get("alert") or not rule.get("expr"):
                            fail(f"{name}: a rule without alert or expr")
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{name}: {e.message} at {'/'.join(map(str, e.path))}")
        except Exception as e:  # an unknown kind is a failure too
            fail(f"{name}: {e}")


HOOK_KINDS_REFERENCED = ("ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim")


def references(pod: dict) -> set[tuple[str, str]]:
    """(kind, name) of every object a pod spec needs to exist before it starts."""
    out: set[tuple[str, str]] = set()
    if pod.get("serviceAccountName"):
        out.add(("ServiceAccount", pod["serviceAccountName"]))
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            out.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            out.add(("Secret", volume["secret"]["secretName"]))
        if "persistentVolumeClaim" in volume:
            out.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                out.add(("ConfigMap", source["configMap"]["name"]))
            if "secret" in source:
                out.add(("Secret", source["secret"]["name"]))
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "secretKeyRef" in ref:
                out.add(("Secret", ref["secretKeyRef"]["name"]))
            if "configMapKeyRef" in ref:
                out.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                out.add(("Secret", source["secretRef"]["name"]))
            if "configMapRef" in source:
                out.add(("ConfigMap", source["configMapRef"]["name"]))
    return out


def check_hooks(label: str, docs: list[dict]) -> None:
    """A hook's pod refers only to objects that exist when it runs: another
    hook of the same events with a lower weight, or one the chart does not
    make (the user's own Secret, say). Helm creates the chart's other objects
    only after the pre-install hooks (and on upgrade, a pre-upgrade hook would
    read the previous release's)."""
    def hook_of(doc: dict) -> tuple[set[str], int] | None:
        annotations = doc.get("metadata", {}).get("annotations") or {}
        if "helm.sh/hook" not in annotations:
            return None
        events = {e.strip() for e in annotations["helm.sh/hook"].split(",")}
        return events, int(annotations.get("helm.sh/hook-weight", "0"))

    made = {(d["kind"], d["metadata"]["name"]): hook_of(d) for d in docs}
    before = len(failures)
    hooks = 0
    for doc in docs:
        hook = hook_of(doc)
        if hook is None or doc["kind"] not in ("Job", "Pod"):
            continue
        hooks += 1
        events, weight = hook
        if events == {"test"}:
            continue  # `helm test` runs against the installed release
        pod = doc["spec"]["template"]["spec"] if doc["kind"] == "Job" else doc["spec"]
        where = f"{label}: hook {doc['kind']}/{doc['metadata']['name']} ({','.join(sorted(events))}, weight {weight})"
        for kind, name in sorted(references(pod)):
            if (kind, name) not in made:
                continue  # not the chart's: it exists before the release
            other = made[(kind, name)]
            if other is None:
                fail(f"{where} needs {kind}/{name}, which is not a hook: "
                     "it does not exist yet on install (and is the previous release's on upgrade)")
            elif not events <= other[0] or other[1] >= weight:
                fail(f"{where} needs {kind}/{name}, a hook of {','.join(sorted(other[0]))} "
                     f"with weight {other[1]}: it must be a hook of the same events with a lower weight")
    if hooks and len(failures) == before:
        print(f"ok   {label}: {hooks} hook(s) need only earlier hooks or objects from outside the chart", flush=True)


def check_pods(label: str, docs: list[dict]) -> None:
    """Probes and spreading mean what they should: a pod has started when it
    is ready (its projection caught up), not when the process answers; each
    topology spread constraint counts the pods of its own component; a field
    that needs a newer Kubernetes is covered by the chart's kubeVersion."""
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        where = f"{label}: Deployment/{doc['metadata']['name']}"
        component = doc["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component")
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            startup = container.get("startupProbe", {}).get("httpGet", {}).get("path")
            ready = container.get("readinessProbe", {}).get("httpGet", {}).get("path")
            if startup != ready:
                fail(f"{where}: the startup probe asks {startup}, readiness {ready}: "
                     "a pod has started once it is ready")
        for constraint in pod.get("topologySpreadConstraints", []):
            labels = constraint.get("labelSelector", {}).get("matchLabels", {})
            if labels.get("app.kubernetes.io/component") != component:
                fail(f"{where}: a topology spread constraint counts {labels}, not the {component} pods")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    lowest = re.match(r">=\s*(\d+)\.(\d+)", chart.get("kubeVersion", ""))
    lowest = (int(lowest.group(1)), int(lowest.group(2))) if lowest else (0, 0)
    for doc in docs:
        if doc["kind"] == "PodDisruptionBudget" and "unhealthyPodEvictionPolicy" in doc["spec"] and lowest < (1, 27):
            fail(f"{label}: PodDisruptionBudget/{doc['metadata']['name']} sets unhealthyPodEvictionPolicy "
                 f"(Kubernetes 1.27 and later), the chart says kubeVersion {chart.get('kubeVersion')}")


def check_runbooks(label: str, docs: list[dict]) -> None:
    """Every alert links a section of docs/runbooks.md that exists, and a
    target that is down or absent is alerted on."""
    text = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in text.splitlines() if line.startswith("## ")
    }
    alerts = set()
    for doc in docs:
        if doc["kind"] != "PrometheusRule":
            continue
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                alerts.add(rule["alert"])
                url = rule.get("annotations", {}).get("runbook_url", "")
                page, _, anchor = url.partition("#")
                if not page.endswith("/docs/runbooks.md") or anchor not in anchors:
                    fail(f"{label}: alert {rule['alert']}: runbook_url {url!r} is not a section of docs/runbooks.md")
    if alerts and not {"WaybillTargetDown", "WaybillTargetAbsent"} <= alerts:
        fail(f"{label}: no alert for a scrape target that is down or absent")


def services_config(docs: list[dict]) -> str:
    """The services' waybill.toml (the ConfigMap that is not a hook's)."""
    return next(
        d for d in docs
        if d["kind"] == "ConfigMap" and "helm.sh/hook" not in (d["metadata"].get("annotations") or {})
    )["data"]["waybill.toml"]


def check_binary(label: str, docs: list[dict], binary: str, commands: set[str]) -> None:
    configs = {d["metadata"]["name"]: d["data"].get("waybill.toml") for d in docs if d["kind"] == "ConfigMap"}
    with tempfile.TemporaryDirectory() as tmp:
        for doc in docs:
            if doc["kind"] not in ("Deployment", "Job"):
                continue
            pod = doc["spec"]["template"]["spec"]
            mounted = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
            config = next((configs[m] for m in mounted if configs.get(m)), None)
            if config is None:
                fail(f"{label}: {doc['kind']}/{doc['metadata']['name']} mounts no ConfigMap with waybill.toml")
                continue
            path = Path(tmp) / f"{doc['metadata']['name']}.toml"
            path.write_text(config)
            for container in pod["containers"]:
                args = container.get("args", [])
                where = f"{label}: {doc['kind']}/{doc['metadata']['name']}"
                if not args or args[0] not in commands:
                    fail(f"{where}: runs `{' '.join(args)}`, not a waybill subcommand {sorted(commands)}")
                    continue
                if "--config" not in args:
                    fail(f"{where}: does not pass --config")
                env = {"PATH": os.environ.get("PATH", "")}
                for var in container.get("env", []):
                    if "value" in var:
                        env[var["name"]] = var["value"]
                    elif var["name"].startswith("WAYBILL_SECRETS__KEYS__"):
                        env[var["name"]] = REQUIRED["secrets"]["sealingKey"]
                    else:
                        env[var["name"]] = REQUIRED["secrets"]["operatorToken"]
                command = [binary, "check-config", "--config", str(path)]
                command += ["--service", args[0]]
                result = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if result.returncode != 0:
                    fail(f"{where}: waybill check-config refuses the chart's configuration:\n{result.stderr}")


# Ranges a delivery pod must never reach, whatever the values: the private,
# loopback, link-local, shared and IPv4-carrying IPv6 ranges the URL policy
# refuses (waybill-core::url_policy).
NEVER_REACHED = {
    "ipv4": ["10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"],
    "ipv6": ["::/8", "64:ff9b::/96", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10"],
}


def check_exposure(label: str, docs: list[dict], values: dict) -> None:
    """The delivery pods reach public addresses on the allowed ports only;
    the Ingress routes the API (/v1) only; metrics are scraped on the admin port."""
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    delivery = next((p for n, p in policies.items() if n.endswith("-delivery")), None)
    if delivery is None:
        fail(f"{label}: no NetworkPolicy for delivery")
        return
    if "Egress" not in delivery["spec"].get("policyTypes", []):
        fail(f"{label}: the delivery NetworkPolicy does not restrict egress")
        return
    policy = values["urlPolicy"]
    ports = policy.get("allowedPorts") or [443, 8443] + ([80] if policy.get("allowHttp") else [])
    public = [
        rule for rule in delivery["spec"]["egress"]
        if any("ipBlock" in peer and peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0") for peer in rule.get("to", []))
    ]
    if len(public) != 1:
        fail(f"{label}: expected one egress rule to public addresses, found {len(public)}")
        return
    rule = public[0]
    if sorted(p["port"] for p in rule["ports"]) != sorted(ports):
        fail(f"{label}: public egress on ports {rule['ports']}, the URL policy allows {ports}")
    for peer in rule["to"]:
        block = peer["ipBlock"]
        family = "ipv4" if block["cidr"] == "0.0.0.0/0" else "ipv6"
        missing = [r for r in NEVER_REACHED[family] if r not in block.get("except", [])]
        if missing:
            fail(f"{label}: delivery egress reaches {missing}")
    for rule in delivery["spec"]["egress"]:
        if rule is not public[0] and not rule.get("ports"):
            fail(f"{label}: an egress rule without ports: {rule}")
    for doc in docs:
        if doc["kind"] == "Ingress":
            for r in doc["spec"].get("rules", []):
                for path in r.get("http", {}).get("paths", []):
                    port = path["backend"]["service"]["port"]
                    if not path["path"].startswith("/v1") or port.get("name") != "http":
                        fail(f"{label}: the Ingress routes {path['path']} to {port}: only /v1 to the API port")
        if doc["kind"] == "ServiceMonitor":
            for endpoint in doc["spec"]["endpoints"]:
                if endpoint.get("port") != "admin":
                    fail(f"{label}: the ServiceMonitor scrapes {endpoint.get('port')}, not the admin port")


def check_otel(label: str, docs: list[dict]) -> None:
    """A pod that exports traces can reach its collector: the files its
    OTEL_EXPORTER_OTLP_*CERTIFICATE/KEY variables name are mounted, and
    restricted egress lets it through on the endpoint's port."""
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        where = f"{label}: Deployment/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if not endpoint:
                continue
            mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
            for name, path in env.items():
                if name.startswith("OTEL_EXPORTER_OTLP_") and name.endswith(("CERTIFICATE", "KEY")):
                    if not any(path.startswith(m) for m in mounts):
                        fail(f"{where}: {name}={path} is on no mounted volume")
            url = urllib.parse.urlsplit(endpoint)
            port = url.port or (443 if url.scheme == "https" else 80)
            policy = policies.get(doc["metadata"]["name"])
            if policy is None or "Egress" not in policy["spec"].get("policyTypes", []):
                continue
            reachable = any(
                any(p.get("port") == port for p in rule.get("ports", []))
                for rule in policy["spec"].get("egress", [])
                if not any("ipBlock" in peer for peer in rule.get("to", []))
            )
            if not reachable:
                fail(f"{where}: its egress policy does not reach the OTLP collector on port {port}")


def check_test_pod(label: str, docs: list[dict], binary: str) -> None:
    """The `helm test` Pod's command line is one the binary takes: run with
    the API and admin URLs unreachable, it must fail on the first URL, not
    on its arguments (clap exits 2 on a usage error)."""
    for doc in docs:
        annotations = doc["metadata"].get("annotations") or {}
        if doc["kind"] != "Pod" or annotations.get("helm.sh/hook") != "test":
            continue
        container = doc["spec"]["containers"][0]
        env = {e["name"] for e in container.get("env", [])}
        if not {"WAYBILL_API_URL", "WAYBILL_OPERATOR_TOKEN"} <= env:
            fail(f"{label}: the test Pod lacks the API URL or the operator token: {sorted(env)}")
        args = [a.replace(doc["metadata"]["name"].removesuffix("-check"), "127.0.0.1.invalid") for a in container["args"]]
        run = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                             env={"WAYBILL_API_URL": "http://127.0.0.1:9", "WAYBILL_OPERATOR_TOKEN": "x" * 24,
                                  "PATH": os.environ.get("PATH", "")})
        if run.returncode == 2 or "does not answer" not in run.stderr:
            fail(f"{label}: the test Pod's command `waybill {' '.join(container['args'])}` is refused: {run.stderr.strip()[:300]}")
        else:
            print(f"ok   {label}: the test Pod runs `waybill {' '.join(container['args'][:2])}` with arguments the binary takes", flush=True)


def check_autoscaling(label: str, docs: list[dict], values: dict) -> None:
    """Matcher and delivery never scale past the partitions (the rest would
    idle); lag-based scaling watches the group's own main topics, never a
    retry tier (its records wait on purpose), and targets a Deployment the
    chart makes."""
    partitions = values["kafka"]["partitions"]
    prefix = values["kafka"]["topicPrefix"]
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    for doc in docs:
        name = doc["metadata"]["name"]
        service = name.rsplit("-", 1)[-1]
        if doc["kind"] == "HorizontalPodAutoscaler":
            target, top = doc["spec"]["scaleTargetRef"]["name"], doc["spec"]["maxReplicas"]
            topics = [
                value
                for metric in doc["spec"]["metrics"] if metric["type"] == "External"
                for expr in metric["external"]["metric"]["selector"]["matchExpressions"]
                for value in expr["values"]
            ]
        elif doc["kind"] == "ScaledObject":
            target, top = doc["spec"]["scaleTargetRef"]["name"], doc["spec"]["maxReplicaCount"]
            topics = [t["metadata"]["topic"] for t in doc["spec"]["triggers"]]
            # The services prefix their group ids as their topics
            # (KafkaConfig::group_id).
            group = prefix + values[service]["groupId"]
            for trigger in doc["spec"]["triggers"]:
                if trigger["metadata"]["consumerGroup"] != group:
                    fail(f"{label}: ScaledObject/{name} watches group {trigger['metadata']['consumerGroup']}, "
                         f"{service} consumes as {group}")
        else:
            continue
        if target not in deployments:
            fail(f"{label}: {doc['kind']}/{name} scales {target}, which the chart does not make")
        if service in ("matcher", "delivery") and top > partitions:
            fail(f"{label}: {doc['kind']}/{name} scales to {top} replicas, past the {partitions} partitions")
        for topic in topics:
            if ".retry." in topic or not topic.startswith(prefix):
                fail(f"{label}: {doc['kind']}/{name} scales on the lag of {topic}")
        if topics:
            print(f"ok   {label}: {doc['kind']}/{name} scales on the lag of {', '.join(topics)} (at most {top})", flush=True)


# Values the chart must refuse, each with what its message must say.
REFUSED = [
    # values.schema.json (scripts/chart-docs.py): misspelt keys, words, ranges, units.
    ({"kafka": {"partitons": 3}}, "additional properties 'partitons' not allowed"),
    ({"logFormat": "xml"}, "value must be one of 'json', 'human'"),
    ({"delivery": {"requestTimeout": "15 seconds"}}, "/delivery/requestTimeout"),
    ({"ingest": {"replicas": -1}}, "/ingest/replicas"),
    ({"otel": {"endpoint": "otel-collector:4317"}}, "/otel/endpoint"),
    ({"secrets": {"operatorToken": "short"}}, "/secrets/operatorToken"),
    ({"startupTimeoutSeconds": 7}, "/startupTimeoutSeconds"),
    # The templates' own refusals.
    ({"delivery": {"autoscaling": {"enabled": True}, "keda": {"enabled": True}}},
     "autoscaling.enabled and keda.enabled both make an HPA"),
    ({"kafka": {"sasl": {"enabled": True, "passwordSecret": "p"}}, "delivery": {"keda": {"enabled": True}}},
     "delivery.keda.authenticationRef"),
    ({"matcher": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
     "matcher.autoscaling needs targetCPUUtilizationPercentage or lag.enabled"),
]


def check_refusals() -> None:
    """Bad values fail the render with a message that says what to fix."""
    for bad, message in REFUSED:
        try:
            render(merge(REQUIRED, bad))
        except Exception as e:  # the renderer raises on a template's fail
            if message not in str(e):
                fail(f"values {bad}: refused, but with {e!s:.300}")
            continue
        fail(f"values {bad}: rendered, but must be refused ({message})")
    if not failures:
        print(f"ok   {len(REFUSED)} bad values files refused with their reason", flush=True)


def check_sealing_keys(label: str, docs: list[dict], values: dict) -> None:
    """Every service pod gets every sealing key, and a changed Secret rolls
    the pods. (The topics Job needs none: `create-topics` reads only Kafka's.)"""
    previous = sorted(values.get("secrets", {}).get("previousKeys", {}))
    secret = next(d for d in docs if d["kind"] == "Secret")
    for key_id in previous:
        if f"sealing-key-{key_id}" not in secret.get("data", {}):
            fail(f"{label}: the Secret lacks sealing-key-{key_id}")
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        where = f"{label}: {doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]
        env = {
            e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
            for c in pod["spec"]["containers"]
            for e in c.get("env", [])
        }
        wanted = {"WAYBILL_SECRETS__KEYS__K1": "sealing-key"}
        wanted.update({f"WAYBILL_SECRETS__KEYS__{k.upper()}": f"sealing-key-{k}" for k in previous})
        for name, key in wanted.items():
            if env.get(name) != key:
                fail(f"{where}: {name} should come from the Secret's {key}, not {env.get(name)}")
        if doc["kind"] == "Deployment" and "checksum/secret" not in pod["metadata"].get("annotations", {}):
            fail(f"{where}: no checksum/secret annotation (a new key would not roll the pods)")


def check_quotas(label: str, docs: list[dict], values: dict) -> None:
    """The tenant quotas of the values reach the services' configuration."""
    config = tomllib.loads(services_config(docs))
    quotas = config.get("ingest", {}).get("quotas", {})
    if quotas.get("requests_per_second") != 1000 or quotas.get("concurrent_replays") != 2:
        fail(f"{label}: [ingest.quotas] does not carry the chart's defaults: {quotas}")
    wanted = values.get("ingest", {}).get("quotas", {}).get("tenants", {})
    for tenant, own in wanted.items():
        got = quotas.get("tenants", {}).get(tenant)
        expected = {
            "requests_per_second": own.get("requestsPerSecond"),
            "concurrent_replays": own.get("concurrentReplays"),
        }
        expected = {k: v for k, v in expected.items() if v is not None}
        if got != expected:
            fail(f"{label}: quotas of tenant {tenant}: {got}, expected {expected}")


def check_checkov(label: str, values: dict) -> None:
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name="waybill", namespace="webhooks", is_install=True)
    with tempfile.TemporaryDirectory() as tmp:
        for path, text in rendered.items():
            if path.endswith(".yaml"):
                target = Path(tmp) / path.replace("/", "_")
                target.write_text(text)
        result = subprocess.run(
            [
                sys.executable, "-m", "checkov.main",
                "--directory", tmp,
                "--framework", "kubernetes",
                "--config-file", str(CHART / ".checkov.yaml"),
                "--output", "json",
                "--quiet",
            ],
            capture_output=True,
            text=True,
        )
        try:
            report = json.loads(result.stdout or "{}")
        except json.JSONDecodeError:
            fail(f"{label}: checkov did not run: {result.stderr[-2000:]}")
            return
        reports = report if isinstance(report, list) else [report]
        failed = [
            c for r in reports for c in r.get("results", {}).get("failed_checks", [])
        ]
        passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
        for check in failed:
            fail(f"{label}: checkov {check['check_id']} {check['check_name']} on {check['resource']}")
        print(f"ok   {label}: checkov {passed} checks passed, {len(failed)} failed", flush=True)


def check_promtool(tools: Path) -> None:
    """Prometheus's own promtool: the rules parse, and their unit tests
    (each important alert fires on the series that should fire it, stays
    quiet on its look-alikes, and renders its annotations) pass."""
    rules = ROOT / "deploy" / "prometheus"
    for args in (["check", "rules", "waybill-alerts.yaml"], ["test", "rules", "waybill-alerts.test.yaml"]):
        run = subprocess.run([str(tools / "promtool"), *args], cwd=rules, capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"promtool {' '.join(args)}:\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
            return
    tests = len(yaml.safe_load((rules / "waybill-alerts.test.yaml").read_text())["tests"])
    print(f"ok   promtool: the alert rules check, and their {tests} unit tests pass", flush=True)


def check_real_helm(tools: Path, label: str, values: dict, docs: list[dict]) -> None:
    """The real helm: `lint --strict` and `template` of the values take them,
    and render the same objects as the Python renderer."""
    helm_bin = str(tools / "helm")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values, f)
        f.flush()
        lint = subprocess.run([helm_bin, "lint", "--strict", str(CHART), "-f", f.name,
                               "--kube-version", f"{KUBE_VERSION}.0"], capture_output=True, text=True)
        if lint.returncode != 0:
            fail(f"{label}: helm lint --strict: {lint.stdout[-2000:]}{lint.stderr[-1000:]}")
            return
        template = subprocess.run([helm_bin, "template", "waybill", str(CHART), "-n", "webhooks", "-f", f.name,
                                   "--kube-version", f"{KUBE_VERSION}.0"], capture_output=True, text=True)
    if template.returncode != 0:
        fail(f"{label}: helm template: {template.stderr[-2000:]}")
        return
    theirs = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(template.stdout) if d)
    ours = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    if theirs != ours:
        fail(f"{label}: helm template renders {sorted(set(theirs) ^ set(ours))} differently from the Python renderer")
    else:
        print(f"ok   {label}: helm lint --strict and helm template ({len(theirs)} objects, as rendered above)", flush=True)


def check_real_helm_refusals(tools: Path) -> None:
    """The real helm refuses the bad values files too, with the same reason."""
    for bad, message in REFUSED:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(merge(REQUIRED, bad), f)
            f.flush()
            run = subprocess.run([str(tools / "helm"), "template", "waybill", str(CHART), "-f", f.name],
                                 capture_output=True, text=True)
        if run.returncode == 0:
            fail(f"helm template takes {bad}, which must be refused ({message})")
        elif message not in run.stderr:
            fail(f"helm template refuses {bad}, but with {run.stderr.strip()[:300]}")
    if not failures:
        print(f"ok   helm template refuses the {len(REFUSED)} bad values files too", flush=True)


def check_compose(commands: set[str]) -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose.get("services", {})
    if not services:
        fail("compose.yaml: no services")
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other in depends if isinstance(depends, (list, dict)) else []:
            if other not in services:
                fail(f"compose.yaml: {name} depends on {other}, which is not a service")
        if name.startswith("waybill-"):
            command = service.get("command", [])
            if isinstance(command, str):
                command = command.split()
            if not command or command[0] not in commands:
                fail(f"compose.yaml: {name} runs `{command}`, not a waybill subcommand")
    for name in ("waybill-ingest", "waybill-matcher", "waybill-delivery", "kafka"):
        if name not in services:
            fail(f"compose.yaml: no `{name}` service")
    pinned = re.search(r"^version=(\S+)$", (ROOT / "scripts" / "ensure-kafka.sh").read_text(), re.M)
    image = services.get("kafka", {}).get("image", "")
    if not pinned or image != f"apache/kafka:{pinned.group(1)}":
        fail(f"compose.yaml: kafka runs {image!r}, the tests pin Apache Kafka "
             f"{pinned.group(1) if pinned else '?'} (scripts/ensure-kafka.sh)")
    print(f"ok   compose.yaml: {len(services)} services, {image} as the tests pin", flush=True)


def main() -> int:
    binary = sys.argv[1]
    tools = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    if tools is None:
        fail("no Go tools folder given (scripts/ensure-go-tools.sh): promtool and helm must run")
    commands = subcommands(binary)
    for needed in ("ingest", "matcher", "delivery", "create-topics", "check-config"):
        if needed not in commands:
            fail(f"`waybill --help` does not list `{needed}`")
    check_shipped_crates()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    ha = yaml.safe_load((CHART / "values-ha.yaml").read_text())
    for label, values in (
        ("default values", REQUIRED),
        (
            "values-ha.yaml",
            merge(
                merge(ha, REQUIRED),
                {
                    "topicsJob": {"enabled": True},
                    "ingest": {"quotas": {"tenants": {"ten_platform": {"requestsPerSecond": 0, "concurrentReplays": 4}}}},
                    # In the middle of a key rotation: k1 current, k0 still opening.
                    "secrets": {"previousKeys": {"k0": REQUIRED["secrets"]["sealingKey"]}},
                },
            ),
        ),
        (
            # KEDA's Kafka scaler for matcher and delivery, brokers over SASL.
            "values-ha.yaml with KEDA",
            merge(
                merge(ha, REQUIRED),
                {
                    "kafka": {"topicPrefix": "prod.", "sasl": {"enabled": True, "username": "waybill",
                                                              "passwordSecret": "kafka-password"}},
                    "matcher": {"autoscaling": {"enabled": False},
                                "keda": {"enabled": True, "authenticationRef": "kafka-scram"}},
                    "delivery": {"autoscaling": {"enabled": False},
                                 "keda": {"enabled": True, "maxReplicas": 48, "authenticationRef": "kafka-scram"}},
                },
            ),
        ),
    ):
        before = len(failures)
        report = helm.lint(str(CHART), merge(defaults, values), strict=True, kube_version=f"v{KUBE_VERSION}.0")
        for message in report.get("messages", []):
            if message.get("severity", 0) >= 2:
                fail(f"{label}: helm lint: {message.get('path')}: {message.get('error')}")
        for error in report.get("errors", []) or []:
            fail(f"{label}: helm lint: {error}")
        docs = render(values)
        kinds = sorted({d["kind"] for d in docs})
        check_hooks(label, docs)
        check_pods(label, docs)
        check_runbooks(label, docs)
        check_binary(label, docs, binary, commands)
        check_quotas(label, docs, values)
        check_sealing_keys(label, docs, values)
        check_exposure(label, docs, merge(defaults, values))
        check_otel(label, docs)
        check_test_pod(label, docs, binary)
        check_autoscaling(label, docs, merge(defaults, values))
        check_schemas(label, docs)
        check_checkov(label, values)
        if tools is not None:
            # The Python renderer dropped __source from the docs already.
            check_real_helm(tools, label, merge(defaults, values), docs)
        if len(failures) == before:
            print(f"ok   {label}: {len(docs)} manifests ({', '.join(kinds)})", flush=True)
    check_refusals()
    if tools is not None:
        check_real_helm_refusals(tools)
        check_promtool(tools)
    check_compose(commands)
    if failures:
        print(f"\n{len(failures)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
