#!/usr/bin/env bash
# The test command of README.md: every test of the project, on this machine.
#
# - unit and integration tests (cargo test): the model and codecs, policy
#   loading, detectors, the engine, every policy case through the engine and
#   through the `shareaudit audit` binary;
# - the benchmarks in test mode (each runs once: they still build and work);
# - the shipped policy's own test cases, with coverage of every rule;
# - a smoke of the offline benchmark (scripts/bench-offline.py), of the
#   alternating criterion comparison (scripts/bench-alternate.py) and of
#   the end-to-end one (scripts/bench-e2e.py, after the tansu tests);
# - a smoke of every fuzz target;
# - the daemon against a real broker (tansu);
# - the compliance report rendered in a real browser.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "scripts/test.sh: cargo not found; install Rust (stable 1.95) first" >&2; exit 2; }

cargo test --locked --lib --tests --benches
cargo run --locked --quiet -- policy check deploy/policy/default.yaml
cargo run --locked --quiet -- policy test deploy/policy/tests --coverage

# A smoke of the offline benchmark (the figures come from release builds:
# BENCHMARKS.md): it generates, audits with two binaries, compares the outputs.
bench_dir=$(mktemp -d)
python3 scripts/bench-offline.py --runs 1 --events 2000 --dir "$bench_dir" target/debug/shareaudit target/debug/shareaudit
rm -rf "$bench_dir"

# A smoke of the alternating criterion comparison (scripts/bench-alternate.py):
# the test build of the audit bench against itself, one round of one workload.
audit_bench=$(cargo test --locked --bench audit --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "audit" and m.get("executable"):
        print(m["executable"])')
python3 scripts/bench-alternate.py --rounds 1 --filter 'audit/f_' "$audit_bench" "$audit_bench"

# Every fuzz target under AFL++ for 10 s (installs cargo-afl when missing);
# the campaigns proper are `scripts/fuzz.sh` (FUZZING.md).
bash scripts/fuzz.sh --seconds 10 --execs 1000000 --out fuzz/out-smoke

# Alert rules (promtool unit tests) and Alertmanager routes (amtool); installs Debian's packages when missing.
bash scripts/observability.sh

# The daemon against a real broker (tansu; installed when missing).
bash scripts/e2e.sh

# A smoke of the end-to-end benchmark (scripts/bench-e2e.py): its own tansu,
# the test build, 3,000 events through the bare loop and one replica, then
# one round of the alternating comparison (the test build against itself).
python3 scripts/bench-e2e.py --debug --events 3000 --sections throughput --baseline-bin target/debug/shareaudit --rounds 1

# The compliance report in a real browser (chromium headless; installed when
# missing): of the shipped examples, and the one the e2e tests read from the topics.
bash scripts/report-browser.sh
