#!/usr/bin/env python3
"""The offline audit, whole process, binaries side by side (issue 15).

    python3 scripts/bench-offline.py [--runs 10] [--threads 2] [--events 100000] BIN [BIN ...]

Generates the input once (`shareaudit generate --count N --violation-share
0.2`, seed 42, into --dir), then runs `shareaudit audit` over it with each
binary in turn, round after round (alternating, so that a machine whose
speed wanders treats them alike). Wall time from fork to exit; CPU (user
and system) from wait4. Prints medians and bests, and checks that every
binary wrote the same output. BENCHMARKS.md has the figures.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("bins", nargs="+")
p.add_argument("--runs", type=int, default=10)
p.add_argument("--threads", default="2")
p.add_argument("--events", type=int, default=100_000)
p.add_argument("--dir", default="/tmp/shareaudit-bench-offline")
a = p.parse_args()

os.makedirs(a.dir, exist_ok=True)
events = os.path.join(a.dir, f"ev-{a.events}.jsonl")
states = os.path.join(a.dir, f"st-{a.events}.jsonl")
if not os.path.exists(events):
    subprocess.run([a.bins[0], "generate", "--count", str(a.events), "--violation-share", "0.2",
                    "--events", events + ".tmp", "--state", states], check=True)
    os.rename(events + ".tmp", events)

results = [[] for _ in a.bins]
outputs = []
for _ in range(a.runs):
    for i, b in enumerate(a.bins):
        out = os.path.join(a.dir, f"out-{i}.jsonl")
        args = [b, "audit", "--events", events, "--state", states, "--hmac-key", "test-key-16bytes",
                "--detected-at", "2026-12-01T00:00:00Z", "--threads", a.threads]
        with open(out, "w") as f:
            t = time.perf_counter()
            proc = subprocess.Popen(args, stdout=f, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: violations found
            sys.exit(f"{b} failed: {status}")
        results[i].append((wall, ru.ru_utime + ru.ru_stime))
        if len(outputs) < len(a.bins):
            outputs.append(out)

print(f"| binary | --threads {a.threads}: wall median | best | events/s (best) | CPU median | runs |")
print("|---|---:|---:|---:|---:|---|")
for b, r in zip(a.bins, results):
    walls = sorted(w for w, _ in r)
    cpu = statistics.median(c for _, c in r)
    print(f"| {b} | {statistics.median(walls):.3f} s | {walls[0]:.3f} s | {a.events / walls[0]:,.0f} "
          f"| {cpu:.3f} s | {' '.join(f'{w:.3f}' for w in walls)} |")
first = open(outputs[0], "rb").read()
for b, out in zip(a.bins[1:], outputs[1:]):
    if open(out, "rb").read() != first:
        sys.exit(f"{b} wrote another output than {a.bins[0]}")
print(f"outputs identical ({len(first):,} bytes)" if len(a.bins) > 1 else f"output {len(first):,} bytes")
