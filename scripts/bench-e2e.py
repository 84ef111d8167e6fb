#!/usr/bin/env python3
"""End-to-end benchmark: shareaudit through tansu on loopback.

    python3 scripts/bench-e2e.py [--events 300000]

Builds the release binary and the bare consume loop, starts tansu (memory
storage) on a free port, and measures, in one run:

1. throughput: a topic of N generated events (Avro, Confluent framing, 6
   partitions) read by the bare loop (examples/bare_consume.rs: the
   daemon's own consumer, nothing else), then audited by one shareaudit
   replica; each from the beginning, in its own group. Events per second
   from the first record judged to the last.
2. latency: live traffic at 5,000 events/s into a running replica;
   shareaudit_event_to_alert_seconds (occurred_at to the broker's
   acknowledgement of the violation) read from /metrics, p50/p99 from its
   buckets.
3. memory: a replica with 1,000,000 users in the consent table: VmRSS and
   VmHWM from /proc after the table is loaded and events were judged.
4. scaling: one replica, two, then three in one group, each group new on a
   topic filled beforehand with --scale-events events. Once the group has
   settled (every partition owned, each replica some), events per second
   over a window of --window seconds while every replica still has a
   backlog: the steady state, with no generator running and no replica
   starting late. Then three bare loops at once on that topic, for what the
   broker serves. The CPU the broker and the replicas used in the window
   says which was the limit.

With --baseline-bin PATH (a shareaudit built from an earlier commit), the
throughput of one replica is measured for both binaries, alternately,
--rounds times each (2 unless told), on the same topic in the same run,
and compared by the medians; --sections picks the parts to run
(throughput,latency,memory,scaling). In the latency part, the events held
for the consent reader (shareaudit_consent_held_records: it is behind them)
and those only waiting for the next end probe to confirm it is current
(shareaudit_consent_confirming_records) are sampled every 100 ms all
through the live traffic, and told apart by whether the consent states the
traffic begins with (20,000, at full speed: the reader genuinely behind)
are all applied yet: after that is the steady state.

If the broker skips records (tansu 0.6, after a paused fetch resumes inside
a producer batch), the replica's figures are over the events it judged, and
a warning says how many never came (see `judge_rate`).

Prints a Markdown table for BENCHMARKS.md. It takes a few minutes and the
machine must be otherwise idle; the test command runs only a smoke
(`--debug --events 3000 --sections throughput`: the test build, no figures).
"""
import argparse
import json
import resource
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# --debug (the test command's smoke): the test build, whose figures mean nothing.
PROFILE = "debug" if "--debug" in sys.argv else "release"
BIN = os.environ.get("SHAREAUDIT_BIN") or os.path.join(ROOT, f"target/{PROFILE}/shareaudit")
BARE = os.path.join(ROOT, f"target/{PROFILE}/examples/bare_consume")
SCHEMA = os.path.join(ROOT, "schemas/DataSharingEvent.avsc")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except Exception:
        return ""


def total(text, name, label=None):
    n = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and (label is None or label in line):
            n += float(line.rsplit(" ", 1)[1])
    return n


class Bench:
    def __init__(self):
        self.port = free_port()
        self.brokers = f"127.0.0.1:{self.port}"
        self.procs = []
        self.log = open(os.path.join(ROOT, "target/bench-e2e.log"), "w")

    def topic(self, name, partitions):
        subprocess.run(["tansu", "topic", "create", "--broker", f"tcp://{self.brokers}", "--partitions",
                        str(partitions), name], check=True, stdout=self.log, stderr=self.log)

    def generate(self, events_topic, consent_topic, count, users, rate=0, seed=7, wait=True):
        """Produces generated traffic; with `wait=False`, returns the running generator."""
        p = subprocess.Popen([BIN, "generate", "--brokers", self.brokers, "--count", str(count), "--users", str(users),
                              "--seed", str(seed), "--rate", str(rate), "--events-topic", events_topic,
                              "--consent-topic", consent_topic, "--violation-share", str(self.violation_share)],
                             stdout=self.log, stderr=self.log)
        if wait and p.wait() != 0:
            raise SystemExit(f"generate into {events_topic} failed")
        return p

    def daemon(self, group, events, consent, tag, extra=(), binary=None):
        """A replica in `group`. Each group has its own recipient-rate topic: a
        new group's rate stage reads its topic from the start, so a shared one
        would make every later group replay the candidates of all before it."""
        port = free_port()
        p = subprocess.Popen(
            [binary or BIN, "run", "--brokers", self.brokers, "--group-id", group, "--events-topic", events,
             "--consent-topic", consent, "--violations-topic", f"violations-{tag}", "--dead-letter-topic",
             f"dlq-{tag}", "--recipient-rate-topic", f"rate-{group}", "--listen", f"127.0.0.1:{port}",
             "--schema-id", f"1={SCHEMA}", *extra],
            env={**os.environ, "SHAREAUDIT_HMAC_KEY": "bench-key-sixteen-bytes", "SHAREAUDIT_LOG": "warn"},
            stdout=self.log, stderr=self.log)
        self.procs.append(p)
        return p, port

    def stop(self, p):
        p.terminate()
        p.wait(timeout=60)

    def judge_rate(self, ports, n, pids=(), settle=20.0):
        """Events per second over the replicas on `ports`, first judged to the
        n-th; and the cores the broker and the replicas (`pids`) used meanwhile.
        If the count stops short of n for `settle` seconds, the broker skipped
        records (tansu 0.6 answers a fetch that starts inside a producer batch
        with the next batch: after a pause, the rest of the batch is never
        delivered; the replica logs "offsets skipped"). The figures are then
        over the events judged, up to the last one, and `self.short` says how
        many never came."""
        first, deadline = None, time.time() + 900
        last = (0, None, None)  # (judged, when, CPU then)
        while time.time() < deadline:
            done = sum(total(metrics(p), "shareaudit_events_total") for p in ports)
            now = time.time()
            if done > 0 and first is None:
                first = now
                cpu0 = (cpu_seconds([self.tansu.pid]), cpu_seconds(pids))
            if first is not None and done != last[0]:
                last = (done, now, (cpu_seconds([self.tansu.pid]), cpu_seconds(pids)))
            stalled = last[1] is not None and now - last[1] >= settle
            if done >= n or stalled:
                judged, at, cpu = last
                wall = at - first
                self.judged, self.short = judged, n - judged
                self.cpu_used = cpu[1] - cpu0[1]
                self.cores = ((cpu[0] - cpu0[0]) / wall, self.cpu_used / wall)
                if self.short:
                    print(f"warning: {self.short} of {n} events never reached the replica (tansu skipped them; "
                          f"'offsets skipped' in target/bench-e2e.log); figures over the {judged:.0f} judged",
                          file=sys.stderr)
                return judged / wall
            time.sleep(0.05)
        raise SystemExit(f"timed out: {done} of {n} judged")

    def bare(self, topic, group, n):
        """The bare loop's events per second on `topic`, and the broker's cores meanwhile; the
        loop's own CPU seconds go to `self.bare_cpu`."""
        before, started = cpu_seconds([self.tansu.pid]), time.time()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([BARE, self.brokers, topic, group, str(n)], check=True, capture_output=True,
                             text=True).stdout
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.bare_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        broker = (cpu_seconds([self.tansu.pid]) - before) / (time.time() - started)
        return json.loads(out)["events_per_second"], f"cores busy: broker {broker:.2f} (from the loop's start)"

    def settle(self, ports, topic, partitions):
        """Waits until the replicas on `ports` own every partition of `topic`, each some."""
        label = f'topic="{topic}"'
        deadline = time.time() + 120
        while time.time() < deadline:
            owned = [total(metrics(p), "shareaudit_assigned_partitions", label) for p in ports]
            if sum(owned) == partitions and all(o > 0 for o in owned):
                return
            time.sleep(0.2)
        raise SystemExit(f"the group did not settle: {owned}")

    def steady_rate(self, group, topic, partitions, m, window):
        """Events per second over `window` seconds once the `group` (a list of (process, port)) has
        settled on `topic`, and the cores the broker and the replicas used in it. Refuses a window
        in which a replica ran out of work: that would measure the backlog, not the replicas."""
        ports, pids = [port for _, port in group], [p.pid for p, _ in group]
        self.settle(ports, topic, partitions)
        judged = lambda: [total(metrics(port), "shareaudit_events_total") for port in ports]
        before, cpu0, started = judged(), (cpu_seconds([self.tansu.pid]), cpu_seconds(pids)), time.time()
        time.sleep(window)
        after, wall = judged(), time.time() - started
        broker, replicas = ((cpu_seconds([self.tansu.pid]) - cpu0[0]) / wall, (cpu_seconds(pids) - cpu0[1]) / wall)
        # Lag only shrinks here (nothing is produced), and each replica refreshes it every 5 s:
        # above zero 6 s after the window, it was above zero all through it.
        time.sleep(6)
        lags = [total(metrics(port), "shareaudit_consumer_lag_messages") for port in ports]
        if sum(after) >= m or not all(lags):
            raise SystemExit(f"a replica ran out of work in the window (lags {lags}, {sum(after):.0f} of {m} judged): "
                             "raise --scale-events")
        shares = ", ".join(f"{a - b_:,.0f}" for a, b_ in zip(after, before))
        return ((sum(after) - sum(before)) / wall,
                f"judged per replica in {wall:.1f} s: {shares}; {sum(before):,.0f} judged before the window; "
                f"cores busy: broker {broker:.2f}, shareaudit {replicas:.2f} of {os.cpu_count()}")

    def cores_note(self):
        broker, replicas = self.cores
        return f"cores busy: broker {broker:.2f}, shareaudit {replicas:.2f}"


def cpu_seconds(pids):
    """User and system CPU seconds used so far by the processes `pids`."""
    ticks = os.sysconf("SC_CLK_TCK")
    n = 0.0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        n += (int(fields[11]) + int(fields[12])) / ticks
    return n


def quantile(text, name, q):
    buckets = []
    for line in text.splitlines():
        m = re.match(rf'{name}_bucket{{le="([^"]+)"}} (\S+)', line)
        if m:
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2))))
    count = buckets[-1][1] if buckets else 0
    for le, c in buckets:
        if count and c >= q * count:
            return le, count
    return None, count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--scale-events", type=int, default=1_500_000,
                    help="events on the scaling topic: enough that three replicas still have a backlog after the window")
    ap.add_argument("--window", type=float, default=4.0, help="seconds of steady state measured per group")
    ap.add_argument("--baseline-bin", help="a shareaudit binary of an earlier commit, measured beside this tree's")
    ap.add_argument("--sections", default="throughput,latency,memory,scaling")
    ap.add_argument("--debug", action="store_true", help="the test build: a smoke that the harness works, no figures")
    ap.add_argument("--rounds", type=int, default=2,
                    help="with --baseline-bin: rounds of this tree then the baseline, on one topic")
    ap.add_argument("--violation-share", type=float, default=0.15,
                    help="share of violating events generated (shareaudit generate's default, 0.15)")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    subprocess.run(["cargo", "build", *([] if args.debug else ["--release"]), "--locked", "--bin", "shareaudit",
                    "--example", "bare_consume"], cwd=ROOT, check=True)
    b = Bench()
    b.violation_share = args.violation_share
    tansu = b.tansu = subprocess.Popen(["tansu", "broker", "--storage-engine", "memory://tansu/", "--listener-url",
                              f"tcp://{b.brokers}", "--advertised-listener-url", f"tcp://{b.brokers}"],
                             stdout=b.log, stderr=b.log)
    rows = []
    try:
        time.sleep(2)
        n = args.events
        b.topic("bench-events", 6)
        b.topic("bench-consent", 2)
        for tag in ("one", "scale", "live", "mem"):
            b.topic(f"violations-{tag}", 3)
            b.topic(f"dlq-{tag}", 1)
        b.generate("bench-events", "bench-consent", n, 20_000)

        bare, note = b.bare("bench-events", "bare", n)
        rows.append(("bare consume loop, 1 consumer", f"{bare:,.0f} events/s", note))

        if "throughput" in sections:
            p, port = b.daemon("one", "bench-events", "bench-consent", "one")
            one = b.judge_rate([port], n, [p.pid])
            waited = total(metrics(port), "shareaudit_consent_wait_seconds_count")
            b.stop(p)
            rows.append(("shareaudit, 1 replica", f"{one:,.0f} events/s",
                         f"{one / bare:.0%} of the bare loop (target 95%); {b.cores_note()}; "
                         f"{waited:.0f} waits for the consent reader"))
            per_event = (b.cpu_used / b.judged * 1e6, b.bare_cpu / n * 1e6)
            rows.append(("CPU per event, same topic", f"shareaudit {per_event[0]:.1f} µs, bare loop {per_event[1]:.1f} µs",
                         f"{per_event[0]:.1f} and {per_event[1]:.1f} CPU seconds per million events; "
                         f"the daemon's own work {per_event[0] - per_event[1]:.1f} µs an event"))
        if "throughput" in sections and args.baseline_bin:
            # This tree and the baseline alternately, --rounds times each, on the same topic.
            got = {"this tree": [], "baseline": []}
            for i, (name, binary) in enumerate([("this tree", BIN), ("baseline", args.baseline_bin)] * args.rounds):
                p, port = b.daemon(f"cmp-{i}", "bench-events", "bench-consent", "one", binary=binary)
                rate_ = b.judge_rate([port], n, [p.pid])
                b.stop(p)
                got[name].append((rate_, b.cpu_used / b.judged * 1e6))
            # Medians: a run caught by the machine's wander moves a mean, not a median.
            mid = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in got.items()}
            for name in ("this tree", "baseline"):
                runs = ", ".join(f"{r:,.0f}" for r, _ in got[name])
                cpus = ", ".join(f"{c:.1f}" for _, c in got[name])
                rows.append((f"1 replica, {name}" + ("" if name == "this tree" else f" ({os.path.basename(args.baseline_bin)})"),
                             f"{mid[name][0]:,.0f} events/s (median)",
                             f"runs {runs}; CPU {mid[name][1]:.1f} µs an event (median; runs {cpus})"))
            change = mid["this tree"][0] / mid["baseline"][0] - 1
            wins = sum(a < b for (_, a), (_, b) in zip(got["this tree"], got["baseline"]))
            rows.append(("throughput, this tree against the baseline", f"{change:+.1%}",
                         f"CPU per event {mid['this tree'][1] - mid['baseline'][1]:+.1f} µs by the medians; "
                         f"this tree used less in {wins} of {args.rounds} rounds (target: no loss beyond 5%)"))

        # Latency under live traffic at 5,000 events/s.
        if "latency" in sections:
            b.topic("live-events", 6)
            b.topic("live-consent", 2)
            b.generate("live-events", "live-consent", 0, 20_000)
            # tansu holds a fetch for fetch.wait.max.ms (librdkafka: 500 ms) even when records are there.
            p, port = b.daemon("live", "live-events", "live-consent", "live", ["-X", "consumer.fetch.wait.max.ms=10"])
            while total(metrics(port), "shareaudit_ready") < 1:
                time.sleep(0.2)
            gen = b.generate("live-events", "live-consent", 100_000, 20_000, rate=5000, wait=False)
            held, confirming, burst_held = [], [], []
            # The 20,000 states loaded before, and the 20,000 the live traffic begins with.
            states = 2 * 20_000
            while gen.poll() is None:
                text = metrics(port)
                h = total(text, "shareaudit_consent_held_records")
                if total(text, "shareaudit_consent_records_total") < states:
                    burst_held.append(h)
                else:
                    held.append(h)
                    confirming.append(total(text, "shareaudit_consent_confirming_records"))
                time.sleep(0.1)
            if gen.returncode != 0:
                raise SystemExit("generate into live-events failed")
            time.sleep(3)
            text = metrics(port)
            p50, alerts = quantile(text, "shareaudit_event_to_alert_seconds", 0.50)
            p99, _ = quantile(text, "shareaudit_event_to_alert_seconds", 0.99)
            waited = total(text, "shareaudit_consent_wait_seconds_count")
            wait_p99, _ = quantile(text, "shareaudit_consent_wait_seconds", 0.99)
            stale = total(text, "shareaudit_consent_stale_total")
            judged = total(text, "shareaudit_events_total")
            b.stop(p)
            rows.append(("event-to-alert latency at 5,000 events/s", f"p50 <= {p50 * 1000:.0f} ms, p99 <= {p99 * 1000:.0f} ms",
                         f"{alerts:.0f} alerts; bucket bounds (target p99 < 100 ms)"))
            busy = sum(1 for h in held if h > 0)
            confirm_busy = sum(1 for c in confirming if c > 0)
            rows.append(("events held for the consent reader (behind them), live traffic, steady state",
                         f"max {max(held, default=0):.0f}, non-zero in {busy} of {len(held)} samples",
                         f"sampled every 100 ms once the traffic's first 20,000 consent states were applied; "
                         f"{waited:.0f} of {judged:.0f} events waited at all"
                         + (f" (p99 of the wait <= {wait_p99 * 1000:.0f} ms)" if waited else "")
                         + f"; {stale:.0f} judged stale (target: 0 held)"))
            burst_busy = sum(1 for h in burst_held if h > 0)
            rows.append(("events held for the consent reader, while the traffic's 20,000 consent states are applied",
                         f"max {max(burst_held, default=0):.0f}, non-zero in {burst_busy} of {len(burst_held)} samples",
                         "the reader genuinely behind a burst: what the gauge is for"))
            rows.append(("events confirming (the reader current, the next end probe awaited), live traffic",
                         f"max {max(confirming, default=0):.0f}, non-zero in {confirm_busy} of {len(confirming)} samples",
                         "the time synchronisation's cost in the steady state: one probe, every 5 ms"))

        # Memory with 1,000,000 users in the consent table.
        if "memory" in sections:
            b.topic("mem-events", 6)
            b.topic("mem-consent", 6)
            b.generate("mem-events", "mem-consent", 50_000, 1_000_000)
            p, port = b.daemon("mem", "mem-events", "mem-consent", "mem")
            deadline = time.time() + 900
            while total(metrics(port), "shareaudit_events_total") < 50_000 and time.time() < deadline:
                time.sleep(0.5)
            users = total(metrics(port), "shareaudit_consent_table_users")
            status = open(f"/proc/{p.pid}/status").read()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
            hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
            b.stop(p)
            rows.append(("resident memory, 1,000,000 users", f"{rss:.0f} MiB (peak {hwm:.0f} MiB)",
                         f"{users:,.0f} users in the table, 50,000 events judged (target 300 MiB)"))

        if "scaling" in sections:
            # Scaling: groups of one, two and three replicas, each new on a topic filled beforehand,
            # measured in the steady state once the group has settled.
            m = args.scale_events
            b.topic("scale-events", 6)
            b.topic("scale-consent", 2)
            b.generate("scale-events", "scale-consent", m, 20_000)
            rates = {}
            for replicas in (1, 2, 3):
                group_id = f"scale-{replicas}"
                group = [b.daemon(group_id, "scale-events", "scale-consent", "scale") for _ in range(replicas)]
                rate_, note = b.steady_rate(group, "scale-events", 6, m, args.window)
                for p, _ in group:
                    b.stop(p)
                rates[replicas] = rate_
                rows.append((f"shareaudit, {replicas} replica{'s' if replicas > 1 else ''} in one group, steady state",
                             f"{rate_:,.0f} events/s", f"{rate_ / rates[1]:.2f}x one replica; {note}"))

            # What the broker serves at most: three bare loops at once on the last topic, each in its
            # own group, each reading it all.
            before, started = cpu_seconds([tansu.pid]), time.time()
            loops = [subprocess.Popen([BARE, b.brokers, "scale-events", f"bare-3-{i}", str(n)], stdout=subprocess.PIPE,
                                      text=True) for i in range(3)]
            outs = [json.loads(l.communicate()[0]) for l in loops]
            wall = max(o["seconds"] for o in outs)
            broker = (cpu_seconds([tansu.pid]) - before) / (time.time() - started)
            rows.append(("3 bare loops at once", f"{3 * n / wall:,.0f} events/s in all",
                         f"what the broker serves three readers; cores busy: broker {broker:.2f} (from the loops' start)"))
    finally:
        for p in b.procs:
            if p.poll() is None:
                p.kill()
        tansu.terminate()
        tansu.wait()
    flag, smoke = (" --debug", "; the test build: a smoke, no figures") if args.debug else ("", "")
    if args.violation_share != 0.15:
        flag += f" --violation-share {args.violation_share}"
    print(f"\n`python3 scripts/bench-e2e.py --events {args.events}{flag}` "
          f"({os.cpu_count()} cores, tansu memory storage, loopback{smoke})\n")
    print("| measure | figure | note |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    sys.exit(main())
