//! `shareaudit policy check | test | explain`.

use super::{FOUND, INPUT_ERROR, OK};
use anyhow::{Context, Result};
use shareaudit::model::{RuleId, Timestamp};
use shareaudit::policy::format_finding;
use shareaudit::policytest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn check(file: Option<&Path>) -> Result<i32> {
    match super::load_policy(file, Timestamp::now()) {
        Ok((loaded, _, name)) => {
            for w in &loaded.warnings {
                println!("{}", format_finding(&name, w));
            }
            let p = &loaded.policy;
            println!(
                "{name}: ok: version {} ({}), {} rules enabled, {} categories, {} registry entries, {} exceptions, {} warnings",
                p.version.version,
                p.version.hash,
                RuleId::ALL.iter().filter(|r| p.rule(**r).is_some()).count(),
                p.taxonomy.len(),
                p.registry.len(),
                p.exceptions.len(),
                loaded.warnings.len()
            );
            Ok(OK)
        }
        Err(e) => {
            print!("{e}");
            Ok(FOUND)
        }
    }
}

fn case_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read test directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

pub fn test(dir: &Path, policy: Option<&Path>, verbose: bool, coverage: bool) -> Result<i32> {
    let (loaded, text, name) = match super::load_policy(policy, Timestamp::now()) {
        Ok(x) => x,
        Err(e) => {
            eprint!("{e}");
            return Ok(INPUT_ERROR);
        }
    };
    let base = Arc::new(loaded.policy);
    let mut cases = Vec::new();
    for f in case_files(dir)? {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        match policytest::parse(&f.display().to_string(), &text) {
            Ok(c) => cases.extend(c),
            Err(e) => {
                eprintln!("{e}");
                return Ok(INPUT_ERROR);
            }
        }
    }
    if cases.is_empty() {
        eprintln!("no test cases in {}", dir.display());
        return Ok(INPUT_ERROR);
    }
    let (mut passed, mut failed) = (0, 0);
    for case in &cases {
        let outcome = policytest::run(case, &text, &base);
        match &outcome.failure {
            None => {
                passed += 1;
                if verbose {
                    println!("PASS {}: {} [{}]", case.file, case.name, case.rule);
                }
            }
            Some(why) => {
                failed += 1;
                println!(
                    "FAIL {}: {} [{}]\n     {why}",
                    case.file, case.name, case.rule
                );
            }
        }
    }
    let (no_violating, no_compliant) = policytest::coverage(&cases);
    if coverage {
        for r in &no_violating {
            println!("coverage: no violating case for {r}");
        }
        for r in &no_compliant {
            println!("coverage: no compliant case for {r}");
        }
    }
    println!("policy {name}");
    println!("{passed} passed, {failed} failed");
    let gaps = !no_violating.is_empty() || !no_compliant.is_empty();
    Ok(if failed > 0 || (coverage && gaps) {
        FOUND
    } else {
        OK
    })
}

pub fn explain(rule: &str, policy: Option<&Path>) -> Result<i32> {
    let (loaded, text, name) = match super::load_policy(policy, Timestamp::now()) {
        Ok(x) => x,
        Err(e) => {
            eprint!("{e}");
            return Ok(INPUT_ERROR);
        }
    };
    let p = &loaded.policy;
    if rule == "all" {
        for id in RuleId::ALL {
            if let Some(Some(m)) = p.rules.get(id.index()) {
                println!(
                    "{:<40} {:<9} {:<24} {}",
                    id.as_str(),
                    m.severity.as_str(),
                    m.clause,
                    m.title
                );
            }
        }
        return Ok(OK);
    }
    let id: RuleId = match rule.parse() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("{e}");
            return Ok(INPUT_ERROR);
        }
    };
    let Some(Some(m)) = p.rules.get(id.index()) else {
        eprintln!("rule {id} is not configured in {name}");
        return Ok(FOUND);
    };
    println!("{id}: {}", m.title);
    println!("  标题      {}", m.title_zh);
    println!(
        "  clause    {} of {} ({})",
        m.clause, p.document_title, p.document_dated
    );
    println!("  quote     「{}」", m.quote);
    println!(
        "  severity  {}{}; mode {}; {}",
        m.severity,
        if m.raise {
            ", one level up with sensitive data or bulk volume"
        } else {
            ""
        },
        m.mode,
        if m.enabled { "enabled" } else { "disabled" }
    );
    if let Some(ex) = &m.example {
        println!("  example   {ex}");
    }
    // The rule's parameters as the operator wrote them.
    let doc: serde_norway::Value = serde_norway::from_str(&text)?;
    if let Some(params) = doc
        .get("rules")
        .and_then(|r| r.get(id.as_str()))
        .and_then(|r| r.get("params"))
    {
        println!("  params");
        for line in serde_norway::to_string(params)?.lines() {
            println!("    {line}");
        }
    }
    println!(
        "  policy    {name}, version {} ({})",
        p.version.version, p.version.hash
    );
    Ok(OK)
}
