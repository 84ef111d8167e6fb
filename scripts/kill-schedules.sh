#!/usr/bin/env bash
# Randomised failure schedules of the group against the offline truth
# (tests/e2e.rs, `random_kill_schedules_give_the_offline_truth`): each
# schedule picks from its seed the stream's length and rate, the number of
# replicas, when one is SIGKILLed and when it comes back, and whether a
# replica joins and another leaves gracefully. Every alert must be the
# offline `audit`'s, `volume.recipient_rate` included.
#
#   scripts/kill-schedules.sh [COUNT] [FIRST_SEED] [LANES]
#       (default 200 schedules from seed 1, on 3 lanes)
#
# Each lane has a tansu of its own and runs a contiguous share of the
# seeds. Prints each schedule, the differences if any, and the time it
# took; the lanes' whole output is kept in target/kill-schedules/.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-200}
first=${2:-1}
lanes=${3:-3}
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "scripts/kill-schedules.sh: tansu missing; run scripts/e2e.sh once" >&2; exit 2; }
out=target/kill-schedules
mkdir -p "$out"
cargo test --locked --test e2e --no-run 2>/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start=$(date +%s)
per=$(( (count + lanes - 1) / lanes ))
runs=()
for lane in $(seq 0 $(( lanes - 1 ))); do
  from=$(( first + lane * per ))
  n=$(( count - lane * per )); [ "$n" -gt "$per" ] && n=$per
  [ "$n" -le 0 ] && break
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  tansu broker --storage-engine memory://tansu/ \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    > "$out/tansu-$lane.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.2
  done
  (SHAREAUDIT_SCHEDULES=$n SHAREAUDIT_SCHEDULE_SEED=$from SHAREAUDIT_E2E_BROKERS="127.0.0.1:$port" \
    cargo test --locked --test e2e random_kill_schedules -- --ignored --nocapture \
    > "$out/lane-$lane.log" 2>&1; echo "rc=$?" >> "$out/lane-$lane.log") &
  runs+=($!)
done
for r in "${runs[@]}"; do wait "$r" || true; done
failed=0
for f in "$out"/lane-*.log; do
  grep -E "^schedule |differ|missing|panicked|not committed|test result|^rc=" "$f" | grep -v "^rc=0" || true
  grep -q "^rc=0" "$f" || failed=1
done
ran=$(grep -h "^schedule " "$out"/lane-*.log | wc -l)
echo "scripts/kill-schedules.sh: $ran schedules (seeds $first to $(( first + count - 1 )), $lanes lanes) in $(( $(date +%s) - start )) s; $([ $failed = 0 ] && echo "no difference" || echo "DIFFERENCES, see $out")"
exit $failed
