#!/usr/bin/env bash
# End-to-end tests against a real Kafka-protocol broker: tansu, in memory,
# on a free loopback port. Installs tansu when it is missing (a build of
# about ten minutes, once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null; then
  echo "scripts/e2e.sh: installing tansu (cargo install tansu --locked --features dynostore)"
  cargo install tansu --locked --features dynostore
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
SHAREAUDIT_E2E_BROKERS="127.0.0.1:$port" cargo test --locked --test e2e -- --ignored --test-threads=1
