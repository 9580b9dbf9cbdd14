#!/usr/bin/env python3
"""What the schemas cannot say about the rendered manifests: the security settings, probes and
resources of every process, a disruption budget for each, topics as SPEC 3 lists them,
autoscaling within the partitions, the alerts and the dashboard panels an SRE needs.

    python3 deploy/k8s/lint.py <dashboard.json> <rendered overlay.yaml>...

Prints every violation and exits 1 if there is one.
"""

import json
import sys
from pathlib import Path

import yaml

# The service registry (crates/model/src/services.rs, written out by `omni services`).
REGISTRY = json.loads((Path(__file__).resolve().parents[1] / "services.json").read_text())
SPEC_TOPICS = {t["name"]: "compact" if t["cleanup"] == "compact" else "delete" for t in REGISTRY["topics"]}
STREAM_PROCESSORS = {s["name"] for s in REGISTRY["services"] if s["kind"] == "stream_processor"}
HTTP = {s["name"] for s in REGISTRY["services"] if s["kind"] == "http"}
# identity-resolver's stages: Deployments of their own (started by the identity-resolution component).
IDENTITY_STAGES = {s["name"] for s in REGISTRY["identity_stages"]}
ADMIN_PORTS = {s["name"]: s["admin_port"] for s in REGISTRY["services"] + REGISTRY["identity_stages"]}
# Longest drain: the open transaction is committed or aborted within the transaction timeout.
TRANSACTION_TIMEOUT_SECONDS = 10
# The binaries' default (`--shutdown-grace-seconds`).
SHUTDOWN_GRACE_SECONDS = 20
ALERTS = ["lag", "progress", "deadletter", "abort"]
PANELS = ["throughput", "lag", "latency", "dead-letter", "transaction", "restore"]


def check_deployment(where, deployment, problems, config_maps):
    pod = deployment["spec"]["template"]["spec"]
    security = pod.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: no service account token is needed; do not mount one")
    # A Service named kafka would otherwise inject KAFKA_PORT=tcp://..., read as a Kafka option.
    if pod.get("enableServiceLinks") is not False:
        problems.append(f"{where}: enableServiceLinks must be false")
    if deployment["metadata"]["name"] == "ingest-gateway":
        keys = [e for c in pod["containers"] for e in c.get("env", []) if e["name"] == "GATEWAY_API_KEYS"]
        if not keys or "secretKeyRef" not in keys[0].get("valueFrom", {}):
            problems.append(f"{where}: GATEWAY_API_KEYS must come from a Secret (without keys anyone may publish)")
    pre_stop = max((c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0) for c in pod["containers"]), default=0)
    if pod.get("terminationGracePeriodSeconds", 30) <= TRANSACTION_TIMEOUT_SECONDS + pre_stop:
        problems.append(f"{where}: terminationGracePeriodSeconds must exceed the {TRANSACTION_TIMEOUT_SECONDS} s drain")
    # The process's own grace must end before the kubelet's SIGKILL, so its exit says why.
    # Set in a container's env or in a ConfigMap it takes whole (envFrom); env wins.
    graces = []
    for c in pod["containers"]:
        settings = {}
        for source in c.get("envFrom", []):
            settings.update(config_maps.get(source.get("configMapRef", {}).get("name"), {}))
        settings.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
        graces.append(settings.get("SHUTDOWN_GRACE_SECONDS", str(SHUTDOWN_GRACE_SECONDS)))
    for grace in graces:
        if not grace.isdigit():
            problems.append(f"{where}: SHUTDOWN_GRACE_SECONDS must be whole seconds, not {grace!r}")
        elif pod.get("terminationGracePeriodSeconds", 30) <= int(grace) + pre_stop:
            problems.append(f"{where}: terminationGracePeriodSeconds must exceed preStop plus SHUTDOWN_GRACE_SECONDS ({grace} s)")
    for container in pod["containers"]:
        c = f"{where} container {container['name']}"
        ctx = container.get("securityContext", {})
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c}: allowPrivilegeEscalation must be false")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c}: readOnlyRootFilesystem must be true")
        if ctx.get("privileged"):
            problems.append(f"{c}: must not be privileged")
        if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
            problems.append(f"{c}: capabilities must drop ALL")
        if ctx.get("capabilities", {}).get("add"):
            problems.append(f"{c}: must not add capabilities")
        if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{c}: liveness probe must be GET /healthz")
        if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{c}: readiness probe must be GET /readyz")
        resources = container.get("resources", {})
        for key in ("cpu", "memory"):
            if key not in resources.get("requests", {}):
                problems.append(f"{c}: resources.requests.{key} is missing")
        if "memory" not in resources.get("limits", {}):
            problems.append(f"{c}: resources.limits.memory is missing")
        image = container.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(f"{c}: image {image!r} must have a pinned tag")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def lint(objects, source):
    problems = []
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    config_maps = {m["metadata"]["name"]: m.get("data", {}) for m in by_kind.get("ConfigMap", [])}
    if set(deployments) != STREAM_PROCESSORS | HTTP | IDENTITY_STAGES:
        problems.append(f"{source}: Deployments {sorted(deployments)}, expected {sorted(STREAM_PROCESSORS | HTTP | IDENTITY_STAGES)}")
    for name, deployment in deployments.items():
        check_deployment(f"{source}: Deployment {name}", deployment, problems, config_maps)
        admin = [p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", []) if p.get("name") == "admin"]
        if name in ADMIN_PORTS and admin != [ADMIN_PORTS[name]]:
            problems.append(f"{source}: Deployment {name} admin port {admin}, the registry says {ADMIN_PORTS[name]}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if not any(selects(p["spec"]["selector"], labels) for p in by_kind.get("PodDisruptionBudget", [])):
            problems.append(f"{source}: Deployment {name} has no PodDisruptionBudget")
    services = {s["metadata"]["name"] for s in by_kind.get("Service", [])}
    if services != HTTP:
        problems.append(f"{source}: Services {sorted(services)}: only the HTTP processes {sorted(HTTP)} need one")
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for kind in ("NetworkPolicy", "PodMonitor"):
        for obj in by_kind.get(kind, []):
            selector = obj["spec"].get("podSelector" if kind == "NetworkPolicy" else "selector", {})
            if selector and not any(selects(selector, labels) for labels in pod_labels):
                problems.append(f"{source}: {kind} {obj['metadata']['name']} selects no pod")
    policies = by_kind.get("NetworkPolicy", [])
    if not any(p["spec"].get("podSelector") == {} and not p["spec"].get("ingress") for p in policies):
        problems.append(f"{source}: no default-deny NetworkPolicy")

    topics = {t["metadata"]["name"]: t for t in by_kind.get("KafkaTopic", [])}
    if set(topics) != set(SPEC_TOPICS):
        problems.append(f"{source}: KafkaTopics differ from SPEC 3: missing {sorted(set(SPEC_TOPICS) - set(topics))}, extra {sorted(set(topics) - set(SPEC_TOPICS))}")
    partitions = {t["spec"].get("partitions") for t in topics.values()}
    if len(partitions) != 1:
        problems.append(f"{source}: topics must share one partition count (co-partitioning), got {sorted(map(str, partitions))}")
    for name, topic in topics.items():
        policy = topic["spec"].get("config", {}).get("cleanup.policy")
        if name in SPEC_TOPICS and policy != SPEC_TOPICS[name]:
            problems.append(f"{source}: KafkaTopic {name} cleanup.policy {policy}, SPEC 3 says {SPEC_TOPICS[name]}")
        if not topic["spec"].get("replicas"):
            problems.append(f"{source}: KafkaTopic {name} has no replicas")
    input_partitions = topics.get("touchpoint.events.v1", {}).get("spec", {}).get("partitions", 0)

    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind.get("ScaledObject", [])}
    if set(scaled) != STREAM_PROCESSORS:
        problems.append(f"{source}: ScaledObjects for {sorted(scaled)}, expected {sorted(STREAM_PROCESSORS)}")
    for name, obj in scaled.items():
        spec = obj["spec"]
        if spec.get("minReplicaCount", 0) < 1:
            problems.append(f"{source}: ScaledObject {name}: minReplicaCount must be at least 1")
        if spec.get("maxReplicaCount", 100) > input_partitions:
            problems.append(f"{source}: ScaledObject {name}: maxReplicaCount {spec.get('maxReplicaCount')} above the {input_partitions} partitions")
        for trigger in spec.get("triggers", []):
            meta = trigger.get("metadata", {})
            # Its own group on the events, or, with identity resolution, its resolved group on them.
            own = (meta.get("consumerGroup"), meta.get("topic")) in [(name, "touchpoint.events.v1"), (f"{name}-resolved", "touchpoint.resolved.v1")]
            if trigger.get("type") != "kafka" or not own:
                problems.append(f"{source}: ScaledObject {name}: expected a kafka trigger on its own group and the (resolved) events topic")

    if not by_kind.get("PodMonitor"):
        problems.append(f"{source}: no PodMonitor")
    alerts = [r["alert"].lower() for rule in by_kind.get("PrometheusRule", []) for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    for word in ALERTS:
        if not any(word in alert for alert in alerts):
            problems.append(f"{source}: no alert about {word}")
    return problems


def lint_dashboard(path):
    dashboard = json.load(open(path))
    titles = [p.get("title", "").lower() for p in dashboard.get("panels", [])]
    problems = [f"{path}: no panel about {word}" for word in PANELS if not any(word in t for t in titles)]
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if "omnistream_" not in target.get("expr", ""):
                problems.append(f"{path}: panel {panel.get('title')!r} queries no omnistream metric")
    return problems


def lint_image(dockerfile):
    """The image holds every registered binary (the manifests start them by path)."""
    text = dockerfile.read_text()
    return [f"{dockerfile}: the image does not copy target/release/{name}" for name in sorted(STREAM_PROCESSORS | HTTP | {"identity-resolver"}) if f"target/release/{name} " not in text]


def main(dashboard, rendered):
    problems = lint_dashboard(dashboard) + lint_image(Path(__file__).resolve().parents[1] / "container" / "Dockerfile")
    for path in rendered:
        objects = [o for o in yaml.safe_load_all(open(path)) if o]
        problems += lint(objects, path)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
