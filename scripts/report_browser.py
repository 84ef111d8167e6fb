#!/usr/bin/env python3
"""The compliance report as a browser shows it (scripts/report-browser.sh).

    python3 scripts/report_browser.py OUT_DIR EVENTS.jsonl STATE.jsonl
    python3 scripts/report_browser.py OUT_DIR - -    (a report from the topics: no input files)

OUT_DIR holds report.html and summary.json. Chromium (headless) renders the
page three ways: a screenshot (OUT_DIR/report.png), the DOM after layout,
and a network log. Checked:

- the page makes no request: no page-initiated request in chromium's
  network log (a control page with an image and a style sheet elsewhere
  must show two, or the check proves nothing);
- every element marked data-figure in the rendered DOM shows the value at
  that path of summary.json, and there are figures for every input count,
  recipient category, recipient, clause and trend bucket;
- no user id and no data value of the input appears in the rendered page.
"""
import html
import json
import os
import re
import subprocess
import sys
import tempfile

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--disable-default-apps"]


def fail(msg):
    print(f"report_browser: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def page_requests(page, workdir):
    """URLs the page itself asked for (initiator: the page's opaque file origin)."""
    log = os.path.join(workdir, "net.json")
    subprocess.run(CHROMIUM + [f"--log-net-log={log}", "--dump-dom", f"file://{page}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True)
    d = json.load(open(log))
    start = d["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for e in d.get("events", []):
        p = e.get("params", {})
        url = p.get("url", "")
        if e.get("type") == start and url and p.get("initiator") != "not an origin" and not url.startswith("file:"):
            urls.append(url)
    return urls


def at(v, path):
    for k in path.split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    return v


def main():
    out, events, state = sys.argv[1:4]
    page = os.path.abspath(os.path.join(out, "report.html"))
    summary = json.load(open(os.path.join(out, "summary.json")))
    with tempfile.TemporaryDirectory() as work:
        control = os.path.join(work, "control.html")
        with open(control, "w") as f:
            f.write('<html><body><img src="http://127.0.0.1:9/x.png">'
                    '<link rel="stylesheet" href="https://example.invalid/a.css"></body></html>')
        seen = page_requests(control, work)
        if len(seen) < 2:
            fail(f"the network check sees {len(seen)} requests of a page that makes two: it proves nothing")
        made = page_requests(page, work)
        if made:
            fail(f"the report made requests: {made}")
        subprocess.run(CHROMIUM + ["--window-size=1280,5000", f"--screenshot={os.path.join(out, 'report.png')}",
                                   f"file://{page}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120, check=True)
        dom = subprocess.run(CHROMIUM + ["--dump-dom", f"file://{page}"], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    if not os.path.getsize(os.path.join(out, "report.png")) > 10_000:
        fail("the screenshot is empty")

    figure = re.compile(r'data-figure="([^"]+)"(?: data-value="([^"]+)")?>([^<]*)<')
    paths = set()
    for m in figure.finditer(dom):
        path, value, text = m.group(1), m.group(2), html.unescape(m.group(3))
        want = len(summary["rate_windows"]) if path == "rate_windows.length" else at(summary, path)
        if want is None:
            # Not known (a report from the topics): the page says so, never 0.
            if text != "—" or value is not None:
                fail(f"{path}: the page shows {text!r} for a figure that is not known")
        elif value is not None:
            if abs(float(value) - float(want)) > 1e-12:
                fail(f"{path}: the page says {value}, the summary {want}")
        elif str(want) != text:
            fail(f"{path}: the page shows {text!r}, the summary has {want!r}")
        paths.add(path)
    expected = {f"inputs.{k}" for k in summary["inputs"]}
    expected |= {f"recipient_categories.{i}.events" for i in range(len(summary["recipient_categories"]))}
    expected |= {f"recipients.{i}.events" for i in range(min(100, len(summary["recipients"])))}
    expected |= {f"clauses.{i}.violations" for i in range(len(summary["clauses"]))}
    expected |= {f"trend.{i}.events" for i in range(len(summary["trend"]))}
    missing = expected - paths
    if missing:
        fail(f"figures missing from the page: {sorted(missing)[:10]}")

    personal = set()
    for line in open(events) if events != "-" else []:
        e = json.loads(line)
        personal.add(e["subject"]["user_id"])
        personal.update(d["value"] for d in e["data"] if d.get("value") and len(d["value"]) >= 2)
    for line in open(state) if state != "-" else []:
        personal.add(json.loads(line)["user_id"])
    leaked = [p for p in personal if p in dom]
    if leaked:
        fail(f"{len(leaked)} personal values on the page")
    print(f"report_browser: ok: {len(paths)} figures equal to the summary, no request "
          f"(the control page made {len(seen)}), none of {len(personal)} personal values on the page; "
          f"screenshot {os.path.join(out, 'report.png')}")


if __name__ == "__main__":
    main()
