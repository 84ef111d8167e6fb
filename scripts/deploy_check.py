#!/usr/bin/env python3
"""The wiring of the shipped deployment: what schemas cannot see.

Usage: deploy_check.py RENDERED_KUSTOMIZATION.yaml docker-compose.yml

Kubernetes: selectors meet labels, ports and probes name real ports, every
file the container's arguments name is a key of a mounted ConfigMap or
Secret, the grace period outlasts the drain, the pod runs non-root on a
read-only root filesystem, the policy ConfigMap is hot-reloadable.
Compose: every mounted file exists, Prometheus reads the rules it is given
and reaches Alertmanager, Grafana's provisioning finds the dashboard.
Exits 1 naming every problem.
"""
import os
import sys

import yaml

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def by_kind(docs, kind):
    return [d for d in docs if d and d.get("kind") == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0] if found else {}


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def kubernetes(path):
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    dep = one(docs, "Deployment")
    svc = one(docs, "Service")
    mon = one(docs, "ServiceMonitor")
    pdb = one(docs, "PodDisruptionBudget")
    net = one(docs, "NetworkPolicy")
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (c,) = spec["containers"]

    check(matches(dep["spec"]["selector"]["matchLabels"], labels), "Deployment selector does not match its pods")
    check(matches(svc["spec"]["selector"], labels), "Service selector does not match the pods")
    check(matches(pdb["spec"]["selector"]["matchLabels"], labels), "PodDisruptionBudget selector does not match the pods")
    check(matches(net["spec"]["podSelector"]["matchLabels"], labels), "NetworkPolicy does not select the pods")
    check(matches(mon["spec"]["selector"]["matchLabels"], svc["metadata"].get("labels", {})), "ServiceMonitor does not select the Service")
    check(dep["spec"]["replicas"] >= 2, "fewer than two replicas")

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for ep in mon["spec"]["endpoints"]:
        check(ep["port"] in svc_ports, f"ServiceMonitor endpoint port {ep['port']!r} is not a Service port")
        check(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor does not scrape /metrics")
    for name, p in svc_ports.items():
        check(p["targetPort"] in ports or p["targetPort"] in ports.values(), f"Service port {name} targets no container port")
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path, f"{probe} does not ask {path}")
        check(get.get("port") in ports, f"{probe} port {get.get('port')!r} is not a container port")
    listen = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--listen=")]
    check(listen and int(listen[0].rsplit(":", 1)[1]) in ports.values(), "--listen is not the metrics port")
    ingress_ports = {p["port"] for r in net["spec"].get("ingress", []) for p in r.get("ports", [])}
    check(set(ports.values()) <= ingress_ports, "NetworkPolicy does not let Prometheus reach the metrics port")

    # Every file an argument names is a key of the ConfigMap or Secret mounted at its directory.
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs if d}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {}
    for m in c.get("volumeMounts", []):
        check(m["name"] in volumes, f"volumeMount {m['name']} has no volume")
        check("subPath" not in m, f"volumeMount {m['name']} uses subPath: updates would never reach the pod")
        check(m.get("readOnly") is True, f"volumeMount {m['name']} is writable")
        v = volumes.get(m["name"], {})
        if "configMap" in v:
            obj = objects.get(("ConfigMap", v["configMap"]["name"]))
        elif "secret" in v:
            obj = objects.get(("Secret", v["secret"]["secretName"]))
        else:
            obj = None
        check(obj is not None, f"volume {m['name']} refers to no rendered ConfigMap or Secret")
        if obj:
            mounts[m["mountPath"].rstrip("/")] = obj
    files = []
    for a in c["args"]:
        for flag in ("--config=", "--policy=", "--hmac-key-file="):
            if a.startswith(flag):
                files += a[len(flag):].split(",")
    check(len(files) == 4, f"expected settings, credentials, policy and key files in the arguments, found {files}")
    for f in files:
        d, key = os.path.split(f)
        obj = mounts.get(d)
        check(obj is not None and key in {**obj.get("data", {}), **obj.get("stringData", {})},
              f"{f}: no mounted ConfigMap or Secret has the key {key}")

    policy = objects.get(("ConfigMap", "shareaudit-policy"))
    check(policy is not None, "the policy ConfigMap must keep its name (no hash suffix): it is reloaded in place")
    settings = next((yaml.safe_load(o["data"]["settings.yaml"]) for (k, n), o in objects.items()
                     if k == "ConfigMap" and n.startswith("shareaudit-settings")), {})
    drain_s = settings.get("drain_timeout_ms", 8000) / 1000
    check(spec.get("terminationGracePeriodSeconds", 30) > drain_s + 5,
          f"terminationGracePeriodSeconds must outlast the drain ({drain_s} s) and the group leave")

    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), "pod may run as root")
    check(csc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
    check(csc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities not all dropped")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        check({"cpu", "memory"} <= set(res.get(kind, {})), f"resources.{kind} must set cpu and memory")


def compose(path):
    base = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc["services"]
    for name, s in services.items():
        for v in s.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("."):
                check(os.path.exists(os.path.join(base, src)), f"compose service {name} mounts {src}, which does not exist")
        build = s.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            check(os.path.exists(os.path.join(base, ctx, "Dockerfile")), f"compose service {name} builds {ctx} without a Dockerfile")
        for dep in s.get("depends_on", {}):
            check(dep in services, f"compose service {name} depends on unknown {dep}")
    check(services.get("shareaudit", {}).get("deploy", {}).get("replicas", 1) >= 2, "compose runs fewer than two shareaudit replicas")
    for needed in ("kafka", "schema-registry", "shareaudit", "generator", "prometheus", "alertmanager", "grafana"):
        check(needed in services, f"compose has no {needed} service")

    def mounted(service, target):
        for v in services[service].get("volumes", []):
            parts = v.split(":")
            if parts[1] == target or target.startswith(parts[1].rstrip("/") + "/"):
                return os.path.join(base, parts[0], os.path.relpath(target, parts[1])) if target != parts[1] else os.path.join(base, parts[0])
        return None

    prom_cfg = mounted("prometheus", "/etc/prometheus/prometheus.yml")
    with open(prom_cfg) as f:
        prom = yaml.safe_load(f)
    for rf in prom.get("rule_files", []):
        check(mounted("prometheus", rf) is not None, f"Prometheus reads {rf}, which compose does not mount")
    for am in prom["alerting"]["alertmanagers"]:
        for t in am["static_configs"][0]["targets"]:
            check(t.split(":")[0] in services, f"Prometheus sends alerts to {t}, which is not a compose service")
    names = [n for j in prom["scrape_configs"] for sd in j.get("dns_sd_configs", []) for n in sd["names"]]
    check("shareaudit" in names, "Prometheus does not discover the shareaudit replicas")

    prov = mounted("grafana", "/etc/grafana/provisioning")
    with open(os.path.join(prov, "dashboards", "shareaudit.yml")) as f:
        dash_path = yaml.safe_load(f)["providers"][0]["options"]["path"]
    found = mounted("grafana", dash_path)
    check(found is not None and os.path.exists(os.path.join(found, "shareaudit.json")),
          f"Grafana loads dashboards from {dash_path}, where compose mounts no shareaudit.json")


kubernetes(sys.argv[1])
compose(sys.argv[2])
for p in problems:
    print(f"deploy-check: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
