//! The import rule of the request path, checked: every module imports only modules below it in
//! [`LAYERS`], so no arrow points up and no two modules import each other. A new module has to
//! be placed here before it compiles into a passing test run.

use std::{collections::BTreeSet, path::Path};

/// Top-level modules from the top down; a module may import the modules of later rows only
/// (modules sharing a row never import each other).
const LAYERS: &[&[&str]] = &[
    &["gateway"],
    &["api"],
    &["pipeline"],
    &["finish"],
    &["resilience"],
    &["cache", "limits", "decision"],
    &["route"],
    &["server"],
    &["fleet", "auth"],
    &["config"],
    &["catalog"],
    &["provider"],
    &["request", "signals", "telemetry"],
    &["error", "sse", "sync", "trace"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// Every `crate::<module>` a file names, by the file's own top-level module.
fn imports(src: &Path) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let own = relative
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let named: BTreeSet<&str> = text
                .match_indices("crate::")
                .flat_map(|(at, _)| modules_named(&text[at + "crate::".len()..]))
                .collect();
            for module in named {
                found.push((relative.clone(), own.clone(), module.to_owned()));
            }
        }
    }
    found
}

/// The top-level modules named right after a `crate::`: one name, or each first name of a
/// `{a, b::c, ...}` group.
fn modules_named(rest: &str) -> Vec<&str> {
    fn ident(s: &str) -> &str {
        let s = s.trim_start();
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut names = vec![ident(group)];
    let mut depth = 1;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => names.push(ident(&group[at + 1..])),
            _ => {}
        }
    }
    names.retain(|n| !n.is_empty() && *n != "self");
    names
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (file, own, module) in imports(&src) {
        if own == module || ["lib", "main", "architecture"].contains(&own.as_str()) {
            continue;
        }
        match (layer(&own), layer(&module)) {
            (Some(from), Some(to)) if to > from => {}
            (None, _) => violations.push(format!("{file}: module `{own}` has no layer")),
            (_, None) => violations.push(format!("{file}: `crate::{module}` has no layer")),
            _ => violations.push(format!(
                "{file}: `{own}` imports `{module}`, which is not below it"
            )),
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        let line = line.trim_start_matches("pub ");
        if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
            assert!(
                name == "architecture" || layer(name).is_some(),
                "`{name}` is missing from LAYERS"
            );
        }
    }
}
