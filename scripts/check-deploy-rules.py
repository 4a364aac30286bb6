#!/usr/bin/env python3
"""Rules the rendered Kubernetes layouts must keep (issue 22), called by
scripts/check-deploy.sh with the repository root and one rendered YAML file
per layout. Prints every violation and exits 1 if there is any."""

import re
import sys
import tomllib

import yaml

root, layouts = sys.argv[1], sys.argv[2:]
problems = []


def problem(layout, text):
    problems.append(f"{layout}: {text}")


# Consumers' auto.offset.reset: built in (src/kafka), unless the config sets it.
def builtin_offset_reset():
    try:
        src = open(f"{root}/src/kafka/mod.rs").read()
    except OSError:
        return "earliest"
    m = re.search(r'"auto\.offset\.reset",\s*"(\w+)"', src)
    return m.group(1) if m else "earliest"


def pod_ports(container):
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


for path in layouts:
    layout = path.rsplit("/", 1)[-1][:-5]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    # The configuration the pods get.
    config_maps = [c for c in by_kind.get("ConfigMap", []) if "rewardhooks.toml" in c.get("data", {})]
    if len(config_maps) != 1:
        problem(layout, "expected one ConfigMap with rewardhooks.toml")
        continue
    cm = config_maps[0]
    if not re.search(r"-[a-z0-9]{10}$", cm["metadata"]["name"]):
        problem(layout, "the config ConfigMap has no content hash in its name: edits would not roll pods")
    config = tomllib.loads(cm["data"]["rewardhooks.toml"])
    kafka = config.get("kafka", {})
    brokers = kafka.get("brokers", "127.0.0.1:9092")
    group = kafka.get("group_id", "rewardhooks")
    prefix = kafka.get("topic_prefix", "webhooks")
    inputs = kafka.get("input_topics", ["rewards.events"])
    reset = kafka.get("consumer", {}).get("auto.offset.reset") or builtin_offset_reset()
    api_port = port_of(config.get("api", {}).get("listen", "0.0.0.0:8080"))
    ops_port = port_of(config.get("ops", {}).get("listen", "0.0.0.0:9091"))

    services = by_kind.get("Service", [])
    monitors = by_kind.get("ServiceMonitor", [])
    scraped_ports = {e.get("port") for m in monitors for e in m["spec"].get("endpoints", [])}
    if not monitors:
        problem(layout, "no ServiceMonitor")
    if not by_kind.get("PrometheusRule"):
        problem(layout, "no PrometheusRule")
    if not any(c.get("metadata", {}).get("labels", {}).get("grafana_dashboard") for c in by_kind.get("ConfigMap", [])):
        problem(layout, "no Grafana dashboard ConfigMap (label grafana_dashboard)")

    scaled = {}
    for so in by_kind.get("ScaledObject", []):
        scaled[so["spec"]["scaleTargetRef"]["name"]] = so
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    auths = {t["metadata"]["name"] for t in by_kind.get("TriggerAuthentication", [])}
    pdbs = by_kind.get("PodDisruptionBudget", [])

    roles_seen = set()
    for dep in by_kind.get("Deployment", []):
        name = dep["metadata"]["name"]
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        where = f"Deployment {name}"
        if pod.get("automountServiceAccountToken") is not False:
            problem(layout, f"{where}: automountServiceAccountToken must be false")
        if not pod.get("topologySpreadConstraints"):
            problem(layout, f"{where}: no topologySpreadConstraints")
        if (name in scaled or name in hpas) and "replicas" in spec:
            problem(layout, f"{where}: sets replicas although an autoscaler scales it (every apply would fight it)")
        if not any(
            all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items()) for p in pdbs
        ):
            problem(layout, f"{where}: no PodDisruptionBudget selects its pods")
        containers = pod["containers"]
        main = next((c for c in containers if c["name"] == "rewardhooks"), None)
        if main is None:
            problem(layout, f"{where}: no container named rewardhooks")
            continue
        image = main.get("image", "")
        if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            problem(layout, f"{where}: image {image!r} is not an immutable reference (tag or digest)")
        limits = main.get("resources", {}).get("limits", {})
        if "memory" not in limits or "memory" not in main.get("resources", {}).get("requests", {}):
            problem(layout, f"{where}: memory request and limit required")
        args = main.get("args", [])
        if not args or args[0] != "run":
            problem(layout, f"{where}: args must start with run")
        roles = {"api", "fanout", "deliver"}
        if "--roles" in args:
            roles = set(args[args.index("--roles") + 1].split(","))
        roles_seen |= roles
        ports = pod_ports(main)
        # Where /metrics, /healthz and /readyz are served.
        ops_name, expected = ("http", api_port) if "api" in roles else ("ops", ops_port)
        if ports.get(ops_name) != expected:
            problem(layout, f"{where}: roles {sorted(roles)} serve health and metrics on port {expected}; the container port named {ops_name!r} is {ports.get(ops_name)}")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = main.get(probe, {}).get("httpGet", {})
            if p.get("port") != ops_name:
                problem(layout, f"{where}: {probe} must use port {ops_name!r}")
        want_path = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, want in want_path.items():
            if main.get(probe, {}).get("httpGet", {}).get("path") != want:
                problem(layout, f"{where}: {probe} must GET {want}")
        # Scraped: a Service selecting these pods with a port the ServiceMonitor scrapes,
        # pointing at the metrics port, and a ServiceMonitor selecting that Service.
        scraped = False
        for svc in services:
            sel = svc["spec"].get("selector", {})
            if not sel or not all(labels.get(k) == v for k, v in sel.items()):
                continue
            svc_labels = svc["metadata"].get("labels", {})
            if not any(all(svc_labels.get(k) == v for k, v in m["spec"]["selector"].get("matchLabels", {}).items()) for m in monitors):
                continue
            for port in svc["spec"]["ports"]:
                if port.get("name") in scraped_ports and port.get("targetPort") in (ops_name, expected):
                    scraped = True
        if not scraped:
            problem(layout, f"{where}: no Service the ServiceMonitor scrapes reaches its metrics port {ops_name!r}")
        env = {e["name"] for e in main.get("env", [])}
        if "REWARDHOOKS__SECURITY__SECRETS_KEY" not in env:
            problem(layout, f"{where}: REWARDHOOKS__SECURITY__SECRETS_KEY missing")
        if any(e.startswith("REWARDHOOKS__API__LISTEN") or e.startswith("REWARDHOOKS__OPS__LISTEN") for e in env):
            problem(layout, f"{where}: listen addresses belong in the ConfigMap, not the environment")

    if roles_seen != {"api", "fanout", "deliver"}:
        problem(layout, f"roles run: {sorted(roles_seen)}; every role must run somewhere")

    for target, so in scaled.items():
        where = f"ScaledObject {so['metadata']['name']}"
        s = so["spec"]
        if "cooldownPeriod" in s and s.get("minReplicaCount", 0) > 0:
            problem(layout, f"{where}: cooldownPeriod only applies to scaling to zero")
        behavior = s.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
        if "scaleDown" not in behavior:
            problem(layout, f"{where}: no advanced.horizontalPodAutoscalerConfig.behavior.scaleDown")
        if s.get("maxReplicaCount", 100) > kafka.get("partitions", 12):
            problem(layout, f"{where}: maxReplicaCount above kafka.partitions leaves replicas idle")
        dep = next((d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == target), None)
        if dep is None:
            problem(layout, f"{where}: targets no Deployment of this layout")
            continue
        args = dep["spec"]["template"]["spec"]["containers"][0].get("args", [])
        roles = set(args[args.index("--roles") + 1].split(",")) if "--roles" in args else {"api", "fanout", "deliver"}
        wanted = set()
        if "fanout" in roles:
            wanted |= {(f"{group}.fanout", t) for t in inputs}
        if "deliver" in roles:
            wanted.add((f"{group}.deliver", f"{prefix}.deliveries"))
        got = set()
        for trig in s.get("triggers", []):
            if trig.get("type") != "kafka":
                continue
            md = trig["metadata"]
            got.add((md.get("consumerGroup"), md.get("topic")))
            if md.get("bootstrapServers") != brokers:
                problem(layout, f"{where}: bootstrapServers {md.get('bootstrapServers')!r} differs from kafka.brokers {brokers!r}")
            if md.get("offsetResetPolicy", "latest") != reset:
                problem(layout, f"{where}: offsetResetPolicy {md.get('offsetResetPolicy', 'latest (KEDA default)')} differs from the consumers' auto.offset.reset {reset}")
            ref = trig.get("authenticationRef", {}).get("name")
            if "security.protocol" in config.get("kafka", {}).get("client", {}) and ref not in auths:
                problem(layout, f"{where}: Kafka is secured but the trigger has no TriggerAuthentication of this layout")
        if got != wanted:
            problem(layout, f"{where}: triggers cover {sorted(got)}, expected {sorted(wanted)}")

    for pdb in pdbs:
        if pdb["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            problem(layout, f"PodDisruptionBudget {pdb['metadata']['name']}: unhealthyPodEvictionPolicy must be AlwaysAllow (unready pods while Kafka is down must stay evictable)")

for p in problems:
    print(f"check-deploy: FAIL: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-deploy: rules hold in {len(layouts)} layouts")
