#!/usr/bin/env bash
# What the security team and on-call see, checked against the real tools:
# - the alert rules (promtool check and unit tests), the Alertmanager routes
#   (amtool), the runbook links;
# - end to end (scripts/observability_e2e.py): the demo scraped by a real
#   Prometheus with the rules, alerts routed by a real Alertmanager to a
#   receiver of the test; every dashboard and alert query returns data, and a
#   critical violation pages with its rule and clause;
# - the Kubernetes manifests and the compose file (scripts/deploy-check.sh).
# Installs Debian's prometheus and prometheus-alertmanager when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v amtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then
  echo "scripts/observability.sh: installing prometheus and prometheus-alertmanager (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null
fi

promtool check rules deploy/prometheus/shareaudit-alerts.yml
(cd deploy/prometheus/tests && promtool test rules shareaudit-alerts.test.yml)
amtool check-config deploy/alertmanager/alertmanager.yml
# Critical pages; everything else is a ticket.
amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml --verify.receivers=pager severity=critical rule=cross_border.prohibited 2>/dev/null
amtool config routes test --config.file=deploy/alertmanager/alertmanager.yml --verify.receivers=ticket-queue severity=warning rule=purpose.undeclared 2>/dev/null
# Every runbook link of the rules has its section.
for anchor in $(grep -o 'docs/runbook.md#[a-z]*' deploy/prometheus/shareaudit-alerts.yml | cut -d'#' -f2 | sort -u); do
  grep -qi "^## $anchor\$" docs/runbook.md || { echo "docs/runbook.md has no section for #$anchor"; exit 1; }
done
echo "observability: rules, rule tests, Alertmanager routes and runbook links all check"

cargo build --locked --quiet
python3 scripts/observability_e2e.py target/debug/shareaudit
bash scripts/deploy-check.sh
