#!/usr/bin/env bash
# The shipped deployment files, checked offline:
# - deploy/kubernetes: rendered with `kubectl kustomize` (dummy secrets in a
#   scratch copy), every resource validated against the Kubernetes 1.37
#   schemas (kubernetes-validate --strict), then the wiring between them
#   (scripts/deploy_check.py); the settings, policy and key the pods would
#   read pass `shareaudit run --check`;
# - docker-compose.yml: validated against the compose specification's JSON
#   schema (check-jsonschema), every file it mounts exists, and the
#   settings it mounts pass `shareaudit run --check`;
# - Prometheus' configuration for compose: promtool check config.
# Installs what is missing: kubernetes-validate and check-jsonschema from
# PyPI, kubectl from Debian's kubernetes-client.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null || ! command -v check-jsonschema >/dev/null; then
  echo "scripts/deploy-check.sh: installing kubernetes-validate and check-jsonschema (PyPI)"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0'
fi
if ! command -v kubectl >/dev/null; then
  echo "scripts/deploy-check.sh: installing kubectl (Debian kubernetes-client)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi
cargo build --locked --quiet
bin=target/debug/shareaudit

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The policy ConfigMap starts as the default policy.
cmp -s deploy/policy/default.yaml deploy/kubernetes/policy.yaml || {
  echo "deploy/kubernetes/policy.yaml differs from deploy/policy/default.yaml: cp deploy/policy/default.yaml deploy/kubernetes/policy.yaml" >&2
  exit 1
}

# The dashboard is generated from deploy/grafana/dashboard.py.
python3 deploy/grafana/dashboard.py "$scratch/dashboard.json"
cmp -s "$scratch/dashboard.json" deploy/grafana/dashboards/shareaudit.json || {
  echo "deploy/grafana/dashboards/shareaudit.json is stale: python3 deploy/grafana/dashboard.py" >&2
  exit 1
}

# Kubernetes: render with the secrets an operator would add, validate, check the wiring.
cp -r deploy/kubernetes "$scratch/k"
head -c 32 /dev/urandom > "$scratch/k/secrets/hmac.key"
printf 'librdkafka:\n  sasl.username: shareaudit\n  sasl.password: not-a-real-password\n' > "$scratch/k/secrets/kafka-credentials.yaml"
kubectl kustomize "$scratch/k" > "$scratch/rendered.yaml"
kubernetes-validate --strict --quiet "$scratch/rendered.yaml"
python3 scripts/deploy_check.py "$scratch/rendered.yaml" docker-compose.yml
"$bin" run --check \
  --config "deploy/kubernetes/settings.yaml,$scratch/k/secrets/kafka-credentials.yaml" \
  --policy deploy/kubernetes/policy.yaml --hmac-key-file "$scratch/k/secrets/hmac.key"

# docker-compose.yml and what it mounts.
check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
SHAREAUDIT_HMAC_KEY=compose-check-key-16b "$bin" run --check --config deploy/compose/settings.yaml --policy deploy/policy/default.yaml
promtool check config --syntax-only deploy/prometheus/prometheus.yml >/dev/null
echo "deploy-check: Kubernetes manifests, compose file and their settings all check"
