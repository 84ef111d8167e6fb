#!/usr/bin/env bash
# End-to-end tests against a real Kafka-protocol broker: tansu, in memory,
# on a free loopback port (and one on SQLite that a test restarts). Installs
# tansu when it is missing or lacks SQLite (a build of about twenty minutes,
# once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
# tansu with memory storage (dynostore) for most tests, and SQLite (libsql)
# for the broker-restart test, whose broker must keep its data.
tansu_has_sqlite() {
  python3 - <<'PY'
import json, os, sys
home = os.environ.get("CARGO_HOME") or os.path.expanduser("~/.cargo")
try:
    installs = json.load(open(os.path.join(home, ".crates2.json")))["installs"]
except (OSError, ValueError, KeyError):
    sys.exit(1)
sys.exit(0 if any(k.startswith("tansu ") and "libsql" in v.get("features", []) for k, v in installs.items()) else 1)
PY
}
if ! command -v tansu >/dev/null || ! tansu_has_sqlite; then
  echo "scripts/e2e.sh: installing tansu (cargo install tansu --locked --features dynostore,libsql; about 20 minutes)"
  cargo install tansu --locked --features dynostore,libsql
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
tansu broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  > target/tansu-e2e.log 2>&1 &
tansu_pid=$!
trap 'kill $tansu_pid 2>/dev/null || true; wait $tansu_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 $tansu_pid 2>/dev/null || { echo "tansu exited:"; cat target/tansu-e2e.log; exit 1; }
  sleep 0.2
done

echo "scripts/e2e.sh: tansu on 127.0.0.1:$port"
SHAREAUDIT_E2E_BROKERS="127.0.0.1:$port" cargo test --locked --test e2e -- --ignored --test-threads=1 --skip random_kill_schedules
# A few randomised failure schedules (seeds 1 to 4 unless
# SHAREAUDIT_SCHEDULE_SEED says otherwise); scripts/kill-schedules.sh runs hundreds.
SHAREAUDIT_SCHEDULES=${SHAREAUDIT_SCHEDULES:-4} SHAREAUDIT_SCHEDULE_SEED=${SHAREAUDIT_SCHEDULE_SEED:-1} \
  SHAREAUDIT_E2E_BROKERS="127.0.0.1:$port" cargo test --locked --test e2e random_kill_schedules -- --ignored
