#!/usr/bin/env python3
"""Vendors the JSON schemas `validate.sh` checks the manifests against, so CI needs no network.

Kubernetes: the `v1.34.0-local-strict` schemas of the PyPI package kubernetes-validate (generated
from the Kubernetes OpenAPI spec; strict: unknown fields are errors), only the kinds we use, each
made standalone (the definitions it uses inlined).

CRDs: each CRD's `openAPIV3Schema`, made strict the same way (an object that lists its properties
accepts no others unless it says `x-kubernetes-preserve-unknown-fields`), written as
`crds/<group>/<kind>_<version>.json`, the layout kubeconform looks up:
- KEDA ScaledObject, TriggerAuthentication: Go module github.com/kedacore/keda/v2@v2.18.1,
  config/crd/bases/;
- Prometheus Operator PodMonitor, PrometheusRule: Go module
  github.com/prometheus-operator/prometheus-operator@v0.86.1, example/prometheus-operator-crd/.
Strimzi's KafkaTopic (kafka.strimzi.io/v1) is written by hand in crds/kafka.strimzi.io/, from the
Strimzi API reference: its CRD files are not published to a registry this project can reach (Maven
Central's io.strimzi:api jar holds only classes). Its fields and bounds (partitions >= 1, replicas
1..32767, config an open object, topicName) agree with the validator npm's
@kubernetes-models/strimzi-kafka-operator 1.0.1 generates from Strimzi's CRD; unlike the CRD, which
lets Kubernetes prune an unknown field silently, it rejects one, so a misspelt field fails the check.

    GOFLAGS=-mod=mod GOSUMDB=off go mod download github.com/kedacore/keda/v2@v2.18.1 \\
        github.com/prometheus-operator/prometheus-operator@v0.86.1
    pip download --no-deps kubernetes-validate==1.37.0
    python3 deploy/k8s/schemas/vendor.py <kubernetes_validate wheel> <GOMODCACHE>
"""

import json
import sys
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
KUBERNETES = "v1.34.0-local-strict"
KINDS = [
    "serviceaccount-v1.json",
    "configmap-v1.json",
    "deployment-apps-v1.json",
    "service-v1.json",
    "horizontalpodautoscaler-autoscaling-v2.json",
    "poddisruptionbudget-policy-v1.json",
    "networkpolicy-networking-v1.json",
]
CRDS = [
    ("github.com/kedacore/keda/v2@v2.18.1", "config/crd/bases/keda.sh_scaledobjects.yaml"),
    ("github.com/kedacore/keda/v2@v2.18.1", "config/crd/bases/keda.sh_triggerauthentications.yaml"),
    (
        "github.com/prometheus-operator/prometheus-operator@v0.86.1",
        "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
    ),
    (
        "github.com/prometheus-operator/prometheus-operator@v0.86.1",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ),
]


def strict(schema):
    """Unknown fields become errors wherever the schema lists the known ones."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
                schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def standalone(schema, definitions):
    """The schema with every definition it uses inlined under `definitions` (draft 4, which
    kubeconform compiles with): its references point into a shared `_definitions.json` by an
    absolute path only kubernetes-validate's own resolver knows."""
    used = {}

    def rewrite(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and "#/$defs/" in ref:
                name = ref.split("#/$defs/", 1)[1]
                node["$ref"] = f"#/definitions/{name}"
                if name not in used:
                    used[name] = None
                    used[name] = rewrite(json.loads(json.dumps(definitions[name])))
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)
        return node

    schema = rewrite(schema)
    schema["definitions"] = used
    return schema


def main(wheel, modcache):
    target = HERE / "kubernetes" / KUBERNETES
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        read = lambda name: json.loads(archive.read(f"kubernetes_validate/kubernetes-json-schema/{KUBERNETES}/{name}"))
        definitions = read("_definitions.json")["$defs"]
        for kind in KINDS:
            (target / kind).write_text(json.dumps(standalone(read(kind), definitions), indent=1, sort_keys=True) + "\n")
    for module, path in CRDS:
        crd = yaml.safe_load((Path(modcache) / module / path).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            out = HERE / "crds" / group / f"{kind}_{version['name']}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
