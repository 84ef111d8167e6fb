//! The house, drawn from the imports: each module may use only those below
//! it (test code aside), so there is no circle and no arrow up; and the
//! daemon's wing stays readable, one file a stage, none past 600 lines.

use std::path::{Path, PathBuf};

/// Bottom first. A module may import those of a lower rank only.
const LAYERS: &[(&str, u8)] = &[
    ("model", 0),
    ("policy", 1),
    ("detect", 2),
    ("config", 2),
    ("consent", 2),
    ("codec", 3),
    ("audit", 3),
    ("telemetry", 3),
    ("policytest", 4),
    ("report", 4),
    ("kafka", 4),
    ("daemon", 5),
    ("fuzzing", 5),
    ("demo", 6),
];

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its test module (`#[cfg(test)]` to the end)
/// and without test-only files.
fn production_code(path: &Path) -> Option<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(path).unwrap();
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    Some(text[..end].to_owned())
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut arrows_up = Vec::new();
    for (module, r) in LAYERS {
        let root = if src.join(module).is_dir() {
            src.join(module)
        } else {
            src.join(format!("{module}.rs"))
        };
        let mut all = Vec::new();
        if root.is_dir() {
            files(&root, &mut all);
        } else {
            all.push(root);
        }
        for file in all {
            let Some(code) = production_code(&file) else {
                continue;
            };
            for (i, _) in code.match_indices("crate::") {
                let used: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if let Some(theirs) = rank(&used)
                    && used != *module
                    && theirs >= *r
                {
                    arrows_up.push(format!("{} uses {used}", file.display()));
                }
            }
        }
    }
    assert!(
        arrows_up.is_empty(),
        "imports up or sideways: {arrows_up:#?}"
    );
    // Every module of the crate has its place.
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .replace(".rs", "");
        // Test-only modules (`layers`, `testalloc`) and the binary's stand apart.
        if !["lib", "main", "cli", "commands", "layers", "testalloc"].contains(&name.as_str()) {
            assert!(rank(&name).is_some(), "src/{name} has no layer");
        }
    }
}

#[test]
fn the_daemon_wing_is_one_file_a_stage_none_past_600_lines() {
    let mut all = Vec::new();
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon"),
        &mut all,
    );
    for file in all {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 600, "{} has {lines} lines", file.display());
    }
}
