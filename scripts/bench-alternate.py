#!/usr/bin/env python3
"""Criterion times of two builds of benches/audit.rs, round after round.

    python3 scripts/bench-alternate.py [--rounds 4] [--filter 'audit/(c_|f_)'] BASE_BIN HEAD_BIN

This machine's speed wanders by half within minutes, so one criterion run
of each build, minutes apart, compares the machine more than the code.
Here each round runs both bench binaries (`cargo bench --bench audit
--no-run` builds one; copy it aside per commit) one after the other,
`--warm-up-time 1 --measurement-time 3`, and keeps criterion's middle
estimate per workload. Prints every round, the median (the mean of the
middle two for an even count) and the best, per build, in milliseconds per
10,000 events. BENCHMARKS.md has the figures.
"""
import argparse
import re
import statistics
import subprocess
import sys

p = argparse.ArgumentParser()
p.add_argument("bins", nargs=2)
p.add_argument("--rounds", type=int, default=4)
p.add_argument("--filter", default="audit/(b_|c_|d_|f_)")
a = p.parse_args()

UNIT_MS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0}

# By position: the same binary may be given twice (a smoke, or the noise floor).
times = [{} for _ in a.bins]
for _ in range(a.rounds):
    for i, b in enumerate(a.bins):
        out = subprocess.run(
            [b, "--bench", a.filter, "--warm-up-time", "1", "--measurement-time", "3"],
            capture_output=True, text=True, check=True).stdout
        name = None
        for line in out.splitlines():
            m = re.match(r"^(audit/\S+)", line)
            if m:
                name = m.group(1)
            m = re.search(r"time:\s+\[[\d.]+ \S+ ([\d.]+) (ns|µs|us|ms|s) [\d.]+ \S+\]", line)
            if m and name:
                ms = float(m.group(1)) * UNIT_MS[m.group(2)]
                times[i].setdefault(name, []).append(ms)
                name = None

for b, t in zip(a.bins, times):
    if not t or any(len(v) != a.rounds for v in t.values()):
        sys.exit(f"{b}: no criterion time for some round of {a.filter!r}")

print("| workload | binary | rounds (ms) | median | best | events/s (median) |")
print("|---|---|---|---:|---:|---:|")
for name in sorted({n for t in times for n in t}):
    for b, t in zip(a.bins, times):
        v = t.get(name, [])
        if not v:
            continue
        med = statistics.median(v)
        print(f"| {name} | {b} | {' '.join(f'{x:.2f}' for x in v)} | {med:.2f} | {min(v):.2f} "
              f"| {10_000 / med * 1000:,.0f} |")
