#!/usr/bin/env python3
"""The dashboards and alerts against the real program, end to end.

Starts `shareaudit demo` (the daemon on the embedded cluster, with generated
traffic), a real Prometheus scraping it every second with the shipped alert
rules, and a real Alertmanager with the shipped routes, whose webhooks point
at a receiver this script listens on. Then:

1. every PromQL expression of every panel of the shipped dashboard (Grafana's
   variables given test values) parses and returns data;
2. every alert rule's expression parses, and every series selector in it
   returns data (the conditions themselves are meant to be empty mostly);
3. every metric any of them names is one shareaudit exports (or `up`);
4. a critical violation reaches the pager receiver through Prometheus and
   Alertmanager with its rule id and clause in the labels, and nothing in
   any notification looks like personal data;
5. a refused policy reload reaches the ticket receiver.

Usage: observability_e2e.py SHAREAUDIT_BINARY
"""
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RULES = os.path.join(ROOT, "deploy/prometheus/shareaudit-alerts.yml")
DASHBOARD = os.path.join(ROOT, "deploy/grafana/dashboards/shareaudit.json")
ROUTES = os.path.join(ROOT, "deploy/alertmanager/alertmanager.yml")
# What Grafana would substitute; windows fit a one-second scrape.
VARIABLES = {"$__rate_interval": "30s", "$__range": "10m", "$job": "shareaudit", "$namespace": ".*", "$severity": ".*"}
# Personal data as the detectors know it: mobile, resident id, bank card, email, user id.
PERSONAL = [
    re.compile(r"(?<![\d.])1[3-9]\d{9}(?!\d)"),
    re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"),
    re.compile(r"(?<!\d)\d{16,19}(?!\d)"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    re.compile(r"\bu-\d{6}\b"),
]

failures = []


def fail(what):
    failures.append(what)
    print(f"FAIL {what}", file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return True
        except Exception:
            pass
        time.sleep(1)
    fail(f"timed out after {timeout} s waiting for {what}")
    return False


class Receiver(http.server.BaseHTTPRequestHandler):
    received = []  # (path, payload)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        Receiver.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return json.loads(get(url))
    except urllib.error.HTTPError as e:
        return json.loads(e.read().decode())


def substitute(expr):
    for k, v in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(k, v)
    return expr


SELECTOR = re.compile(r"\b((?:shareaudit_[a-z_]+|up))(\{[^}]*\})?")


def main():
    binary = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="shareaudit-obs-")
    procs = []
    try:
        run(binary, tmp, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if failures:
            for name in os.listdir(tmp):
                if name.endswith(".log"):
                    print(f"--- {name} (tail)", file=sys.stderr)
                    with open(os.path.join(tmp, name), errors="replace") as f:
                        print("".join(f.readlines()[-15:]), file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"observability e2e: {len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("observability e2e: dashboard and alert queries return data; a critical violation paged with rule and clause, nothing personal")


def run(binary, tmp, procs):
    metrics_port, prom_port, am_port, recv_port = (free_port() for _ in range(4))
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", recv_port), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()

    # The policy the demo runs: the default, with an exception and a shadow rule so that every panel has data.
    policy = os.path.join(tmp, "policy.yaml")
    with open(os.path.join(ROOT, "deploy/policy/default.yaml")) as f:
        good = f.read()
    good = good.replace(
        "exceptions: []",
        "exceptions:\n  - {rule: transport.unencrypted, match: {purpose: delivery}, owner: logistics-platform, reason: observability test, expires: \"2099-12-31\"}",
    )
    good = good.replace("    example: \"order data to `sf-express` for marketing\"", "    example: \"order data to `sf-express` for marketing\"\n    mode: shadow")
    with open(policy, "w") as f:
        f.write(good)

    def start(name, args):
        log = open(os.path.join(tmp, f"{name}.log"), "w")
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=tmp))

    start("shareaudit", [binary, "demo", "--rate", "300", "--listen", f"127.0.0.1:{metrics_port}", "--policy", policy])

    with open(ROUTES) as f:
        routes = f.read()
    routes = re.sub(r"http://pager-gateway[^\s]*", f"http://127.0.0.1:{recv_port}/pager", routes)
    routes = re.sub(r"http://ticket-bridge[^\s]*", f"http://127.0.0.1:{recv_port}/ticket", routes)
    with open(os.path.join(tmp, "alertmanager.yml"), "w") as f:
        f.write(routes)
    shutil.copytree(os.path.join(os.path.dirname(ROUTES), "templates"), os.path.join(tmp, "templates"))
    start("alertmanager", [shutil.which("alertmanager") or "prometheus-alertmanager", f"--config.file={tmp}/alertmanager.yml", f"--storage.path={tmp}/am",
                           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="])

    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{RULES}"]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]
scrape_configs:
  - job_name: shareaudit
    static_configs: [{{targets: ["127.0.0.1:{metrics_port}"]}}]
""")
    start("prometheus", ["prometheus", f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/tsdb",
                         f"--web.listen-address=127.0.0.1:{prom_port}"])
    prom = f"http://127.0.0.1:{prom_port}"

    if not wait_for("shareaudit /readyz", lambda: get(f"http://127.0.0.1:{metrics_port}/readyz") is not None, 90):
        return
    wait_for("Prometheus ready", lambda: get(f"{prom}/-/ready") is not None, 60)
    wait_for("Alertmanager ready", lambda: get(f"http://127.0.0.1:{am_port}/-/ready") is not None, 60)

    # A good reload, then a refused one (and back), so the reload series exist and the reload alert fires.
    demo = procs[0]
    time.sleep(5)
    os.utime(policy)
    demo.send_signal(signal.SIGHUP)
    time.sleep(3)
    with open(policy, "w") as f:
        f.write(good.replace("rules:", "rules:\n  no.such_rule: {severity: high}", 1))
    demo.send_signal(signal.SIGHUP)
    time.sleep(3)
    with open(policy, "w") as f:
        f.write(good)
    demo.send_signal(signal.SIGHUP)

    # Enough traffic for every rate window, then the checks.
    time.sleep(40)
    exported = set(re.findall(r"^# TYPE (\w+)", get(f"http://127.0.0.1:{metrics_port}/metrics"), re.M))
    exported |= {n + s for n in exported for s in ("_bucket", "_sum", "_count")}
    exported.add("up")

    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    panel_exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    if len(panel_exprs) < 15:
        fail(f"the dashboard has only {len(panel_exprs)} queries")
    for title, expr in panel_exprs:
        check_names(f"panel {title!r}", expr, exported)
        r = query(prom, substitute(expr))
        if r.get("status") != "success":
            fail(f"panel {title!r}: {expr!r} does not run: {r.get('error')}")
        elif not r["data"]["result"]:
            fail(f"panel {title!r}: {substitute(expr)!r} returns no data")

    rules = json.loads(get(f"{prom}/api/v1/rules"))["data"]["groups"]
    alert_rules = [r for g in rules for r in g["rules"] if r["type"] == "alerting"]
    with open(RULES) as f:
        shipped = f.read().count("- alert:")
    if len(alert_rules) != shipped:
        fail(f"Prometheus loaded {len(alert_rules)} alert rules, the file has {shipped}")
    for r in alert_rules:
        check_names(f"alert {r['name']}", r["query"], exported)
        res = query(prom, r["query"])
        if res.get("status") != "success":
            fail(f"alert {r['name']}: its expression does not run: {res.get('error')}")
        for name, matchers in SELECTOR.findall(r["query"]):
            sel = name + matchers
            res = query(prom, sel)
            if res.get("status") != "success" or not res["data"]["result"]:
                fail(f"alert {r['name']}: selector {sel} returns no data")

    # The page: a critical violation, with rule and clause, through Prometheus and Alertmanager.
    def paged():
        for path, body in Receiver.received:
            if path == "/pager":
                for a in json.loads(body)["alerts"]:
                    if a["labels"].get("alertname") in ("ShareauditCriticalViolation", "ShareauditProtectedRuleViolation") \
                            and a["labels"].get("rule") and a["labels"].get("clause"):
                        return a
        return None

    if wait_for("a critical violation at the pager receiver", lambda: paged() is not None, 90):
        a = paged()
        print(f"paged: {a['labels']['alertname']} rule={a['labels']['rule']} clause={a['labels']['clause']} "
              f"recipient={a['labels'].get('recipient')}: {a['annotations'].get('summary')}")
        if not a["annotations"].get("runbook_url", "").startswith("docs/runbook.md#"):
            fail("the page has no runbook link")
        # In Chinese too, with the rule's Chinese title from shareaudit_rule_info.
        zh = a["annotations"].get("summary_zh", "")
        print(f"paged (zh): {zh}")
        if f"（{a['labels']['rule']}，条款" not in zh or not a["annotations"].get("description_zh"):
            fail(f"the page does not carry the rule's Chinese title: {zh!r}")
    wait_for("the refused reload at the ticket receiver", lambda: any(
        p == "/ticket" and any(a["labels"].get("alertname") == "ShareauditPolicyReloadFailed" for a in json.loads(b)["alerts"])
        for p, b in Receiver.received), 60)
    for path, body in Receiver.received:
        for pattern in PERSONAL:
            m = pattern.search(body)
            if m:
                fail(f"a notification to {path} holds what looks like personal data: {m.group(0)!r}")

    check_inhibition(f"http://127.0.0.1:{am_port}")


def check_inhibition(am):
    """The shipped inhibition, in the real Alertmanager: a critical alert about
    a rule holds back a warning about the same rule, and nothing else; a
    critical alert about the service (no rule label) holds back no warning."""
    def post(alerts):
        req = urllib.request.Request(f"{am}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=5).read()
    post([
        {"labels": {"alertname": "InhibitCheckCritical", "severity": "critical", "rule": "check.a"}},
        {"labels": {"alertname": "InhibitCheckWarning", "severity": "warning", "rule": "check.a"}},
        {"labels": {"alertname": "InhibitCheckOtherRule", "severity": "warning", "rule": "check.b"}},
        {"labels": {"alertname": "InhibitCheckService", "severity": "critical"}},
        {"labels": {"alertname": "InhibitCheckServiceWarning", "severity": "warning"}},
    ])
    want = {"InhibitCheckWarning": True, "InhibitCheckOtherRule": False, "InhibitCheckServiceWarning": False}
    def states():
        got = {}
        for a in json.loads(get(f"{am}/api/v2/alerts") or "[]"):
            name = a["labels"].get("alertname")
            if name in want:
                got[name] = bool(a["status"].get("inhibitedBy"))
        return got
    if not wait_for("the inhibition to settle", lambda: states() == want, 20):
        print(f"  inhibited or not: {states()}, expected {want}")
    else:
        print("inhibition: a critical alert holds back warnings of its rule only; a service-wide one holds back none")


def check_names(where, expr, exported):
    for name in sorted({n for n, _ in SELECTOR.findall(expr)}):
        if name not in exported:
            fail(f"{where}: {name} is not a metric shareaudit exports")


if __name__ == "__main__":
    main()
