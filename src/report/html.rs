//! The report as one HTML page: inline CSS, inline SVG, no script, no
//! external resource. Every figure is also marked with the path of its
//! value in the summary (`data-figure="inputs.events_judged"`), so a test
//! (or an auditor's tool) can check the page against `--summary-json`.

use super::Summary;
use crate::model::{RecipientCategory, Severity};
use std::fmt::Write;

/// Recipients listed on the page (all are in the summary).
const RECIPIENT_ROWS: usize = 100;

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A figure, marked with its path in the summary.
fn fig(path: &str, value: impl std::fmt::Display) -> String {
    format!(
        "<span class=\"fig\" data-figure=\"{}\">{}</span>",
        esc(path),
        esc(&value.to_string())
    )
}

fn percent(path: &str, share: f64) -> String {
    format!(
        "<span class=\"fig\" data-figure=\"{}\" data-value=\"{share}\">{:.1}%</span>",
        esc(path),
        share * 100.0
    )
}

fn category_zh(c: RecipientCategory) -> &'static str {
    use RecipientCategory as R;
    match c {
        R::PaymentProcessor => "支付机构",
        R::LogisticsCarrier => "物流公司",
        R::Merchant => "商家",
        R::MerchantServiceProvider => "商家服务商",
        R::Affiliate => "关联方",
        R::AuthorizedPartner => "授权合作伙伴",
        R::ThirdPartySdk => "第三方SDK",
        R::IdentityVerifier => "身份验证机构",
        R::GovernmentAuthority => "政府机关",
        R::Guardian => "监护人",
        R::Public => "公开",
        R::Acquirer => "收购方",
        R::Other => "其他",
    }
}

fn severity_zh(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "严重",
        Severity::High => "高",
        Severity::Medium => "中",
        Severity::Low => "低",
    }
}

const STYLE: &str = "body{font-family:'Noto Sans CJK SC','Noto Sans SC','PingFang SC','Microsoft YaHei',sans-serif;margin:2em auto;max-width:72em;color:#1d1d1f;line-height:1.45}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:2px solid #c9302c;padding-bottom:.2em}\
.en{color:#555;font-weight:normal}table{border-collapse:collapse;width:100%;margin:.6em 0;font-size:.92em}\
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.quote{color:#444;font-size:.9em}\
.meta td:first-child{width:16em;color:#555}.ok{color:#2d7d32}.bad{color:#c9302c;font-weight:bold}\
code{font-size:.88em}@media print{body{margin:0;max-width:none}h2{page-break-after:avoid}tr{page-break-inside:avoid}}";

/// The page of a summary.
pub fn html(s: &Summary) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let ts = |t: Option<crate::model::Timestamp>| t.map_or("—".to_owned(), |t| t.to_string());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>个人信息共享合规报告 · Personal information sharing compliance report</title>\
<style>{STYLE}</style></head><body>\n\
<h1>个人信息共享合规报告 <span class=\"en\">Personal information sharing compliance report</span></h1>\n\
<p>快手小店隐私政策第四部分的对外共享、转让、公开披露承诺的核查结果。\
<span class=\"en\">What 快手小店 shared, with whom, against the promises of section 4 of its privacy policy.</span></p>\n"
    );
    // Period and inputs.
    let _ = writeln!(
        h,
        "<table class=\"meta\">\
<tr><td>期间 <span class=\"en\">Period (UTC)</span></td><td><span data-figure=\"period.from\">{}</span> — <span data-figure=\"period.to\">{}</span></td></tr>\
<tr><td>隐私政策规则版本 <span class=\"en\">Policy version</span></td><td><span data-figure=\"policy.version\">{}</span> <code data-figure=\"policy.hash\">{}</code></td></tr>\
<tr><td>shareaudit 版本 <span class=\"en\">shareaudit version</span></td><td data-figure=\"shareaudit_version\">{}</td></tr>\
<tr><td>来源 <span class=\"en\">Source</span></td><td><code data-figure=\"source\">{}</code></td></tr>\
<tr><td>{}</td><td>{}</td></tr>\
<tr><td>存在违规的事件 <span class=\"en\">Events with violations</span></td><td>{}</td></tr>\
<tr><td>无法解析的记录（死信） <span class=\"en\">Records that could not be read (dead letters)</span></td><td>{}</td></tr>\
<tr><td>同意状态 <span class=\"en\">Consent states</span></td><td>{}</td></tr></table>",
        esc(&ts(s.period.from)),
        esc(&ts(s.period.to)),
        esc(&s.policy.version),
        esc(&s.policy.hash),
        esc(&s.shareaudit_version),
        esc(&s.source),
        if s.policies_seen.is_some() {
            "事件主题上在此期间记录并已核查的事件 <span class=\"en\">Events logged on the event topic in the period, judged</span>"
        } else {
            "已核查事件 <span class=\"en\">Events judged</span>"
        },
        fig("inputs.events_judged", s.inputs.events_judged),
        fig(
            "inputs.events_with_violations",
            s.inputs.events_with_violations
        ),
        fig("inputs.invalid_records", s.inputs.invalid_records),
        fig("inputs.consent_states", s.inputs.consent_states),
    );

    if let Some(seen) = &s.policies_seen {
        let _ = write!(
            h,
            "<p>来自守护进程写入的主题：违规取自告警主题，事件取自事件主题并重新解码计数；被例外抑制的违规不在任何主题上，记为 “—”。期间按事件记录的日志时间（即违规的 detected_at）计。\
<span class=\"en\">From what the daemon wrote: the violations from the violations topic, the events from the event topic, decoded again to be counted; what exceptions suppressed is on no topic (shown “—”). The period is by the events' log time (a violation's detected_at).</span> \
重复写入的违规（同一 alert_id）已去重：{} <span class=\"en\">Violations written twice (same alert id), counted once: {}</span>；\
无法解码的事件记录：{} <span class=\"en\">event records that do not decode: {}</span>；\
解码后被拒绝判定的事件记录（死信）：{} <span class=\"en\">event records that decode but are refused (dead letters): {}</span></p>\n\
<p>判定这些违规的政策版本 <span class=\"en\">Policies that judged these violations</span>: {}</p>\n",
            fig("duplicates_dropped", s.duplicates_dropped.unwrap_or(0)),
            s.duplicates_dropped.unwrap_or(0),
            fig(
                "undecoded_event_records",
                s.undecoded_event_records.unwrap_or(0)
            ),
            s.undecoded_event_records.unwrap_or(0),
            fig(
                "refused_event_records",
                s.refused_event_records.unwrap_or(0)
            ),
            s.refused_event_records.unwrap_or(0),
            if seen.is_empty() {
                "—".to_owned()
            } else {
                seen.iter()
                    .enumerate()
                    .map(|(i, p)| {
                        format!(
                            "<span data-figure=\"policies_seen.{i}.version\">{}</span> <code>{}</code> ({})",
                            esc(&p.version),
                            esc(&p.hash),
                            fig(&format!("policies_seen.{i}.violations"), p.violations)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        );
    }

    // Per recipient category.
    h.push_str("<h2>按接收方类别 <span class=\"en\">By recipient category</span></h2>\n<table><tr><th>类别 <span class=\"en\">Category</span></th><th class=\"n\">事件 <span class=\"en\">Events</span></th><th class=\"n\">违规事件 <span class=\"en\">With violations</span></th><th class=\"n\">占比 <span class=\"en\">Share</span></th><th>共享的个人信息类别 <span class=\"en\">Categories of data shared</span></th></tr>\n");
    for (i, c) in s.recipient_categories.iter().enumerate() {
        let p = format!("recipient_categories.{i}");
        let _ = writeln!(
            h,
            "<tr><td>{} <span class=\"en\" data-figure=\"{p}.category\">{}</span></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            category_zh(c.category),
            c.category,
            fig(&format!("{p}.events"), c.events),
            fig(
                &format!("{p}.events_with_violations"),
                c.events_with_violations
            ),
            percent(&format!("{p}.violation_share"), c.violation_share),
            c.data_categories
                .iter()
                .map(|d| format!("<code>{}</code>", esc(d)))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    h.push_str("</table>\n");

    // Per recipient.
    let _ = write!(
        h,
        "<h2>按接收方 <span class=\"en\">By recipient</span></h2>\n<p>按违规事件数排序{}。<span class=\"en\">By events with violations{}.</span></p>\n<table><tr><th>接收方 <span class=\"en\">Recipient</span></th><th>类别 <span class=\"en\">Category</span></th><th class=\"n\">事件 <span class=\"en\">Events</span></th><th class=\"n\">违规事件 <span class=\"en\">With violations</span></th><th class=\"n\">占比 <span class=\"en\">Share</span></th></tr>\n",
        if s.recipients.len() > RECIPIENT_ROWS {
            format!("，列出前 {RECIPIENT_ROWS} 个，共 {} 个", s.recipients.len())
        } else {
            String::new()
        },
        if s.recipients.len() > RECIPIENT_ROWS {
            format!(
                "; the first {RECIPIENT_ROWS} of {} (all are in the summary JSON)",
                s.recipients.len()
            )
        } else {
            String::new()
        },
    );
    for (i, r) in s.recipients.iter().take(RECIPIENT_ROWS).enumerate() {
        let p = format!("recipients.{i}");
        let _ = writeln!(
            h,
            "<tr><td><code data-figure=\"{p}.recipient_id\">{}</code></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&r.recipient_id),
            category_zh(r.category),
            fig(&format!("{p}.events"), r.events),
            fig(
                &format!("{p}.events_with_violations"),
                r.events_with_violations
            ),
            percent(&format!("{p}.violation_share"), r.violation_share),
        );
    }
    h.push_str("</table>\n");

    // Per clause.
    h.push_str("<h2>按政策条款 <span class=\"en\">By clause of the policy</span></h2>\n<table><tr><th>条款 <span class=\"en\">Clause</span></th><th>承诺 <span class=\"en\">The promise</span></th><th class=\"n\">违规 <span class=\"en\">Violations</span></th><th>严重程度 <span class=\"en\">Severities</span></th><th>示例 <span class=\"en\">Examples (alert id, event id, recipient)</span></th></tr>\n");
    for (i, c) in s.clauses.iter().enumerate() {
        let p = format!("clauses.{i}");
        let sev = c
            .by_severity
            .iter()
            .rev()
            .map(|(k, n)| {
                format!(
                    "{} {k} {}",
                    severity_zh(*k),
                    fig(&format!("{p}.by_severity.{k}"), n)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let examples = c
            .examples
            .iter()
            .map(|e| {
                format!(
                    "<code>{}</code> <code>{}</code> <code>{}</code>",
                    esc(&e.alert_id),
                    esc(&e.event_id),
                    esc(&e.recipient_id)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let class = if c.violations > 0 { "bad" } else { "ok" };
        let _ = writeln!(
            h,
            "<tr><td>{}<br><code data-figure=\"{p}.rule_id\">{}</code>{}</td><td><b>{}</b><br><span class=\"quote\">“{}”</span><br><span class=\"en\">{}</span></td><td class=\"n {class}\">{}</td><td>{sev}</td><td>{examples}</td></tr>",
            esc(&c.clause),
            c.rule_id,
            if c.mode == crate::model::Mode::Shadow {
                " <span class=\"en\">(试运行 shadow)</span>"
            } else {
                ""
            },
            esc(&c.title_zh),
            esc(&c.quote),
            esc(&c.title),
            fig(&format!("{p}.violations"), c.violations),
        );
    }
    h.push_str("</table>\n");

    // Trend.
    let _ = write!(
        h,
        "<h2>趋势 <span class=\"en\">Trend</span></h2>\n<p>每{}的事件与违规事件。<span class=\"en\">Events and events with violations per {}.</span></p>\n",
        if s.period.trend_bucket == "day" {
            "天"
        } else {
            "小时"
        },
        s.period.trend_bucket
    );
    h.push_str(&trend_svg(s));
    h.push_str("<table><tr><th>开始 <span class=\"en\">Start (UTC)</span></th><th class=\"n\">事件 <span class=\"en\">Events</span></th><th class=\"n\">违规事件 <span class=\"en\">With violations</span></th></tr>\n");
    for (i, t) in s.trend.iter().enumerate() {
        let p = format!("trend.{i}");
        let _ = writeln!(
            h,
            "<tr><td data-figure=\"{p}.start\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            t.start,
            fig(&format!("{p}.events"), t.events),
            fig(
                &format!("{p}.events_with_violations"),
                t.events_with_violations
            ),
        );
    }
    h.push_str("</table>\n");

    // Rate windows.
    let _ = write!(
        h,
        "<h2>超出速率限制的窗口 <span class=\"en\">Recipient-rate windows that fired</span> <code>volume.recipient_rate</code></h2>\n<p>{} 个窗口{}。<span class=\"en\">{} windows{}.</span></p>\n",
        fig("rate_windows.length", s.rate_windows.len()),
        if s.rate_windows_not_listed > 0 {
            format!("，另有 {} 个未列出", s.rate_windows_not_listed)
        } else {
            String::new()
        },
        s.rate_windows.len(),
        if s.rate_windows_not_listed > 0 {
            format!(", and {} more not listed", s.rate_windows_not_listed)
        } else {
            String::new()
        },
    );
    if !s.rate_windows.is_empty() {
        h.push_str("<table><tr><th>接收方 <span class=\"en\">Recipient</span></th><th>越限事件时间 <span class=\"en\">Crossing event's time (UTC)</span></th><th>告警 <span class=\"en\">Alert id</span></th></tr>\n");
        for w in &s.rate_windows {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&w.recipient_id),
                w.occurred_at,
                esc(&w.alert_id)
            );
        }
        h.push_str("</table>\n");
    }

    // Suppressed.
    h.push_str("<h2>被抑制与试运行 <span class=\"en\">Suppressed and shadow</span></h2>\n");
    h.push_str("<p>试运行规则的违规（计数，不告警）：<span class=\"en\">Violations of rules in shadow mode (counted, not alerted):</span> ");
    if s.shadow.is_empty() {
        h.push_str("无 <span class=\"en\">none</span>");
    }
    for (rule, n) in &s.shadow {
        let _ = write!(
            h,
            "<code>{rule}</code> {} ",
            fig(&format!("shadow.{rule}"), n)
        );
    }
    h.push_str("</p>\n<p>被例外抑制的违规：<span class=\"en\">Violations suppressed by exceptions in force:</span> ");
    match &s.suppressed {
        None => h.push_str("告警主题上没有记录（见指标 <code>shareaudit_suppressed_violations_total</code>） <span class=\"en\">not on the violations topic (see the metric <code>shareaudit_suppressed_violations_total</code>)</span>"),
        Some(m) if m.is_empty() => h.push_str("无 <span class=\"en\">none</span>"),
        Some(_) => {}
    }
    for (rule, n) in s.suppressed.iter().flatten() {
        let _ = write!(
            h,
            "<code>{rule}</code> {} ",
            fig(&format!("suppressed.{rule}"), n)
        );
    }
    h.push_str("</p>\n");
    if !s.exceptions.is_empty() {
        h.push_str("<table><tr><th>规则 <span class=\"en\">Rule</span></th><th>接收方 <span class=\"en\">Recipient</span></th><th>负责人 <span class=\"en\">Owner</span></th><th>理由 <span class=\"en\">Reason</span></th><th>到期 <span class=\"en\">Expires</span></th><th>模式 <span class=\"en\">Mode</span></th></tr>\n");
        for x in &s.exceptions {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                x.rule_id,
                x.recipient_id.as_deref().map_or("—".to_owned(), esc),
                esc(&x.owner),
                esc(&x.reason),
                x.expires,
                x.mode
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<p class=\"en\">No user id, data value or subject reference appears in this report.</p>\n</body></html>\n");
    h
}

/// Bars of events (grey) and events with violations (red) per bucket.
fn trend_svg(s: &Summary) -> String {
    let n = s.trend.len().max(1);
    let (w, hgt) = (900.0_f64, 160.0_f64);
    let max = s.trend.iter().map(|t| t.events).max().unwrap_or(1).max(1) as f64;
    let bw = w / n as f64;
    let mut svg = format!(
        "<svg role=\"img\" viewBox=\"0 0 {w} {}\" width=\"100%\" aria-label=\"趋势 trend\">",
        hgt + 20.0
    );
    for (i, t) in s.trend.iter().enumerate() {
        let x = i as f64 * bw;
        let he = t.events as f64 / max * hgt;
        let hv = t.events_with_violations as f64 / max * hgt;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{he:.1}\" fill=\"#c8c8c8\"><title>{} {}</title></rect>\
<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{hv:.1}\" fill=\"#c9302c\"><title>{}</title></rect>",
            hgt - he,
            (bw * 0.8).max(0.5),
            t.start,
            t.events,
            hgt - hv,
            (bw * 0.8).max(0.5),
            t.events_with_violations
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"0\" y1=\"{hgt}\" x2=\"{w}\" y2=\"{hgt}\" stroke=\"#888\"/></svg>"
    );
    svg
}
