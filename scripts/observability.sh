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
# The notifications' templates, in both languages, rendered as a receiver would.
for t in title text; do
  amtool template render --template.glob='deploy/alertmanager/templates/*.tmpl' \
    --template.text="{{ template \"shareaudit.$t\" . }}" --template.data=deploy/alertmanager/tests/critical.json \
    | diff -u deploy/alertmanager/tests/critical.$t.expected - \
    || { echo "deploy/alertmanager/templates: shareaudit.$t renders otherwise than deploy/alertmanager/tests/critical.$t.expected"; exit 1; }
done
# Every alert speaks both languages.
for a in summary description; do
  [ "$(grep -c "^          $a: " deploy/prometheus/shareaudit-alerts.yml)" = "$(grep -c "^          ${a}_zh: " deploy/prometheus/shareaudit-alerts.yml)" ] \
    || { echo "deploy/prometheus/shareaudit-alerts.yml: an alert has $a without ${a}_zh"; exit 1; }
done
# Every runbook link of the rules has its section.
for anchor in $(grep -o 'docs/runbook.md#[a-z]*' deploy/prometheus/shareaudit-alerts.yml | cut -d'#' -f2 | sort -u); do
  grep -qi "^## $anchor\$" docs/runbook.md || { echo "docs/runbook.md has no section for #$anchor"; exit 1; }
  # ... named in both languages on the line after its blank.
  grep -i -A2 "^## $anchor\$" docs/runbook.md | grep -q '^\*\*告警 Alert\*\*: .*[^ -~].* · [ -~]*$' \
    || { echo "docs/runbook.md: section #$anchor does not name its alert in Chinese and English"; exit 1; }
done
echo "observability: rules, rule tests, Alertmanager routes and templates, and runbook links all check"

cargo build --locked --quiet
python3 scripts/observability_e2e.py target/debug/shareaudit
bash scripts/deploy-check.sh
