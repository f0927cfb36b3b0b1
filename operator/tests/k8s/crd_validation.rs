//! The CRDs' schema and CEL rules, enforced by the real API server: every file under
//! `tests/crd-validation/valid/` is accepted and every file under `invalid/` is rejected with the
//! message its `# expect:` line names.

use std::path::{Path, PathBuf};

use crate::support::{control_plane, kubectl};

fn table(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/crd-validation")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn dry_run(namespace: &str, file: &Path) -> (bool, String) {
    let (ok, stdout, stderr) = kubectl(
        control_plane(),
        &[
            "apply",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            &file.display().to_string(),
        ],
    );
    (ok, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_objects_are_accepted() {
    let namespace = control_plane().namespace("crd-valid").await;
    let files = table("valid");
    assert!(files.len() >= 5, "valid table: {files:?}");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let (ok, output) = dry_run(&namespace, file);
            (!ok).then(|| format!("{}: {output}", file.display()))
        })
        .collect();
    assert!(failures.is_empty(), "rejected:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_objects_are_rejected_with_their_message() {
    let namespace = control_plane().namespace("crd-invalid").await;
    let files = table("invalid");
    assert!(files.len() >= 10, "invalid table: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` first line", file.display()));
        let (ok, output) = dry_run(&namespace, file);
        if ok {
            failures.push(format!("{}: accepted", file.display()));
        } else if !output.contains(expect) {
            failures.push(format!(
                "{}: expected {expect:?} in {output}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
