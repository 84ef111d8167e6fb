#!/usr/bin/env bash
# Where one replica's CPU goes under load: scripts/bench-e2e.py's
# throughput section (200,000 Avro events through tansu) with the daemon
# under `perf record` (DWARF call graphs), then every sample put in one
# bucket by its stack: consume, decode, audit, outputs, the rate stage,
# consent, commit bookkeeping, metrics, the runtime. BENCHMARKS.md has a
# run. Needs perf (Debian's linux-perf) and tansu; the machine otherwise idle.
#
#   scripts/profile-daemon.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-200000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --locked --bin shareaudit --example bare_consume >/dev/null
bin=$(pwd)/target/release/shareaudit
cat >"$work/wrap" <<W
#!/bin/sh
case "\$1" in
  run) exec perf record -F 499 -e cpu-clock --call-graph dwarf,32768 -o "$work/perf.data" -- "$bin" "\$@" ;;
  *) exec "$bin" "\$@" ;;
esac
W
chmod +x "$work/wrap"
SHAREAUDIT_BIN="$work/wrap" python3 scripts/bench-e2e.py --events "$events" --sections throughput | grep -E "^\| (bare|shareaudit)"
perf script -i "$work/perf.data" -F comm,ip,sym 2>/dev/null >"$work/stacks.txt"
python3 - "$work/stacks.txt" <<'P'
import collections, re, sys
samples, stack, comm = [], [], None
for line in open(sys.argv[1], errors="replace"):
    if not line.strip():
        if stack:
            samples.append((comm, stack))
        stack, comm = [], None
    elif not line[0].isspace():
        comm = line.rstrip("\n").rsplit(None, 0)[0].strip()
    else:
        parts = line.strip().split(None, 1)
        stack.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1] if len(parts) > 1 else "?"))
if stack:
    samples.append((comm, stack))

def bucket(comm, stack):
    s = " | ".join(stack)
    if comm.startswith("rdk:"):
        return "consume: librdkafka's threads (fetch, parse, sockets)"
    if comm.startswith("producer poll"):
        return "outputs: the producer's poll thread (delivery reports)"
    if "EventStage::judge" in s:
        i = next(k for k, f in enumerate(stack) if "EventStage::judge" in f)
        below = " | ".join(stack[:i])
        for key, name in (("Engine::audit", "audit: the engine"),
                          ("decode_event_into", "decode"),
                          ("StageIo::deliver", "outputs: encode and produce"),
                          ("outputs::", "outputs: encode and produce"),
                          ("consent", "consent: look-up and wait"),
                          ("prometheus", "metrics")):
            if key in below:
                return name
        return "judge: the rest (headers, marks, clocks)"
    if "RateStage" in s:
        return "the rate stage"
    if "daemon::consent" in s:
        return "consent: the reader"
    if "prometheus" in s or "metrics" in s:
        return "metrics"
    if "ordering" in s or "Marks" in s or "commit" in s:
        return "commit bookkeeping"
    if any(k in s for k in ("poll_queue", "poll_event", "rd_kafka_q_pop", "NativePtr", "rd_kafka_")):
        return "consume: polling and messages"
    if "tokio" in s:
        return "runtime (tokio)"
    return "other"

counts = collections.Counter(bucket(c, s) for c, s in samples)
print(f"\n{len(samples)} samples of the replica's CPU (499 Hz)\n")
print("| where | share |\n|---|---:|")
for k, v in counts.most_common():
    print(f"| {k} | {100 * v / len(samples):.1f}% |")
P
