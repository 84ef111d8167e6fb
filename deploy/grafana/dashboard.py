#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/shareaudit.json: the dashboard as code.

Edit the panels here, then run `python3 deploy/grafana/dashboard.py`;
scripts/deploy-check.sh fails when the JSON and this file disagree, and
scripts/observability_e2e.py runs every query against a real Prometheus.
"""
import json
import os
import sys
SEL='job=~"$job", namespace=~"$namespace"'
DS={"type":"prometheus","uid":"${datasource}"}
panels=[]
pid=[0]
def panel(title, typ, targets, x, y, w, h, desc, unit=None, extra=None, fieldcfg=None):
    pid[0]+=1
    p={"id":pid[0],"title":title,"type":typ,"datasource":DS,"description":desc,
       "gridPos":{"x":x,"y":y,"w":w,"h":h},
       "targets":[dict({"datasource":DS,"refId":chr(65+i)},**t) for i,t in enumerate(targets)],
       "fieldConfig":{"defaults":fieldcfg or {},"overrides":[]},"options":{}}
    if unit: p["fieldConfig"]["defaults"]["unit"]=unit
    if extra: p.update(extra)
    panels.append(p)
def row(title,y):
    pid[0]+=1
    panels.append({"id":pid[0],"type":"row","title":title,"collapsed":False,"gridPos":{"x":0,"y":y,"w":24,"h":1},"panels":[]})
def ts(expr, legend, **kw):
    d={"expr":expr,"legendFormat":legend,"range":True}; d.update(kw); return d
def inst(expr, legend="", fmt="time_series"):
    return {"expr":expr,"legendFormat":legend,"instant":True,"range":False,"format":fmt}
stat_opts={"options":{"reduceOptions":{"calcs":["lastNotNull"],"fields":"","values":False},"colorMode":"background","graphMode":"area","textMode":"value_and_name"}}
def thresholds(*steps):
    return {"mode":"absolute","steps":[{"color":c,"value":v} for v,c in steps]}
VSEL=SEL+', severity=~"$severity", mode="enforce"'
row("Now",0)
panel("Violations / min","stat",[ts(f'sum(rate(shareaudit_violations_total{{{VSEL}}}[$__rate_interval])) * 60',"violations/min")],0,1,4,5,
      "Enforced violations per minute, all rules (severity filter applies).","short",stat_opts,{"thresholds":thresholds((None,"green"),(0.001,"orange"))})
panel("Critical violations (range)","stat",[inst(f'sum(increase(shareaudit_violations_total{{{SEL}, severity="critical", mode="enforce"}}[$__range])) or vector(0)',"critical")],4,1,4,5,
      "Critical violations in the dashboard's time range. Anything above 0 has paged on-call (ShareauditCriticalViolation).","short",stat_opts,{"thresholds":thresholds((None,"green"),(1,"red"))})
panel("Events audited / s","stat",[ts(f'sum(rate(shareaudit_events_total{{{SEL}}}[$__rate_interval]))',"events/s")],8,1,4,5,
      "Sharing events judged per second, all replicas.","ops",stat_opts,{"thresholds":thresholds((None,"blue"))})
panel("Replicas up","stat",[inst(f'sum(up{{{SEL}}})',"scraped"),inst(f'sum(shareaudit_ready{{{SEL}}})',"ready")],12,1,4,5,
      "Replicas Prometheus reaches, and replicas ready (consent table loaded, pipeline running). 0 pages on-call (ShareauditNoReplicaUp).","short",stat_opts,{"thresholds":thresholds((None,"red"),(1,"green"))})
panel("Consent table users","stat",[inst(f'max(shareaudit_consent_table_users{{{SEL}}})',"users")],16,1,4,5,
      "Users in the consent table (each replica holds the whole table; the largest is shown).","short",stat_opts,{"thresholds":thresholds((None,"blue"))})
panel("Policy in force","table",[inst(f'max by (version, hash) (shareaudit_policy_info{{{SEL}}})',"","table")],20,1,4,5,
      "The policy version and SHA-256 each replica runs. More than one row: replicas disagree (a reload is in progress or failed on some).",None,
      {"transformations":[{"id":"organize","options":{"excludeByName":{"Time":True,"Value":True}}}]})
row("Violations",6)
panel("Violations per minute by severity","timeseries",[ts(f'sum by (severity) (rate(shareaudit_violations_total{{{VSEL}}}[$__rate_interval])) * 60',"{{severity}}")],0,7,12,8,
      "Enforced violations per minute, stacked by severity.","short",None,{"custom":{"stacking":{"mode":"normal"},"fillOpacity":30}})
panel("Shadow-mode violations per minute by rule","timeseries",[ts(f'sum by (rule) (rate(shareaudit_violations_total{{{SEL}, mode="shadow"}}[$__rate_interval])) * 60',"{{rule}}")],12,7,12,8,
      "Rules in shadow mode: what they would alert on if enforced. Use it before switching a rule to enforce.","short")
panel("Top rules","table",[inst(f'topk(10, sum by (rule, clause, severity) (increase(shareaudit_violations_total{{{VSEL}}}[$__range])))',"","table")],0,15,12,9,
      "The ten rules with most violations in the time range, with the policy clause each one enforces. `shareaudit policy explain RULE` quotes the clause.",None,
      {"transformations":[{"id":"organize","options":{"excludeByName":{"Time":True},"renameByName":{"Value":"violations"}}}],
       "options":{"sortBy":[{"displayName":"violations","desc":True}]}})
panel("Top recipients","table",[inst(f'topk(10, sum by (recipient, recipient_category) (increase(shareaudit_violations_total{{{VSEL}}}[$__range])))',"","table")],12,15,12,9,
      "The ten recipients with most violations in the time range (registry id; `unregistered` for parties not in the policy's registry).",None,
      {"transformations":[{"id":"organize","options":{"excludeByName":{"Time":True},"renameByName":{"Value":"violations"}}}],
       "options":{"sortBy":[{"displayName":"violations","desc":True}]}})
panel("Violations by rule (clause)","timeseries",[ts(f'sum by (rule, clause) (rate(shareaudit_violations_total{{{VSEL}}}[$__rate_interval])) * 60',"{{rule}} ({{clause}})")],0,24,12,8,
      "Per rule, per minute; the legend cites the clause.","short")
panel("Suppressed by exceptions","timeseries",[ts(f'sum by (rule) (rate(shareaudit_suppressed_violations_total{{{SEL}}}[$__rate_interval])) * 60',"{{rule}}")],12,24,12,8,
      "Violations an exception in the policy suppressed, per minute. Exceptions expire; watch for ones that suppress a lot.","short")
row("Pipeline",32)
panel("Events audited per second by outcome","timeseries",[ts(f'sum by (outcome) (rate(shareaudit_events_total{{{SEL}}}[$__rate_interval]))',"{{outcome}}")],0,33,12,8,
      "Judged events per second: clean, or with at least one violation.","ops",None,{"custom":{"stacking":{"mode":"normal"},"fillOpacity":20}})
panel("Dead letters by reason","timeseries",[ts(f'sum by (reason) (increase(shareaudit_dead_letters_total{{{SEL}}}[$__rate_interval]))',"{{reason}}")],12,33,12,8,
      "Records that could not be decoded or validated, sent to the dead-letter topic with their provenance headers. They were not audited.","short")
panel("Consumer lag per partition","timeseries",[ts(f'max by (topic, partition) (shareaudit_consumer_lag_messages{{{SEL}}})',"{{topic}} {{partition}}")],0,41,12,8,
      "Messages between the committed watermark and the partition's end, for the event topic and the internal recipient-rate topic. Growing lag means violations are found late.","short")
panel("Event-to-alert latency","timeseries",[
      ts(f'histogram_quantile(0.5, sum by (le) (rate(shareaudit_event_to_alert_seconds_bucket{{{SEL}}}[$__rate_interval])))',"p50"),
      ts(f'histogram_quantile(0.9, sum by (le) (rate(shareaudit_event_to_alert_seconds_bucket{{{SEL}}}[$__rate_interval])))',"p90"),
      ts(f'histogram_quantile(0.99, sum by (le) (rate(shareaudit_event_to_alert_seconds_bucket{{{SEL}}}[$__rate_interval])))',"p99")],12,41,12,8,
      "From an event's occurred_at to the broker acknowledging its violation.","s")
panel("Audit time per event","timeseries",[
      ts(f'histogram_quantile(0.99, sum by (le) (rate(shareaudit_event_audit_seconds_bucket{{{SEL}}}[$__rate_interval])))',"p99"),
      ts(f'sum(rate(shareaudit_event_audit_seconds_sum{{{SEL}}}[$__rate_interval])) / sum(rate(shareaudit_event_audit_seconds_count{{{SEL}}}[$__rate_interval]))',"mean")],0,49,8,8,
      "Time to decode and judge one event.","s")
panel("Kafka errors, delivery failures and in-flight records","timeseries",[
      ts(f'sum(rate(shareaudit_alert_delivery_failures_total{{{SEL}}}[$__rate_interval]))',"delivery failures/s"),
      ts(f'sum by (client) (rate(shareaudit_kafka_errors_total{{{SEL}}}[$__rate_interval]))',"kafka errors/s {{client}}"),
      ts(f'sum(shareaudit_in_flight_records{{{SEL}}})',"in flight")],8,49,8,8,
      "Client errors librdkafka reports (brokers down or unreachable, authentication: ShareauditKafkaUnreachable), deliveries the broker did not acknowledge (each is retried; commits hold meanwhile), and records read but not yet fully acknowledged.","short")
panel("Policy reloads","timeseries",[ts(f'sum by (result) (increase(shareaudit_policy_reloads_total{{{SEL}}}[$__rate_interval]))',"{{result}}")],16,49,8,8,
      "Policy reloads by result. `error`: a new policy was refused and the previous one stays (ShareauditPolicyReloadFailed).","short")
panel("Partitions per replica","timeseries",[ts(f'sum by (instance, topic) (shareaudit_assigned_partitions{{{SEL}}})',"{{instance}} {{topic}}")],0,57,8,8,
      "Partitions each replica owns, of the event topic and of the recipient-rate topic; they move on rebalances.","short")
panel("Consent: records read, events waiting","timeseries",[
      ts(f'sum by (outcome) (rate(shareaudit_consent_records_total{{{SEL}}}[$__rate_interval]))',"read {{outcome}}/s"),
      ts(f'sum(shareaudit_consent_held_records{{{SEL}}})',"held: reader behind"),
      ts(f'sum(shareaudit_consent_confirming_records{{{SEL}}})',"confirming: next probe"),
      ts(f'sum(rate(shareaudit_consent_stale_total{{{SEL}}}[$__rate_interval]))',"judged stale/s")],8,57,8,8,
      "Consent-state records read from the compacted consent topic, by outcome; events waiting for the consent reader: held while it is behind them (consent lag, 0 in the steady state), confirming while it is current and the next end probe (every 5 ms) is awaited; events judged with a view behind them after consent_max_wait_ms.","short")
panel("Recipient-rate stage","timeseries",[
      ts(f'sum by (outcome) (rate(shareaudit_rate_observations_total{{{SEL}}}[$__rate_interval]))',"{{outcome}}/s"),
      ts(f'sum(shareaudit_rate_pending_observations{{{SEL}}})',"held")],16,57,8,8,
      "The cluster-wide volume.recipient_rate stage: candidates counted in event-time order, late or duplicate ones, and those held until every event partition has come past them. Held growing without end: an event partition is not reporting (a replica is stuck).","short")

dash={
 "uid":"shareaudit","title":"shareaudit: privacy-policy sharing audit","tags":["shareaudit","privacy","kafka"],
 "timezone":"browser","schemaVersion":39,"version":1,"editable":True,"refresh":"30s","graphTooltip":1,
 "time":{"from":"now-1h","to":"now"},
 "description":"Violations of the privacy policy's section 4 sharing promises found by shareaudit, and the health of the audit pipeline. Runbook: docs/runbook.md.",
 "links":[],
 "annotations":{"list":[{"builtIn":1,"datasource":{"type":"grafana","uid":"-- Grafana --"},"enable":True,"hide":True,"iconColor":"rgba(0, 211, 255, 1)","name":"Annotations & Alerts","type":"dashboard"}]},
 "templating":{"list":[
   {"name":"datasource","label":"Data source","type":"datasource","query":"prometheus","current":{},"hide":0,"refresh":1,"regex":"","options":[]},
   {"name":"namespace","label":"Namespace","type":"query","datasource":DS,"query":{"query":"label_values(shareaudit_ready, namespace)","refId":"namespace"},"definition":"label_values(shareaudit_ready, namespace)","includeAll":True,"allValue":".*","multi":True,"current":{"text":"All","value":"$__all"},"refresh":2,"sort":1,"hide":0,"options":[],"regex":""},
   {"name":"job","label":"Job","type":"query","datasource":DS,"query":{"query":"label_values(shareaudit_ready{namespace=~\"$namespace\"}, job)","refId":"job"},"definition":"label_values(shareaudit_ready{namespace=~\"$namespace\"}, job)","includeAll":True,"allValue":".*","multi":True,"current":{"text":"All","value":"$__all"},"refresh":2,"sort":1,"hide":0,"options":[],"regex":""},
   {"name":"severity","label":"Severity","type":"custom","query":"critical,high,medium,low","includeAll":True,"allValue":".*","multi":True,"current":{"text":"All","value":"$__all"},"hide":0,
    "options":[{"text":"All","value":"$__all","selected":True}]+[{"text":s,"value":s,"selected":False} for s in ["critical","high","medium","low"]]},
 ]},
 "panels":panels,
}
open(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'dashboards', 'shareaudit.json'), 'w').write(json.dumps(dash,indent=2,ensure_ascii=False)+"\n")
