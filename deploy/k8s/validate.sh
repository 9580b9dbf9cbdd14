#!/usr/bin/env bash
# Offline check of the Kubernetes manifests (part of `make test`): renders every overlay with
# kustomize, validates every object strictly (unknown fields are errors) against the JSON schemas
# vendored in schemas/ (Kubernetes 1.34, Strimzi, KEDA, Prometheus Operator) with kubeconform,
# then lints what the schemas cannot say (lint.py). Each check is also run on a broken copy and
# must fail there, so a check that passes everything cannot go unnoticed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

kustomize_version=v5.7.1
kubeconform_version=v0.7.0
cache="${OMNISTREAM_CACHE:-$HOME/.cache/omnistream}"
bin="$cache/bin"
out=target/k8s
mkdir -p "$bin" "$out"

# Pinned tools, built once from the Go module proxy into the cache.
tool() {
  local name="$1" module="$2" version="$3"
  local path="$bin/$name-$version"
  if [[ ! -x "$path" ]]; then
    command -v go >/dev/null || { echo "validate.sh: Go is needed to build $name" >&2; exit 1; }
    echo "validate.sh: building $name $version (once)" >&2
    local tmp; tmp="$(mktemp -d)"
    GOBIN="$tmp" GOFLAGS=-mod=mod go install "$module@$version"
    mv "$tmp/$name" "$path"
    rm -rf "$tmp"
  fi
  echo "$path"
}
kustomize="$(tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$kustomize_version")"
kubeconform="$(tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$kubeconform_version")"
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --user pyyaml

schemas="$PWD/deploy/k8s/schemas"
validate() {
  "$kubeconform" -strict -summary -kubernetes-version 1.34.0 \
    -schema-location "$schemas/kubernetes/{{.NormalizedKubernetesVersion}}-local-strict/{{.ResourceKind}}{{.KindSuffix}}.json" \
    -schema-location "$schemas/crds/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" "$@"
}

rendered=()
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$kustomize" build "$overlay" >"$out/$name.yaml"
  rendered+=("$out/$name.yaml")
  # An `images:` entry whose name does not match the rendered image is ignored without a word.
  images="$(python3 -c 'import sys, yaml
for image in yaml.safe_load(open(sys.argv[1])).get("images", []):
    print(image["newName"] + ":" + str(image["newTag"]))' "$overlay/kustomization.yaml")"
  for image in $images; do
    grep -q "image: $image\$" "$out/$name.yaml" \
      || { echo "validate.sh: overlay $name sets image $image, but its manifests do not use it" >&2; exit 1; }
  done
done
validate "${rendered[@]}"
python3 deploy/k8s/lint.py deploy/k8s/base/dashboards/omnistream.json "${rendered[@]}"

# The checks must catch a typo and an insecure change.
sed '0,/terminationGracePeriodSeconds/s//terminationGracePeriodSecond/' "$out/prod.yaml" >"$out/typo.yaml"
if validate "$out/typo.yaml" >/dev/null 2>&1; then
  echo "validate.sh: kubeconform accepted a misspelled field" >&2; exit 1
fi
sed '0,/readOnlyRootFilesystem: true/s//readOnlyRootFilesystem: false/' "$out/prod.yaml" >"$out/insecure.yaml"
if python3 deploy/k8s/lint.py deploy/k8s/base/dashboards/omnistream.json "$out/insecure.yaml" >/dev/null 2>&1; then
  echo "validate.sh: lint.py accepted a writable root filesystem" >&2; exit 1
fi
# A process grace the kubelet's SIGKILL would cut short (set where settings live: the ConfigMap).
sed '0,/^  LOG_FORMAT: json$/s//  LOG_FORMAT: json\n  SHUTDOWN_GRACE_SECONDS: "28"/' "$out/prod.yaml" >"$out/grace.yaml"
if python3 deploy/k8s/lint.py deploy/k8s/base/dashboards/omnistream.json "$out/grace.yaml" >/dev/null 2>&1; then
  echo "validate.sh: lint.py missed a shutdown grace longer than the pod's" >&2; exit 1
fi
rm -f "$out/typo.yaml" "$out/insecure.yaml" "$out/grace.yaml"
echo "validate.sh: ${#rendered[@]} overlays rendered, valid and linted; a typo, an insecure change and a too long grace are caught"
