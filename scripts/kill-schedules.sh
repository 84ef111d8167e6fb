#!/usr/bin/env bash
# Randomised kill schedules of the rate stage against the offline truth
# (tests/e2e.rs, `random_kill_schedules_give_the_offline_truth`), on a tansu
# of their own: each schedule picks from its seed the stream's length and
# rate, the replicas, when one is SIGKILLed and when it comes back.
#
#   scripts/kill-schedules.sh [COUNT] [FIRST_SEED]     (default 200 from 1)
#
# Prints each schedule, the differences if any, and the time it took.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-200}
first=${2:-1}
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "scripts/kill-schedules.sh: tansu missing; run scripts/e2e.sh once" >&2; exit 2; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
tansu broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  > target/tansu-schedules.log 2>&1 &
tansu_pid=$!
trap 'kill $tansu_pid 2>/dev/null || true; wait $tansu_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  sleep 0.2
done
start=$(date +%s)
SHAREAUDIT_SCHEDULES=$count SHAREAUDIT_SCHEDULE_SEED=$first SHAREAUDIT_E2E_BROKERS="127.0.0.1:$port" \
  cargo test --locked --release --test e2e random_kill_schedules -- --ignored --nocapture 2>&1 \
  | grep -E "^schedule|differ|missing|test result"
echo "scripts/kill-schedules.sh: $count schedules from seed $first in $(( $(date +%s) - start )) s"
