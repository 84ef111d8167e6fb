#!/usr/bin/env bash
# The compliance report in a real browser (Debian's chromium, headless;
# installed with fonts-noto-cjk when missing): `audit --report` over the
# shipped examples, rendered, screenshotted (target/report/report.png),
# then checked by scripts/report_browser.py: no request made by the page
# (chromium's network log; a control page that does make one proves the
# check can fail), every figure of the rendered page equal to
# --summary-json, no user id or data value of the input on the page.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then
  echo "scripts/report-browser.sh: installing chromium and fonts-noto-cjk (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi

out=target/report
mkdir -p "$out"
status=0
cargo run --locked --quiet -- audit --events examples/events.jsonl --state examples/state.jsonl \
  --hmac-key report-key-16bytes --detected-at 2026-12-01T00:00:00Z \
  --report "$out/report.html" --summary-json "$out/summary.json" >/dev/null 2>&1 || status=$?
[ "$status" = 1 ] || { echo "audit exited $status, expected 1 (violations found)" >&2; exit 1; }
python3 scripts/report_browser.py "$out" examples/events.jsonl examples/state.jsonl
# The report from the topics (`shareaudit report`), which the e2e tests
# leave here (scripts/test.sh runs them first): figures the topics do not
# hold must show as unknown, never 0.
if [ -f target/report/topics/report.html ]; then
  python3 scripts/report_browser.py target/report/topics - -
fi
